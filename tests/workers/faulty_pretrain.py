"""Faults injected through the trainer's own hooks, for failure tests; as a script, the real training entry
point with the faults named in the environment (for jobs a test kills under real torchrun).

`NaNLoss(nan_steps("3,5-"))`: the training loss is NaN at step 3 and from step 5 on (the model's training loss
is multiplied by NaN through a forward hook, so the gradients are NaN too).
FAULT_STALL_SAVE_STEP=4: rank 1 stalls in the middle of saving step 4 (after writing its own engine and RNG
files, before the checkpoint is published), after touching FAULT_MARKER, so the test can SIGKILL the job mid-save.
Everything else is the real entry point, engine and checkpoint code.
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch.distributed as dist  # noqa: E402

from roots_scale import pretrain  # noqa: E402
from roots_scale.training.callbacks.checkpointing import Checkpointing  # noqa: E402
from roots_scale.training.trainer import Callback, Trainer  # noqa: E402


def nan_steps(spec: str) -> callable:
    """A predicate over 1-based step numbers from '3,5-'."""
    singles, open_from = set(), None
    for part in filter(None, spec.split(",")):
        if part.endswith("-"):
            open_from = int(part[:-1])
        else:
            singles.add(int(part))
    return lambda step: step in singles or (open_from is not None and step >= open_from)


class NaNLoss(Callback):
    """The training loss of the chosen steps becomes NaN."""

    def __init__(self, is_nan_step) -> None:
        self.is_nan_step = is_nan_step
        self.poison = False

    def on_fit_start(self, trainer: Trainer) -> None:
        trainer.engine.module.register_forward_hook(self._poison)

    def on_step_start(self, trainer: Trainer, step: int) -> None:
        self.poison = self.is_nan_step(step)

    def _poison(self, module, args, loss):
        return loss * math.nan if self.poison and module.training else None


class StallSave(Callback):
    """Rank 1 stalls once its files of the chosen step's checkpoint are written."""

    def __init__(self, step: int, marker: Path) -> None:
        self.step, self.marker = step, marker

    def on_fit_start(self, trainer: Trainer) -> None:
        checkpoints = next(c.manager for c in trainer.callbacks if isinstance(c, Checkpointing))
        checkpoints.on_files_written.append(self._stall)

    def _stall(self, folder: Path) -> None:
        if folder.name == f"iter_{self.step:07d}" and dist.get_rank() == 1:
            self.marker.touch()
            time.sleep(600)


def faults_from_environment() -> list[Callback]:
    faults: list[Callback] = []
    if os.environ.get("FAULT_STALL_SAVE_STEP"):
        faults.append(StallSave(int(os.environ["FAULT_STALL_SAVE_STEP"]), Path(os.environ["FAULT_MARKER"])))
    return faults


if __name__ == "__main__":
    sys.exit(pretrain.main(extra_callbacks=faults_from_environment()))
