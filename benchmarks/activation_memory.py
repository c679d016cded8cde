"""Activation memory per rank with and without sequence parallelism: the bytes autograd saves in one forward of a
GPT (counted with saved-tensor hooks, so it is exact on CPU), beside the layout planner's prediction.

    python benchmarks/activation_memory.py [--tensor 2] [--layers 4] [--hidden 512] [--heads 8] [--seq 512]
        [--micro-batch 2] [--style gpt2|llama] [--recompute]

Runs the TP ranks as forked gloo processes (tests/in_process.py), once without and once with sequence parallelism.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import torch  # noqa: E402

from in_process import run_ok  # noqa: E402
from roots_scale.config import ModelConfig  # noqa: E402
from roots_scale.planning.counts import activation_bytes  # noqa: E402
from roots_scale.planning.measure import saved_activation_bytes  # noqa: E402

LLAMA = dict(position_embedding="rope", normalization="rmsnorm", activation="swiglu", bias=False,
             tie_embeddings=False)
VOCAB = 32768


def saved_bytes(cfg: ModelConfig, micro_batch: int, tensor: int, sequence_parallel: bool) -> int:
    """The bytes this rank's model saves for backward in one forward with the loss."""
    from roots_scale.distributed import discover_launch_env, init_distributed
    from roots_scale.models import build_model

    init_distributed(discover_launch_env(), tensor)
    model = build_model(cfg, VOCAB, tensor, sequence_parallel=sequence_parallel).train()
    tokens = torch.randint(0, VOCAB, (micro_batch, cfg.seq_length), generator=torch.Generator().manual_seed(0))
    saved = saved_activation_bytes(model, tokens, tokens)
    torch.distributed.barrier()
    return saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tensor", type=int, default=2)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--micro-batch", type=int, default=2)
    parser.add_argument("--style", choices=("gpt2", "llama"), default="gpt2")
    parser.add_argument("--recompute", action="store_true")
    args = parser.parse_args()
    cfg = ModelConfig(num_layers=args.layers, hidden_size=args.hidden, num_attention_heads=args.heads,
                      seq_length=args.seq, activation_checkpointing=args.recompute,
                      **(LLAMA if args.style == "llama" else {}))
    print(f"GPT ({args.style}) {args.layers} layers, hidden {args.hidden}, {args.heads} heads, seq {args.seq}, "
          f"micro-batch {args.micro_batch}, vocab {VOCAB}, TP {args.tensor}, fp32"
          f"{', activation checkpointing' if args.recompute else ''}")
    print(f"{'':<28}{'saved MB/rank':>15}{'planner MB':>12}{'vs without SP':>15}")
    baseline = None
    for sequence_parallel in (False, True):
        measured = max(r.value for r in run_ok(saved_bytes, args.tensor, cfg, args.micro_batch, args.tensor,
                                                sequence_parallel))
        act = activation_bytes(cfg, VOCAB, args.micro_batch, args.tensor, "fp32", sequence_parallel)
        predicted = cfg.num_layers * act.block + act.first_stage_extra + act.last_stage_extra
        baseline = baseline or measured
        name = "with sequence parallelism" if sequence_parallel else "tensor parallel only"
        print(f"{name:<28}{measured / 1e6:>15.1f}{predicted / 1e6:>12.1f}{measured / baseline:>14.2f}x")


if __name__ == "__main__":
    main()
