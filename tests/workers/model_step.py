"""Worker: one forward/backward of a GPT at TP = world size; rank 0 saves loss, grad norm, embedding grad."""


import torch
from tp_grads import gather_vocab_rows, model_grad_norm

from roots_scale.config import ModelConfig
from roots_scale.distributed import destroy_distributed, discover_launch_env, init_distributed
from roots_scale.models.gpt import GPT

STYLES = {
    "gpt2": ModelConfig(num_layers=2, hidden_size=64, num_attention_heads=4, seq_length=16),
    "llama": ModelConfig(num_layers=2, hidden_size=64, num_attention_heads=4, num_kv_heads=2, seq_length=16,
                         position_embedding="rope", normalization="rmsnorm", activation="swiglu",
                         bias=False, tie_embeddings=False),
}


def main(style: str, out: str) -> None:
    launch = discover_launch_env()
    init_distributed(launch, tensor_parallel=launch.world_size)
    torch.manual_seed(1234)
    model = GPT(STYLES[style], vocab_size=256, tensor_parallel_size=launch.world_size)
    tokens = torch.randint(0, 256, (2, 17), generator=torch.Generator().manual_seed(7))
    loss = model(tokens[:, :-1], tokens[:, 1:])
    loss.backward()
    norm, embedding_grad = model_grad_norm(model), gather_vocab_rows(model.embedding.weight.grad)
    if launch.rank == 0:
        torch.save({"loss": loss.detach(), "grad_norm": norm, "embedding_grad": embedding_grad}, out)
    destroy_distributed()

