"""`roots-train convert-checkpoint CHECKPOINT --output FILE`: a checkpoint as one consolidated fp32 state dict."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from roots_core.atomic import atomic_path
from roots_scale.checkpoint.consolidated import read_full_state


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="roots-train convert-checkpoint",
        description="Write a checkpoint's full fp32 weights (any TP size, any ZeRO stage) as one state dict, "
                    "loadable with torch.load(FILE, weights_only=True).")
    parser.add_argument("checkpoint", help="run directory, its checkpoints/ folder, or one iter_NNNNNNN folder")
    parser.add_argument("--output", required=True, help="file to write, e.g. model_fp32.pt")
    parser.add_argument("--with-optimizer", action="store_true", help="also write the Adam moments and step")
    args = parser.parse_args(argv)
    state = read_full_state(args.checkpoint)
    payload: dict[str, Any] = dict(state.params)
    if args.with_optimizer:
        payload = {"model": state.params, "moments": state.moments, "adam_step": state.adam_step}
    output = Path(args.output)
    with atomic_path(output) as tmp:
        torch.save(payload, tmp)
    total = sum(t.numel() for t in state.params.values())
    print(f"wrote {output}: {len(state.params)} tensors, {total:,} parameters (fp32), from step {state.step}")
    return 0
