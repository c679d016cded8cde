"""Helpers for the Hugging Face conversion tests, and their TP=2 worker.

Tiny models of the three families with every weight random (norms and biases included, so a swapped or
dropped tensor shows), a tiny real sentencepiece tokenizer, and logits read whole at any TP size. Run under
torchrun (`hf_models.py SPM_MODEL OUT_DIR`), it builds each family at TP = world size, consolidates the
shards, exports rank 0's copy, imports it back into a fresh TP model, and rank 0 saves the differences.
"""

import random
from pathlib import Path

import torch
import torch.distributed as dist
from megatron.core import parallel_state

from roots_scale.config import ModelConfig
from roots_scale.models import build_model
from roots_scale.models.tensor_parallel import load_full_params, merge_shards, partition_of

STYLES = {
    "gpt2": ModelConfig(num_layers=2, hidden_size=64, num_attention_heads=4, seq_length=32),
    "gpt2_untied_nobias": ModelConfig(num_layers=2, hidden_size=64, num_attention_heads=4, seq_length=32, bias=False,
                                      tie_embeddings=False, ffn_hidden_size=96),
    "llama_gqa": ModelConfig(num_layers=2, hidden_size=64, num_attention_heads=4, num_kv_heads=2, seq_length=32,
                             position_embedding="rope", normalization="rmsnorm", activation="swiglu", bias=False,
                             tie_embeddings=False, rope_theta=500.0),
    "llama_tied_bias": ModelConfig(num_layers=2, hidden_size=64, num_attention_heads=4, num_kv_heads=1,
                                   seq_length=32, position_embedding="rope", normalization="rmsnorm",
                                   activation="swiglu", bias=True, tie_embeddings=True),
    "bert": ModelConfig(arch="bert", num_layers=2, hidden_size=64, num_attention_heads=4, seq_length=32,
                        norm_eps=1e-12),
}
VOCAB_ROWS = 384  # a 300-piece tokenizer padded to a multiple of 128
TOKENIZER_VOCAB = 300
WORDS = "the a model data token train loss layer head weight value query key store shard blend run step".split()


def write_text_store(root: Path, documents: int = 200, seed: int = 0,
                     tokenizer: Path | None = None) -> tuple[Path, Path]:
    """(sentencepiece model, token store) of random sentences over a small word list, tokenized for real with
    `tokenizer`, or with one trained on them."""
    from data_tools.shards import write_shard
    from data_tools.sources.base import Document
    from data_tools.tokenize_shards import tokenize_shards
    from data_tools.tokenizer import train_tokenizer

    rng = random.Random(seed)

    def text() -> str:
        return "\n".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 30))).capitalize() + "."
                         for _ in range(rng.randint(1, 5)))

    (root / "docs").mkdir(parents=True, exist_ok=True)
    write_shard(root / "docs" / "part.parquet", [Document(f"d{i}", text(), "test", None) for i in range(documents)])
    model = tokenizer or train_tokenizer(root / "docs", root / "tokenizer", TOKENIZER_VOCAB)
    tokenize_shards(root / "docs", model, root / "store")
    return model, root / "store"


def full_params(model: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """Random full weights for `model`'s parameters (norm scales near 1, the rest small), the same at any TP size."""
    from roots_scale.posttrain.hf.load import full_shapes

    generator = torch.Generator().manual_seed(seed)
    params = {}
    for name, shape in sorted(full_shapes(model).items()):
        noise = torch.randn(shape, generator=generator)
        params[name] = 1 + 0.1 * noise if "norm.weight" in name else 0.05 * noise
    return params


def random_model(style: str, seed: int, tensor_parallel_size: int = 1) -> torch.nn.Module:
    """A model of `style` at the given TP size whose every weight is random (see `full_params`)."""
    model = build_model(STYLES[style], VOCAB_ROWS, tensor_parallel_size).eval()
    load_full_params(model, full_params(model, seed))
    return model


def consolidated(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The full weights of a TP-sharded model, its slices gathered and merged (collective)."""
    group = parallel_state.get_tensor_model_parallel_group()
    params = {}
    for name, param in model.named_parameters():
        where = partition_of(param)
        if where is None:
            params[name] = param.detach().clone()
            continue
        shards = [torch.empty_like(param) for _ in range(dist.get_world_size(group=group))]
        dist.all_gather(shards, param.detach().contiguous(), group=group)
        params[name] = merge_shards(shards, *where)
    return params


def inputs(style: str, seed: int = 7) -> dict[str, torch.Tensor]:
    """Random token ids [2, 32] of real tokens (BERT: the second row padded after 20, two token types)."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(6, TOKENIZER_VOCAB, (2, 32), generator=generator)
    if STYLES[style].arch != "bert":
        return {"input_ids": ids}
    mask = torch.ones_like(ids)
    mask[1, 20:] = 0
    types = (torch.arange(32) >= 12).long().expand(2, -1) * mask
    return {"input_ids": ids * mask, "attention_mask": mask, "token_type_ids": types}


@torch.no_grad()
def our_logits(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Logits [batch, seq, vocab rows] of a roots_scale model at any TP size (vocab slices gathered)."""
    if "attention_mask" in batch:
        logits, _ = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    else:
        logits = model(batch["input_ids"])
    group = parallel_state.get_tensor_model_parallel_group()
    shards = [torch.empty_like(logits) for _ in range(dist.get_world_size(group=group))]
    dist.all_gather(shards, logits.contiguous(), group=group)
    return torch.cat(shards, dim=-1)


@torch.no_grad()
def hf_logits(hf_dir: Path, style: str, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Logits of the transformers model saved in `hf_dir`, loaded the way a user would."""
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

    auto = AutoModelForMaskedLM if STYLES[style].arch == "bert" else AutoModelForCausalLM
    return auto.from_pretrained(hf_dir, local_files_only=True).eval()(**batch).logits


def max_difference(ours: torch.Tensor, theirs: torch.Tensor, batch: dict[str, torch.Tensor]) -> float:
    """Largest absolute logit difference over real (unpadded) positions."""
    real = batch.get("attention_mask", torch.ones_like(batch["input_ids"])).bool()
    return float((ours[real] - theirs[real]).abs().max())


def main(spm_model: str, out_dir: str) -> None:
    """Each family at TP = world size: export from consolidated shards, import into a fresh sharded model."""
    from roots_scale.distributed import destroy_distributed, discover_launch_env, init_distributed
    from roots_scale.posttrain.hf.export import export_hf
    from roots_scale.posttrain.hf.load import init_model_from_hf

    launch = discover_launch_env()
    init_distributed(launch, tensor_parallel=launch.world_size)
    results = {}
    for style in ("gpt2", "llama_gqa", "bert"):
        model = random_model(style, seed=1, tensor_parallel_size=launch.world_size)
        hf_dir = Path(out_dir) / style
        full = consolidated(model)
        if launch.rank == 0:
            export_hf(full, STYLES[style], Path(spm_model), hf_dir)
        dist.barrier()
        batch = inputs(style)
        theirs = hf_logits(hf_dir, style, batch)
        fresh = build_model(STYLES[style], VOCAB_ROWS, launch.world_size).eval()
        init_model_from_hf(fresh, hf_dir, STYLES[style])
        results[style] = {"export": max_difference(our_logits(model, batch), theirs, batch),
                          "import": max_difference(our_logits(fresh, batch), theirs, batch)}
    if launch.rank == 0:
        torch.save(results, Path(out_dir) / "results.pt")
    destroy_distributed()

