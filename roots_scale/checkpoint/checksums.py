"""Checksums of every file of a checkpoint: written with it, verified before it is loaded, so that a damaged
or missing file is found (and named) before any of it reaches the model, not by a loader's traceback.

The work is shared: rank r hashes every world_size-th file, and the ranks exchange what they found.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch.distributed as dist

from roots_core.atomic import write_text_atomic
from roots_scale.checkpoint.files import CHECKSUMS, META

UNHASHED = {CHECKSUMS, META}  # meta.yaml is written after the checksums, last, and checked when parsed


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and p.name not in UNHASHED)


def write_checksums(folder: Path) -> None:
    """Collective: hash the folder's files (shared among the ranks); rank 0 writes checksums.json."""
    names = _files(folder)
    rank, world = dist.get_rank(), dist.get_world_size()
    mine = {name: [(folder / name).stat().st_size, sha256_of(folder / name)] for name in names[rank::world]}
    shares: list[dict] = [None] * world  # type: ignore[list-item]
    dist.all_gather_object(shares, mine)
    if rank == 0:
        table = {name: entry for share in shares for name, entry in share.items()}
        write_text_atomic(folder / CHECKSUMS, json.dumps(dict(sorted(table.items())), indent=0) + "\n")


def damaged_files(folder: Path) -> list[str]:
    """Collective: every file of the folder that is missing, of the wrong size or the wrong hash, by path;
    empty when all agree with checksums.json (or when the folder has none: written before checksums)."""
    table_file = folder / CHECKSUMS
    if not table_file.is_file():
        return []
    try:
        table = json.loads(table_file.read_text())
    except (OSError, ValueError) as err:
        return [f"{table_file} is unreadable ({err})"]
    mine = []
    for name, (size, _) in table.items():  # the fast check, on every rank: sizes
        path = folder / name
        if not path.is_file():
            mine.append(f"{path} is missing")
        elif path.stat().st_size != size:
            mine.append(f"{path} has {path.stat().st_size} bytes, not {size}")
    rank, world = dist.get_rank(), dist.get_world_size()
    if not mine:  # then the hashes, shared among the ranks
        for name, (_, digest) in sorted(table.items())[rank::world]:
            actual = sha256_of(folder / name)
            if actual != digest:
                mine.append(f"{folder / name} has sha256 {actual}, not {digest}")
    shares: list[list[str]] = [None] * world  # type: ignore[list-item]
    dist.all_gather_object(shares, mine)  # every rank takes part, whatever it found (no rank left waiting)
    return sorted({problem for share in shares for problem in share})
