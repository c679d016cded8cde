"""The layout-free checkpoint state: fp32 weights and Adam moments that any layout can load, written in shards
that no rank gathers.

DeepSpeed's own files are sharded by the layout that wrote them (pipeline stage × tensor-parallel rank × ZeRO
partition), so they only load into the same layout. Next to them `layout_free/` holds:
- one file per rank, `rank00003.pt`, with only what that rank owns: for each of its parameters, the piece of
  the tensor-parallel slice its ZeRO partition holds (at ZeRO-0, where every replica holds everything, the
  data-parallel ranks take turns by parameter), as fp32 weight and Adam moments, flattened;
- `index.json`, written by rank 0 from every rank's list: per parameter (named as in the whole model), its
  tensor-parallel layout (the TP size, the slice's shape, megatron-core's `partition_dim`/`partition_stride`)
  and where each piece lies (file, TP rank, pipeline stage, flat offset and length in the slice).
A reader on any layout (`LayoutFreeReader`) assembles one full tensor at a time from the pieces, or, where the
saved tensor-parallel cut is the reader's own, copies just the range a rank holds; it reads the files
memory-mapped, so resuming, converting or exporting never needs more than the tensors it asks for.
The files hold only tensors, numbers and strings: they load with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from roots_scale.checkpoint.files import CONFIG, CONSOLIDATED, META, CheckpointError, resolve_checkpoint
from roots_scale.config import Config, load_config
from roots_scale.models.tensor_parallel import merge_shards

MOMENTS = ("exp_avg", "exp_avg_sq")  # the Adam moments saved beside each weight
INDEX = "index.json"


def rank_file(rank: int) -> str:
    return f"rank{rank:05d}.pt"


def piece_key(name: str, tp_rank: int, stage: int, start: int) -> str:
    return f"{name}@tp{tp_rank}@pp{stage}@{start}"


@dataclass(frozen=True)
class Piece:
    """A contiguous piece [start, start + numel) of one parameter's flattened TP slice, held in `file`."""

    name: str
    tp_rank: int
    stage: int
    start: int
    numel: int
    file: str = ""

    @property
    def key(self) -> str:
        return piece_key(self.name, self.tp_rank, self.stage, self.start)


@dataclass(frozen=True)
class SliceLayout:
    """How a parameter is cut across tensor-parallel ranks (`partition` None: every rank holds it whole)."""

    shape: tuple[int, ...]  # of one TP slice
    tp_size: int
    partition: tuple[int, int] | None


def build_index(layouts: dict[str, SliceLayout], pieces: list[Piece], adam_step: int) -> dict:
    """The index of a layout-free folder (`INDEX`), from every rank's slice layouts and pieces."""
    params: dict[str, dict] = {}
    for name, layout in sorted(layouts.items()):
        params[name] = {"shape": list(layout.shape), "tp_size": layout.tp_size,
                        "partition": list(layout.partition) if layout.partition else None, "pieces": []}
    for piece in sorted(pieces, key=lambda p: (p.name, p.stage, p.tp_rank, p.start)):
        params[piece.name]["pieces"].append([piece.file, piece.tp_rank, piece.stage, piece.start, piece.numel])
    return {"version": 2, "adam_step": adam_step, "params": params}


class LayoutFreeReader:
    """Full tensors of a layout-free folder, one at a time, from memory-mapped rank files."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        index_path = self.folder / INDEX
        try:
            self.index = json.loads(index_path.read_text())
        except (OSError, ValueError) as err:
            raise CheckpointError(f"{index_path} is missing or unreadable ({err}); the layout-free state is written "
                                  f"when checkpoint.layout_free is true") from None
        self.adam_step = int(self.index["adam_step"])
        self._files: dict[str, dict] = {}

    @property
    def names(self) -> list[str]:
        return list(self.index["params"])

    def files(self) -> list[str]:
        """Every rank file the index refers to."""
        return sorted({piece[0] for entry in self.index["params"].values() for piece in entry["pieces"]})

    def _file(self, name: str) -> dict:
        if name not in self._files:
            path = self.folder / name
            try:
                self._files[name] = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except (OSError, RuntimeError) as err:
                raise CheckpointError(f"{path} is missing or unreadable ({err})") from None
        return self._files[name]

    def _entry(self, name: str) -> dict:
        if name not in self.index["params"]:
            raise CheckpointError(f"{self.folder / INDEX} has no parameter {name!r}")
        return self.index["params"][name]

    def _pieces(self, name: str, tp_rank: int) -> list[Piece]:
        """The pieces of TP rank `tp_rank`'s slice of `name`, from the first pipeline stage holding it (a tied
        weight is on two stages, alike)."""
        pieces = [Piece(name, tp, stage, start, numel, file)
                  for file, tp, stage, start, numel in self._entry(name)["pieces"]]
        stage = min(piece.stage for piece in pieces)
        return [piece for piece in pieces if piece.tp_rank == tp_rank and piece.stage == stage]

    def slice_shape(self, name: str) -> tuple[int, ...]:
        """The shape of one saved TP slice of `name`."""
        return tuple(self._entry(name)["shape"])

    def source_tp_rank(self, name: str, tp_rank: int, tp_size: int) -> int | None:
        """The saved TP rank whose slice of `name` is TP rank `tp_rank`'s slice on a layout of `tp_size`, or None
        when the saved layout cuts it differently (then only the full tensor, re-sliced, gives it)."""
        entry = self._entry(name)
        if entry["tp_size"] == tp_size:
            return tp_rank
        return 0 if entry["partition"] is None else None

    def read_into(self, out: torch.Tensor, name: str, moment: str | None, tp_rank: int, start: int) -> None:
        """Fill the flat `out` with values [start, start + out.numel()) of TP rank `tp_rank`'s flattened slice of
        `name` (or of its Adam `moment`), copied straight from the memory-mapped pieces that overlap them."""
        end, covered = start + out.numel(), 0
        for piece in self._pieces(name, tp_rank):
            low, high = max(start, piece.start), min(end, piece.start + piece.numel)
            if low < high:
                values = self._file(piece.file)[piece.key][moment or "param"]
                out[low - start:high - start].copy_(values[low - piece.start:high - piece.start])
                covered += high - low
        if covered != out.numel():
            raise CheckpointError(f"{self.folder}: the pieces of {name} (TP rank {tp_rank}) cover {covered} of the "
                                  f"{out.numel()} values asked for; the layout-free state is incomplete")

    def full(self, name: str, moment: str | None = None) -> torch.Tensor:
        """Parameter `name` (or its Adam `moment`) as the full fp32 tensor, merged from its TP slices."""
        entry = self._entry(name)
        shape = self.slice_shape(name)
        numel = int(torch.Size(shape).numel())
        slices = []
        for tp_rank in range(entry["tp_size"]):
            pieces = self._pieces(name, tp_rank)
            if len(pieces) == 1 and pieces[0].numel == numel:  # one rank held it all: the memory-mapped tensor
                flat = self._file(pieces[0].file)[pieces[0].key][moment or "param"]
            else:
                flat = torch.empty(numel, dtype=torch.float32)
                self.read_into(flat, name, moment, tp_rank, 0)
            slices.append(flat.view(shape))
        if entry["partition"] is None:
            return slices[0]
        dim, stride = entry["partition"]
        return merge_shards(slices, dim, stride)


@dataclass
class FullState:
    """A checkpoint's full (unsharded) fp32 weights and Adam moments, keyed by TP=1 parameter names."""

    params: dict[str, torch.Tensor]
    moments: dict[str, dict[str, torch.Tensor]]
    adam_step: int
    step: int
    config: Config


def read_full_state(path: str | Path) -> FullState:
    """The full state of the checkpoint at `path` (see `resolve_checkpoint`), with the run's config."""
    folder = resolve_checkpoint(path)
    reader = LayoutFreeReader(folder / CONSOLIDATED)
    params = {name: reader.full(name) for name in reader.names}
    moments = {name: {moment: reader.full(name, moment) for moment in MOMENTS} for name in reader.names}
    config_file = folder / CONFIG
    if not config_file.is_file():
        raise CheckpointError(f"{config_file} is missing: a checkpoint folder holds the config that wrote it")
    meta = yaml.safe_load((folder / META).read_text()) if (folder / META).is_file() else {}
    return FullState(params, moments, reader.adam_step, int(meta.get("step", 0)), load_config(config_file))
