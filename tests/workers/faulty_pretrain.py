"""`roots_scale/pretrain.py` with faults injected by environment variables, for failure tests.

FAULT_NAN_STEPS="3,5-": the training loss is NaN at step 3 and from step 5 on (steps of this process).
FAULT_STALL_SAVE_STEP=4: rank 1 stalls in the middle of saving step 4 (after DeepSpeed wrote its files),
after touching FAULT_MARKER, so the test can SIGKILL the job mid-save.
Everything else is the real entry point, engine and checkpoint code.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch.distributed as dist  # noqa: E402

from roots_scale import pretrain  # noqa: E402
from roots_scale.models.bert import BERT  # noqa: E402
from roots_scale.models.gpt import GPT  # noqa: E402
from roots_scale.training import layout_free  # noqa: E402


def nan_steps(spec: str) -> callable:
    """A predicate over 1-based step numbers from '3,5-'."""
    singles, open_from = set(), None
    for part in filter(None, spec.split(",")):
        if part.endswith("-"):
            open_from = int(part[:-1])
        else:
            singles.add(int(part))
    return lambda step: step in singles or (open_from is not None and step >= open_from)


def inject_nan(model_class: type, is_nan_step) -> None:
    forward = model_class.forward
    calls = {"train": 0}

    def poisoned(self, *args, **kwargs):
        loss = forward(self, *args, **kwargs)
        if self.training:
            calls["train"] += 1
            if is_nan_step(calls["train"]):
                return loss * float("nan")
        return loss

    model_class.forward = poisoned


def stall_save(step: int, marker: Path) -> None:
    save = layout_free.save_layout_free

    def stalling(engine, folder, *args):
        if folder.parent.name == f"iter_{step:07d}" and dist.get_rank() == 1:
            marker.touch()
            time.sleep(600)
        return save(engine, folder, *args)

    layout_free.save_layout_free = stalling


if __name__ == "__main__":
    if os.environ.get("FAULT_NAN_STEPS"):
        predicate = nan_steps(os.environ["FAULT_NAN_STEPS"])
        inject_nan(GPT, predicate)
        inject_nan(BERT, predicate)
    if os.environ.get("FAULT_STALL_SAVE_STEP"):
        stall_save(int(os.environ["FAULT_STALL_SAVE_STEP"]), Path(os.environ["FAULT_MARKER"]))
    sys.exit(pretrain.main())
