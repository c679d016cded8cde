"""Worker: one forward/backward of a GPT at TP = world size; rank 0 saves loss, grad norm, embedding grad."""

import sys

import torch
import torch.distributed as dist
from megatron.core import parallel_state

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
    squares = torch.zeros(())
    replicated = torch.zeros(())
    for param in model.parameters():
        if getattr(param, "tensor_model_parallel", False):
            squares += param.grad.float().pow(2).sum()
        else:
            replicated += param.grad.float().pow(2).sum()
    tp_group = parallel_state.get_tensor_model_parallel_group()
    shards = [torch.empty_like(model.embedding.weight.grad) for _ in range(launch.world_size)]
    dist.all_gather(shards, model.embedding.weight.grad.contiguous(), group=tp_group)
    embedding_grad = torch.cat(shards)  # vocabulary rows are split contiguously across ranks
    dist.all_reduce(squares, group=tp_group)
    if launch.rank == 0:
        torch.save({"loss": loss.detach(), "grad_norm": (squares + replicated).sqrt(),
                    "embedding_grad": embedding_grad}, out)
    destroy_distributed()


if __name__ == "__main__":
    main(*sys.argv[1:])
