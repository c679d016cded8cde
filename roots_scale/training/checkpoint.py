"""Checkpoints: DeepSpeed engine state plus what exact continuation needs, published atomically.

Layout under `run/checkpoints/`: one directory per saved step (`iter_0000020/`, written by
DeepSpeed, plus one RNG file per rank) and a `latest` pointer. `latest` is written by rank 0 to a
temporary name and renamed, only after every rank has finished writing and the files are checked,
so a save interrupted at any moment leaves the previous checkpoint as `latest`.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, incomplete or does not match the run."""


LATEST = "latest"


def tag_for_step(step: int) -> str:
    return f"iter_{step:07d}"


def capture_rng_state() -> dict[str, Any]:
    """Every random generator a training step may draw from."""
    from deepspeed.accelerator import get_accelerator

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    accelerator = get_accelerator()
    if accelerator.device_name() != "cpu":
        state["accelerator"] = accelerator.get_rng_state()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    from deepspeed.accelerator import get_accelerator

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "accelerator" in state:
        get_accelerator().set_rng_state(state["accelerator"])


class CheckpointManager:
    """Saves and restores a DeepSpeed engine together with the trainer's own state."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def latest_tag(self) -> str | None:
        pointer = self.directory / LATEST
        if not pointer.is_file():
            return None
        tag = pointer.read_text().strip()
        if not (self.directory / tag).is_dir():
            raise CheckpointError(f"{pointer} names checkpoint {tag!r}, but {self.directory / tag} does not exist")
        return tag

    def save(self, engine, step: int, train_state: dict[str, Any]) -> Path:
        """Collective: every rank must call it. Returns the checkpoint directory."""
        tag = tag_for_step(step)
        rank = dist.get_rank()
        engine.save_checkpoint(str(self.directory), tag=tag, client_state=train_state, save_latest=False)
        _atomic_torch_save(capture_rng_state(), self.directory / tag / f"rng_state_rank{rank:05d}.pt")
        dist.barrier()
        if rank == 0:
            self._publish(tag, dist.get_world_size())
        dist.barrier()
        return self.directory / tag

    def _publish(self, tag: str, world_size: int) -> None:
        folder = self.directory / tag
        missing = [f"rng_state_rank{r:05d}.pt" for r in range(world_size)
                   if not (folder / f"rng_state_rank{r:05d}.pt").is_file()]
        if not any(folder.glob("*model_states.pt")):
            missing.append("*model_states.pt")
        if missing:
            raise CheckpointError(f"checkpoint {folder} is incomplete, missing: {', '.join(missing)}; "
                                  f"'{LATEST}' still points to the previous checkpoint")
        pointer = self.directory / LATEST
        tmp = pointer.with_name(f".{LATEST}.tmp")
        tmp.write_text(tag + "\n")
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        tmp.replace(pointer)

    def load_latest(self, engine) -> dict[str, Any] | None:
        """Restore the engine from `latest`; return the saved train state, or None for a fresh run."""
        tag = self.latest_tag()
        if tag is None:
            return None
        path, client_state = engine.load_checkpoint(str(self.directory), tag=tag)
        if path is None:
            raise CheckpointError(f"DeepSpeed could not load checkpoint {self.directory / tag}")
        rng_file = self.directory / tag / f"rng_state_rank{dist.get_rank():05d}.pt"
        if rng_file.is_file():
            restore_rng_state(torch.load(rng_file, weights_only=False))
        return client_state


def _atomic_torch_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)
