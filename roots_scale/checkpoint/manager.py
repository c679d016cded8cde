"""Checkpoints: everything exact continuation needs, published atomically, kept by a retention rule.

Layout under `run/checkpoints/`, one folder per saved step (`iter_0000020/`):
- DeepSpeed's engine files (weights, optimizer, ZeRO partitions): exact resume on the same layout;
- `rng_state_rank00000.pt`, one per rank: Python, numpy, torch, accelerator and megatron-core RNGs;
- `layout_free/`: full fp32 weights and Adam moments per TP rank (see layout_free.py), for resuming
  on another TP/DP size or ZeRO stage and for conversion;
- `config.yaml` (the resolved config) and `meta.yaml` (step, consumed samples per dataset, layout,
  data and tokenizer fingerprints), both written last by rank 0.
`latest` names the newest complete folder. It is written by rank 0 to a temporary name and renamed,
only after every rank has finished writing and the files are checked, so a save interrupted at any
moment leaves the previous checkpoint as `latest`.
"""

from __future__ import annotations

import os
import random
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import yaml

from roots_scale.config import CheckpointConfig, Config, save_config
from roots_scale.training import layout_free

LATEST = "latest"
META = "meta.yaml"
TAG_PREFIX = "iter_"


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, incomplete or does not match the run."""


def tag_for_step(step: int) -> str:
    return f"{TAG_PREFIX}{step:07d}"


def rng_file(rank: int) -> str:
    return f"rng_state_rank{rank:05d}.pt"


@dataclass(frozen=True)
class Layout:
    """How the world was split when a checkpoint was written; another layout loads the layout-free state."""

    tensor: int
    data: int
    zero_stage: int


@dataclass(frozen=True)
class RunIdentity:
    """What a checkpoint must agree with to be continued: the layout and the data it trained on."""

    layout: Layout
    fingerprints: dict[str, dict[str, str]] = field(default_factory=dict)  # store -> {data, tokenizer}


def capture_rng_state() -> dict[str, Any]:
    """Every random generator a training step may draw from, as tensors and numbers (weights_only-loadable)."""
    from deepspeed.accelerator import get_accelerator
    from megatron.core import tensor_parallel

    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    accelerator = get_accelerator()
    if accelerator.device_name() != "cpu":
        state["accelerator"] = accelerator.get_rng_state()
        state["megatron"] = tensor_parallel.get_cuda_rng_tracker().get_states()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    from deepspeed.accelerator import get_accelerator
    from megatron.core import tensor_parallel

    random.setstate(state["python"])
    numpy = state["numpy"]
    np.random.set_state((numpy["kind"], numpy["keys"].numpy().astype(np.uint32), numpy["pos"],
                         numpy["has_gauss"], numpy["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "accelerator" in state:
        get_accelerator().set_rng_state(state["accelerator"])
    if state.get("megatron"):
        tensor_parallel.get_cuda_rng_tracker().set_states(state["megatron"])


class CheckpointManager:
    """Saves and restores a DeepSpeed engine together with the trainer's own state."""

    def __init__(self, directory: Path, cfg: Config, identity: RunIdentity) -> None:
        self.directory = Path(directory)
        self.cfg = cfg
        self.policy: CheckpointConfig = cfg.checkpoint
        self.identity = identity

    def latest_tag(self) -> str | None:
        pointer = self.directory / LATEST
        if not pointer.is_file():
            return None
        tag = pointer.read_text().strip()
        if not (self.directory / tag / META).is_file():
            raise CheckpointError(f"{pointer} names checkpoint {tag!r}, but {self.directory / tag / META} does not "
                                  f"exist; restore that folder or point '{LATEST}' at an older complete one")
        return tag

    # ----------------------------------------------------------------------- saving

    def save(self, engine, step: int, train_state: dict[str, Any]) -> Path:
        """Collective: every rank must call it. Returns the checkpoint folder once it is `latest`."""
        tag = tag_for_step(step)
        folder = self.directory / tag
        rank = dist.get_rank()
        if rank == 0 and folder.exists():  # left by a save that was killed: never mix its files with ours
            self._discard(folder)
        dist.barrier()
        engine.save_checkpoint(str(self.directory), tag=tag, save_latest=False)  # our state goes in meta.yaml
        _atomic_torch_save(capture_rng_state(), folder / rng_file(rank))
        if self.policy.layout_free:
            tp_rank, tp_size, dp_rank = layout_free.tensor_parallel_coordinates()
            layout_free.save_layout_free(engine, folder / layout_free.FOLDER, tp_rank, tp_size, dp_rank)
        dist.barrier()
        if rank == 0:
            save_config(self.cfg, folder / layout_free.CONFIG_FILE)
            meta = {"step": step, **train_state, "layout": asdict(self.identity.layout),
                    "fingerprints": self.identity.fingerprints, "world_size": dist.get_world_size()}
            _atomic_write(folder / META, yaml.safe_dump(meta, sort_keys=False))
            self._publish(tag, dist.get_world_size())
            self._apply_retention(tag)
        dist.barrier()
        return folder

    def _publish(self, tag: str, world_size: int) -> None:
        folder = self.directory / tag
        missing = [rng_file(r) for r in range(world_size) if not (folder / rng_file(r)).is_file()]
        if not any(folder.glob("*model_states.pt")):
            missing.append("*model_states.pt")
        if self.policy.layout_free:
            missing += [str(p.relative_to(folder)) for p in layout_free.expected_shards(folder / layout_free.FOLDER)
                        if not p.is_file()]
        if missing:
            raise CheckpointError(f"checkpoint {folder} is incomplete, missing: {', '.join(missing)}; "
                                  f"'{LATEST}' still points to the previous checkpoint")
        _atomic_write(self.directory / LATEST, tag + "\n")

    def _apply_retention(self, newest: str) -> None:
        """Keep the last `keep_last` checkpoints and every `keep_every`-th step; delete the rest."""
        keep_last, keep_every = self.policy.keep_last, self.policy.keep_every
        if keep_last is None:
            return
        tags = sorted(p.name for p in self.directory.glob(f"{TAG_PREFIX}*") if (p / META).is_file())
        recent = set(tags[-keep_last:]) | {newest}
        for tag in tags:
            step = int(tag[len(TAG_PREFIX):])
            if tag not in recent and not (keep_every and step % keep_every == 0):
                self._discard(self.directory / tag)

    def _discard(self, folder: Path) -> None:
        """Rename first, then delete: a folder half-deleted by a kill is never taken for a checkpoint."""
        trash = folder.with_name(f".deleting-{folder.name}")
        if trash.exists():
            shutil.rmtree(trash)
        folder.rename(trash)
        shutil.rmtree(trash)

    # ----------------------------------------------------------------------- loading

    def load_latest(self, engine) -> dict[str, Any] | None:
        """Restore the engine from `latest`; return the saved train state (meta.yaml), or None for a fresh run."""
        tag = self.latest_tag()
        if tag is None:
            return None
        folder = self.directory / tag
        meta = yaml.safe_load((folder / META).read_text())
        self._check_fingerprints(folder, meta.get("fingerprints", {}))
        saved_layout = Layout(**meta["layout"])
        if saved_layout == self.identity.layout:
            path, _ = engine.load_checkpoint(str(self.directory), tag=tag)
            if path is None:
                raise CheckpointError(f"DeepSpeed could not load checkpoint {folder}")
            rng = folder / rng_file(dist.get_rank())
            restore_rng_state(torch.load(rng, weights_only=True))
        else:
            self._load_reshaped(engine, folder, saved_layout)
        return meta

    def _load_reshaped(self, engine, folder: Path, saved: Layout) -> None:
        """Load the layout-free state into an engine of another TP/DP size or ZeRO stage."""
        if not (folder / layout_free.FOLDER).is_dir():
            raise CheckpointError(
                f"checkpoint {folder} was written with {saved} and this run uses {self.identity.layout}; resuming "
                f"on another layout needs its layout-free state, which was not saved (checkpoint.layout_free was "
                f"false). Resume with the saved layout: parallel.tensor={saved.tensor}, "
                f"parallel.zero_stage={saved.zero_stage} on {saved.tensor * saved.data} processes")
        try:
            params, moments, adam_step = layout_free.read_layout_free(folder / layout_free.FOLDER)
            state = layout_free.FullState(params, moments, adam_step, 0, self.cfg)
            tp_rank, tp_size, _ = layout_free.tensor_parallel_coordinates()
            layout_free.load_into_engine(engine, state, tp_rank, tp_size)
        except layout_free.LayoutFreeError as err:
            raise CheckpointError(f"cannot resume {folder} on the new layout: {err}") from err
        if dist.get_rank() == 0:
            print(f"roots-train: resumed {folder.name} written with {saved} on {self.identity.layout} "
                  f"(layout-free state; RNG streams restart from the seed)")

    def _check_fingerprints(self, folder: Path, saved: dict[str, dict[str, str]]) -> None:
        if self.policy.allow_data_change or saved == self.identity.fingerprints:
            return
        differences = []
        for store in sorted(saved.keys() | self.identity.fingerprints.keys()):
            before, now = saved.get(store), self.identity.fingerprints.get(store)
            if before != now:
                differences.append(f"{store}: checkpoint {before}, now {now}")
        raise CheckpointError(
            f"checkpoint {folder} was trained on other data or another tokenizer: {'; '.join(differences)}. "
            f"Point data.path at the data it was trained on, or set checkpoint.allow_data_change=true to "
            f"continue on the new data on purpose")


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(path)


def _atomic_torch_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)
