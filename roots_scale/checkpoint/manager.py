"""Checkpoints: everything exact continuation needs, published atomically, kept by a retention rule.

Layout under `run/checkpoints/`, one folder per saved step (`iter_0000020/`):
- DeepSpeed's engine files (weights, optimizer, ZeRO partitions): exact resume on the same layout;
- `rng_state_rank00000.pt`, one per rank: Python, numpy, torch, accelerator and megatron-core RNGs;
- `layout_free/`: full fp32 weights and Adam moments per TP rank (see consolidated.py), for resuming
  on another TP/DP size or ZeRO stage and for conversion;
- `config.yaml` (the resolved config) and `meta.yaml` (step, consumed samples per dataset, layout,
  data and tokenizer fingerprints), both written last by rank 0.
`latest` names the newest complete folder. It is written by rank 0 to a temporary name and renamed,
only after every rank has finished writing and the files are checked, so a save interrupted at any
moment leaves the previous checkpoint as `latest`.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import yaml
from megatron.core import parallel_state

from roots_core.atomic import atomic_path, write_text_atomic
from roots_scale.checkpoint import consolidated, deepspeed_state
from roots_scale.checkpoint.files import (
    CONFIG,
    CONSOLIDATED,
    LATEST,
    META,
    TAG_PREFIX,
    CheckpointError,
    rng_file,
    tag_for_step,
)
from roots_scale.checkpoint.rng import capture_rng_state, restore_rng_state
from roots_scale.config import CheckpointConfig, Config, save_config
from roots_scale.models.tensor_parallel import ModelError


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


class CheckpointManager:
    """Saves and restores a DeepSpeed engine together with the trainer's own state."""

    def __init__(self, directory: Path, policy: CheckpointConfig, identity: RunIdentity, run_config: Config) -> None:
        self.directory = Path(directory)
        self.policy = policy
        self.identity = identity
        self.run_config = run_config  # written into every checkpoint folder
        self.on_files_written: list[Callable[[Path], None]] = []  # called on every rank before publishing

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
        """Collective: every rank must call it. Returns the checkpoint folder once it is `latest`.

        Each rank writes its own files; `on_files_written` hooks run; then rank 0 checks them all and
        publishes the folder as `latest`.
        """
        tag = tag_for_step(step)
        folder = self.directory / tag
        rank = dist.get_rank()
        if rank == 0 and folder.exists():  # left by a save that was killed: never mix its files with ours
            self._discard(folder)
        dist.barrier()
        engine.save_checkpoint(str(self.directory), tag=tag, save_latest=False)  # our state goes in meta.yaml
        with atomic_path(folder / rng_file(rank)) as tmp:
            torch.save(capture_rng_state(), tmp)
        for hook in self.on_files_written:
            hook(folder)
        if self.policy.layout_free:
            tp_rank, tp_size, dp_rank = _tensor_parallel_coordinates()
            deepspeed_state.save_consolidated(engine, folder / CONSOLIDATED, tp_rank, tp_size, dp_rank)
        dist.barrier()
        if rank == 0:
            save_config(self.run_config, folder / CONFIG)
            meta = {"step": step, **train_state, "layout": asdict(self.identity.layout),
                    "fingerprints": self.identity.fingerprints, "world_size": dist.get_world_size()}
            write_text_atomic(folder / META, yaml.safe_dump(meta, sort_keys=False))
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
            missing += [str(p.relative_to(folder)) for p in consolidated.expected_shards(folder / CONSOLIDATED)
                        if not p.is_file()]
        if missing:
            raise CheckpointError(f"checkpoint {folder} is incomplete, missing: {', '.join(missing)}; "
                                  f"'{LATEST}' still points to the previous checkpoint")
        write_text_atomic(self.directory / LATEST, tag + "\n")

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
        if not (folder / CONSOLIDATED).is_dir():
            raise CheckpointError(
                f"checkpoint {folder} was written with {saved} and this run uses {self.identity.layout}; resuming "
                f"on another layout needs its layout-free state, which was not saved (checkpoint.layout_free was "
                f"false). Resume with the saved layout: parallel.tensor={saved.tensor}, "
                f"parallel.zero_stage={saved.zero_stage} on {saved.tensor * saved.data} processes")
        params, moments, adam_step = consolidated.read_consolidated(folder / CONSOLIDATED)
        state = consolidated.FullState(params, moments, adam_step, 0, self.run_config)
        tp_rank, tp_size, _ = _tensor_parallel_coordinates()
        try:
            deepspeed_state.load_into_engine(engine, state, tp_rank, tp_size)
        except ModelError as err:
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


def _tensor_parallel_coordinates() -> tuple[int, int, int]:
    """(tp_rank, tp_size, dp_rank) of this process, from megatron-core's groups."""
    return (parallel_state.get_tensor_model_parallel_rank(), parallel_state.get_tensor_model_parallel_world_size(),
            dist.get_rank(group=parallel_state.get_data_parallel_group()))
