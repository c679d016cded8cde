"""Worker: one forward/backward of a BERT at TP = world size and at TP = 1 (one launch, regrouped); rank 0
saves, per TP size, the loss, grad norm, gathered vocab-parallel grads, and the loss of the batch padded further."""


import torch
from megatron.core import parallel_state
from tp_grads import gather_vocab_rows, model_grad_norm

from roots_scale.config import ModelConfig
from roots_scale.distributed import destroy_distributed, discover_launch_env, init_distributed
from roots_scale.models.bert import BERT

CONFIG = ModelConfig(arch="bert", num_layers=2, hidden_size=64, num_attention_heads=4, seq_length=16)
VOCAB = 256


def make_batch(seq: int, lengths: list[int], seed: int = 7) -> dict[str, torch.Tensor]:
    """A BERT-shaped batch: rows of `lengths` real tokens then padding (id 0), about a quarter chosen."""
    g = torch.Generator().manual_seed(seed)
    batch = len(lengths)
    input_ids = torch.randint(6, VOCAB, (batch, seq), generator=g)
    attention_mask = (torch.arange(seq)[None, :] < torch.tensor(lengths)[:, None]).long()
    chosen = (torch.rand(batch, seq, generator=g) < 0.25) & attention_mask.bool()
    chosen[:, 0] = False
    labels = torch.where(chosen, torch.randint(6, VOCAB, (batch, seq), generator=g), torch.full_like(input_ids, -1))
    token_type_ids = (torch.arange(seq)[None, :] >= (torch.tensor(lengths)[:, None] // 2)).long() * attention_mask
    return {"input_ids": input_ids * attention_mask, "attention_mask": attention_mask,
            "token_type_ids": token_type_ids, "labels": labels, "loss_mask": chosen.float(),
            "sentence_order_label": torch.tensor([i % 2 for i in range(batch)])}


def pad_to(batch: dict[str, torch.Tensor], seq: int) -> dict[str, torch.Tensor]:
    """The same samples with more padding positions at the end."""
    fill = {"labels": -1}
    out = {}
    for key, value in batch.items():
        if value.ndim == 2:
            extra = torch.full((value.shape[0], seq - value.shape[1]), fill.get(key, 0), dtype=value.dtype)
            value = torch.cat([value, extra], dim=1)
        out[key] = value
    return out


def step(tp: int) -> dict[str, torch.Tensor]:
    """Loss, padded loss, global grad norm and gathered vocab-parallel grads of one step at `tp`."""
    torch.manual_seed(1234)
    model = BERT(CONFIG, vocab_size=VOCAB, tensor_parallel_size=tp)
    batch = make_batch(12, [12, 9, 5])
    loss = model(**batch)
    loss.backward()
    with torch.no_grad():
        padded_loss = model(**pad_to(batch, CONFIG.seq_length))
    return {"loss": loss.detach(), "padded_loss": padded_loss, "grad_norm": model_grad_norm(model),
            "embedding_grad": gather_vocab_rows(model.embedding.weight.grad),
            "bias_grad": gather_vocab_rows(model.lm_bias.grad)}


def main(out: str) -> None:
    """At TP = world size, then (new model-parallel groups on the same world) at TP = 1."""
    launch = discover_launch_env()
    results = {}
    for tp in sorted({launch.world_size, 1}, reverse=True):
        init_distributed(launch, tensor_parallel=tp)
        results[tp] = step(tp)
        parallel_state.destroy_model_parallel()
    if launch.rank == 0:
        torch.save(results, out)
    destroy_distributed()

