"""`roots-train`: training by default, and the post-training subcommands. Every subcommand's user errors
(any `RootsError`) end as one line on stderr and exit code 2."""

from __future__ import annotations

import importlib
import sys
import warnings

from roots_core.errors import RootsError

SUBCOMMANDS = {  # roots-train NAME ...: module with main(argv) -> exit code
    "convert-checkpoint": "roots_scale.posttrain.convert",
    "export-hf": "roots_scale.posttrain.hf.export",
    "generate": "roots_scale.posttrain.generate",
    "evaluate": "roots_scale.posttrain.evaluate",
    "lm-eval": "roots_scale.posttrain.lm_eval",
    "plan": "roots_scale.planning.cli",
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "finetune":  # trains like pretraining: reports its own errors, on every rank
        from roots_scale.finetune.run import main as finetune  # noqa: PLC0415

        return finetune(argv[1:])
    if not argv or argv[0] not in SUBCOMMANDS:  # training reports its own errors, on every rank
        from roots_scale import pretrain  # noqa: PLC0415 - loads DeepSpeed, which the subcommands never need

        return pretrain.main(argv)
    name = argv[0]
    warnings.filterwarnings("ignore", message="Transformer Engine and Apex are not installed")  # megatron-core's
    try:
        return importlib.import_module(SUBCOMMANDS[name]).main(argv[1:])
    except RootsError as err:
        print(f"roots-train {name}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
