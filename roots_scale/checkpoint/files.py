"""The names inside a run's `checkpoints/` folder, and finding a checkpoint from what a user points at.

    checkpoints/latest                      the tag of the newest complete checkpoint
    checkpoints/iter_0000020/               one folder per saved step:
        config.yaml, checksums.json         written by rank 0 once every rank has written its files
        meta.yaml                           written last: a folder without it is incomplete
        rng_state_rank00000.pt              one per rank
        layout_free/index.json, rank00000.pt  the layout-free state, one file per rank (see consolidated.py)
        ... DeepSpeed's own engine files
"""

from __future__ import annotations

import re
from pathlib import Path

from roots_core.errors import RootsError

LATEST = "latest"
BEST = "best.json"  # the best checkpoint by a validation metric (fine-tuning), kept by retention
META = "meta.yaml"
CONFIG = "config.yaml"
CHECKSUMS = "checksums.json"
CONSOLIDATED = "layout_free"
TAG_PREFIX = "iter_"
TAG_PATTERN = re.compile(TAG_PREFIX + r"\d{7}")  # tag_for_step's names


class CheckpointError(RootsError):
    """A checkpoint that is missing, incomplete or does not match the run."""


def tag_for_step(step: int) -> str:
    return f"{TAG_PREFIX}{step:07d}"


def rng_file(rank: int) -> str:
    return f"rng_state_rank{rank:05d}.pt"


def resolve_checkpoint(path: str | Path) -> Path:
    """An `iter_*` checkpoint folder from a run directory, its `checkpoints/` folder, or the folder itself."""
    path = Path(path)
    for candidate in (path, path / "checkpoints"):
        pointer = candidate / LATEST
        if pointer.is_file():
            return candidate / pointer.read_text().strip()
    if (path / CONSOLIDATED).is_dir() or any(path.glob("*model_states.pt")):
        return path
    raise CheckpointError(f"{path} is not a checkpoint: expected a run directory, its checkpoints/ folder "
                          f"(with a '{LATEST}' pointer) or an {TAG_PREFIX}NNNNNNN folder")
