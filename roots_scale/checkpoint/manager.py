"""Checkpoints: everything exact continuation needs, published atomically, kept by a retention rule.

Layout under `run/checkpoints/`, one folder per saved step (`iter_0000020/`):
- DeepSpeed's engine files (weights, optimizer, ZeRO partitions): exact resume on the same layout;
- `rng_state_rank00000.pt`, one per rank: Python, numpy, torch, accelerator and megatron-core RNGs;
- `layout_free/`: fp32 weights and Adam moments, each rank's own share in its own file plus an index (see
  consolidated.py), for resuming on another layout and for conversion;
- `config.yaml` (the resolved config) and `meta.yaml` (step, consumed samples per dataset, layout,
  data and tokenizer fingerprints), both written last by rank 0.
`latest` names the newest complete folder. It is written by rank 0 to a temporary name and renamed,
only after every rank has finished writing and the files are checked, so a save interrupted at any
moment leaves the previous checkpoint as `latest`.
"""

from __future__ import annotations

import contextlib
import errno
import json
import shutil
from collections.abc import Callable, Iterator
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
    BEST,
    CONFIG,
    CONSOLIDATED,
    LATEST,
    META,
    TAG_PATTERN,
    TAG_PREFIX,
    CheckpointError,
    rng_file,
    tag_for_step,
)
from roots_scale.checkpoint.rng import capture_rng_state, restore_rng_state
from roots_scale.checkpoint.checksums import damaged_files, write_checksums
from roots_scale.checkpoint.compatibility import refused_changes
from roots_scale.config import CheckpointConfig, Config, load_config, save_config
from roots_scale.models.names import model_parameters
from roots_scale.models.tensor_parallel import ModelError, check_names


@dataclass(frozen=True)
class Layout:
    """How the world was split when a checkpoint was written; another layout loads the layout-free state."""

    tensor: int
    data: int
    zero_stage: int
    pipeline: int = 1  # absent from the meta.yaml of checkpoints written before pipeline parallelism


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
        self._verified: set[str] = set()  # tags whose files were checked against their checksums

    def latest_tag(self) -> str | None:
        """The checkpoint a run resumes from (see `resume_point`); None for a fresh start."""
        return self.resume_point()[0]

    def resume_point(self) -> tuple[str | None, str | None]:
        """(tag, note): the complete checkpoint `latest` names; or, when `latest` is missing, unreadable or
        names an incomplete folder, the newest complete checkpoint with a note saying why. Never a fresh
        start while a complete checkpoint exists."""
        pointer = self.directory / LATEST
        problem = f"{pointer} is missing"
        if pointer.is_file():
            try:
                tag = pointer.read_text().strip()
            except (OSError, UnicodeDecodeError) as err:
                tag, problem = None, f"{pointer} is unreadable ({err})"
            if tag is not None:
                missing = self.missing_files(self.directory / tag) if TAG_PATTERN.fullmatch(tag) else None
                if missing == []:
                    return tag, None
                problem = (f"{pointer} holds {tag[:40]!r}, not a checkpoint tag" if missing is None else
                           f"{pointer} names {tag}, which is incomplete (missing {', '.join(missing[:5])})")
        complete = [p.name for p in sorted(self.directory.glob(f"{TAG_PREFIX}*"), reverse=True)
                    if TAG_PATTERN.fullmatch(p.name) and not self.missing_files(p)]
        if complete:
            return complete[0], f"{problem}; resuming from the newest complete checkpoint, {complete[0]}"
        if pointer.is_file():
            raise CheckpointError(f"{problem}, and {self.directory} holds no other complete checkpoint; restore "
                                  f"the checkpoint or move {self.directory} away to start afresh")
        return None, None

    @staticmethod
    def missing_files(folder: Path, world_size: int | None = None, layout_free: bool | None = None) -> list[str]:
        """The files a complete checkpoint folder lacks. `world_size`: of the ranks that wrote it, else read
        from its meta.yaml, which a complete folder holds; `layout_free`: whether it must hold that state
        (by default, whether it has begun to)."""
        if world_size is None:
            try:
                world_size = int(read_meta(folder)["world_size"])
            except (CheckpointError, KeyError, TypeError, ValueError):
                return [META]
        missing = [rng_file(r) for r in range(world_size) if not (folder / rng_file(r)).is_file()]
        if not any(folder.glob("*model_states.pt")):
            missing.append("*model_states.pt")
        if layout_free if layout_free is not None else (folder / CONSOLIDATED).is_dir():
            missing += _missing_layout_free(folder / CONSOLIDATED)
        return missing

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
        with self._writing(folder):
            engine.save_checkpoint(str(self.directory), tag=tag, save_latest=False)  # our state goes in meta.yaml
            with atomic_path(folder / rng_file(rank)) as tmp:
                torch.save(capture_rng_state(), tmp)
            for hook in self.on_files_written:
                hook(folder)
        with self._writing(folder):
            if self.policy.layout_free:
                self._save_layout_free(engine, folder / CONSOLIDATED)
        with self._writing(folder):
            if rank == 0:
                save_config(self.run_config, folder / CONFIG)
        with self._writing(folder):
            write_checksums(folder)
        with self._writing(folder):
            if rank == 0:
                meta = {"step": step, **train_state, "layout": asdict(self.identity.layout),
                        "fingerprints": self.identity.fingerprints, "world_size": dist.get_world_size()}
                write_text_atomic(folder / META, yaml.safe_dump(meta, sort_keys=False))
                self._publish(tag, dist.get_world_size())
        if rank == 0:
            self._apply_retention(tag)
        dist.barrier()
        return folder

    def _save_layout_free(self, engine, folder: Path) -> None:
        """Collective: every rank writes the pieces it owns; rank 0 writes the index of all of them (only
        metadata travels between ranks)."""
        at = _coordinates()
        pieces = deepspeed_state.save_layout_free(engine, folder, at)
        layouts = deepspeed_state.slice_layouts(engine, at.tp_size)
        gathered: list[tuple | None] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, (pieces, layouts))
        if dist.get_rank() == 0:
            all_layouts = {name: layout for _, rank_layouts in gathered for name, layout in rank_layouts.items()}
            index = consolidated.build_index(all_layouts, [p for rank_pieces, _ in gathered for p in rank_pieces],
                                             deepspeed_state.adam_step(engine))
            write_text_atomic(folder / consolidated.INDEX, json.dumps(index))

    @contextlib.contextmanager
    def _writing(self, folder: Path) -> Iterator[None]:
        """Collective: run one part of a save on every rank, then agree on whether any rank failed to write.
        If one did, the folder is removed (`latest` still names the previous checkpoint) and every rank raises
        a CheckpointError saying why, by path, so that no rank waits for another in the next collective."""
        failure = None
        try:
            yield
        except CheckpointError as err:
            failure = str(err)
        except (OSError, RuntimeError) as err:  # torch.save reports a full disk as a RuntimeError
            failure = _describe_write_failure(err, folder)
        failures: list[str | None] = [None] * dist.get_world_size()
        dist.all_gather_object(failures, failure)
        reasons = sorted({reason for reason in failures if reason})
        if not reasons:
            return
        if dist.get_rank() == 0 and folder.exists():
            self._discard(folder)
        dist.barrier()
        kept = self.latest_tag()
        raise CheckpointError(f"saving checkpoint {folder} failed: {'; '.join(reasons)}. Its partial files were "
                              f"removed; {LATEST} still names {kept or 'no checkpoint'}. Free the space, then run "
                              f"the same command again to continue from there")

    def _publish(self, tag: str, world_size: int) -> None:
        folder = self.directory / tag
        missing = self.missing_files(folder, world_size, self.policy.layout_free)
        if missing:
            raise CheckpointError(f"checkpoint {folder} is incomplete, missing: {', '.join(missing)}; "
                                  f"'{LATEST}' still points to the previous checkpoint")
        write_text_atomic(self.directory / LATEST, tag + "\n")

    def mark_best(self, tag: str, record: dict[str, Any]) -> None:
        """Rank 0: name `tag` the best checkpoint so far (`record`: the metric, its value, the step); retention
        keeps it whatever its age."""
        write_text_atomic(self.directory / BEST, json.dumps({"tag": tag, **record}, indent=1) + "\n")

    def best(self) -> dict[str, Any] | None:
        """What `mark_best` last recorded, or None."""
        try:
            return json.loads((self.directory / BEST).read_text())
        except (OSError, ValueError):
            return None

    def _apply_retention(self, newest: str) -> None:
        """Keep the last `keep_last` checkpoints, every `keep_every`-th step and the best; delete the rest."""
        keep_last, keep_every = self.policy.keep_last, self.policy.keep_every
        if keep_last is None:
            return
        tags = sorted(p.name for p in self.directory.glob(f"{TAG_PREFIX}*") if (p / META).is_file())
        recent = set(tags[-keep_last:]) | {newest, (self.best() or {}).get("tag")}
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
        tag, note = self.resume_point()
        if tag is None:
            return None
        if note and dist.get_rank() == 0:
            print(f"roots-train: {note}")
        folder = self.directory / tag
        meta = self.check_resumable(tag)
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
                f"parallel.pipeline={saved.pipeline}, parallel.zero_stage={saved.zero_stage} on "
                f"{saved.tensor * saved.pipeline * saved.data} processes")
        reader = consolidated.LayoutFreeReader(folder / CONSOLIDATED)
        at = _coordinates()
        try:
            check_names(_whole_model_names(engine), dict.fromkeys(reader.names))
            deepspeed_state.load_into_engine(engine, reader, at)
        except ModelError as err:
            raise CheckpointError(f"cannot resume {folder} on the new layout: {err}") from err
        if dist.get_rank() == 0:
            print(f"roots-train: resumed {folder.name} written with {saved} on {self.identity.layout} "
                  f"(layout-free state; RNG streams restart from the seed)")

    def check_resumable(self, tag: str) -> dict[str, Any]:
        """The checkpoint's meta.yaml, once its data fingerprints and config agree with this run's;
        CheckpointError naming each difference otherwise. Reads only: call it before writing anything."""
        folder = self.directory / tag
        meta = read_meta(folder)
        if tag not in self._verified:
            damaged = damaged_files(folder)
            if damaged:
                older = [p.name for p in sorted(self.directory.glob(f"{TAG_PREFIX}*"), reverse=True)
                         if TAG_PATTERN.fullmatch(p.name) and p.name < tag and not self.missing_files(p)]
                instead = (f"The newest older complete checkpoint is {older[0]}: to resume from it, write "
                           f"'{older[0]}' into {self.directory / LATEST}" if older else "No older complete "
                           "checkpoint exists")
                raise CheckpointError(f"checkpoint {folder} is damaged: {'; '.join(damaged[:10])}. {instead}")
            self._verified.add(tag)
        self._check_fingerprints(folder, meta.get("fingerprints", {}))
        config_file = folder / CONFIG
        if not self.policy.allow_config_change and config_file.is_file():
            changes = refused_changes(load_config(config_file), self.run_config)
            if changes:
                raise CheckpointError(
                    f"this run's config differs from checkpoint {folder}'s in what it trains: {'; '.join(changes)}. "
                    f"Continuing would reinterpret its weights or change its data order; restore those values, "
                    f"use another run.output_dir, or set checkpoint.allow_config_change=true to continue on purpose")
        return meta

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


def _describe_write_failure(err: Exception, folder: Path) -> str:
    """'no space left on device (PATH)' when the disk is full, else the error itself with its path."""
    try:
        full = shutil.disk_usage(folder.parent).free < 16 * 2**20
    except OSError:
        full = False
    if getattr(err, "errno", None) == errno.ENOSPC or "No space left" in str(err) or full:
        return f"no space left on device ({getattr(err, 'filename', None) or folder})"
    return f"{getattr(err, 'filename', None) or folder}: {err}"


def read_meta(folder: Path) -> dict[str, Any]:
    """A checkpoint's meta.yaml; CheckpointError naming it when it is missing or not what a save writes."""
    path = folder / META
    try:
        meta = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise CheckpointError(f"{path} is unreadable ({err}); a complete checkpoint has it") from None
    if not isinstance(meta, dict) or not {"step", "layout", "world_size"} <= meta.keys():
        raise CheckpointError(f"{path} is damaged: expected a mapping with step, layout and world_size")
    return meta


def _coordinates() -> deepspeed_state.Coordinates:
    """Where this process sits in the layout, from megatron-core's groups."""
    ps = parallel_state
    return deepspeed_state.Coordinates(
        ps.get_tensor_model_parallel_rank(), ps.get_tensor_model_parallel_world_size(),
        ps.get_pipeline_model_parallel_rank(), ps.get_pipeline_model_parallel_world_size(),
        dist.get_rank(group=ps.get_data_parallel_group()), dist.get_world_size(group=ps.get_data_parallel_group()),
        dist.get_rank())


def _missing_layout_free(folder: Path) -> list[str]:
    """What a layout-free folder lacks: its index, or a rank file the index names."""
    try:
        files = consolidated.LayoutFreeReader(folder).files()
    except CheckpointError:
        return [f"{CONSOLIDATED}/{consolidated.INDEX}"]
    return [f"{CONSOLIDATED}/{name}" for name in files if not (folder / name).is_file()]


def _whole_model_names(engine) -> set[str]:
    """The parameter names of the whole model: this rank's, joined with the other pipeline stages'. Collective."""
    names = {name for name, _ in model_parameters(engine.module)}
    group = parallel_state.get_pipeline_model_parallel_group()
    if dist.get_world_size(group=group) == 1:
        return names
    stages: list[set[str] | None] = [None] * dist.get_world_size(group=group)
    dist.all_gather_object(stages, names, group=group)
    return set().union(*stages)
