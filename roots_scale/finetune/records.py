"""Labelled files as columns: JSON lines, CSV, Parquet, or a directory written by datasets' `save_to_disk`.

Every file a fine-tuning run reads goes through `read_columns`, which names the file, the column and the row
(1-based, as an editor shows a JSON-lines or CSV file: CSV counts its header as line 1) of any problem.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from roots_scale.finetune.errors import FinetuneError

FORMATS = {".jsonl": "JSON lines", ".json": "JSON lines", ".csv": "CSV", ".parquet": "Parquet"}


@dataclass(frozen=True)
class Columns:
    """The columns of one labelled file, as Python lists of equal length."""

    path: Path
    values: dict[str, list]

    def __len__(self) -> int:
        return len(next(iter(self.values.values()), []))

    def row_name(self, index: int) -> str:
        """How a user finds row `index` (0-based) in the file."""
        if self.path.suffix == ".csv":
            return f"{self.path} line {index + 2}"
        if self.path.suffix in (".jsonl", ".json"):
            return f"{self.path} line {index + 1}"
        return f"{self.path} row {index}"

    def column(self, name: str, kind: type | tuple[type, ...], what: str) -> list:
        """Column `name`, every value of type `kind`; FinetuneError naming the file, the row and the value."""
        if name not in self.values:
            raise FinetuneError(f"{self.path} has no column {name!r} ({what}); its columns are "
                                    f"{', '.join(sorted(self.values))}")
        values = self.values[name]
        for index, value in enumerate(values):
            if not isinstance(value, kind) or isinstance(value, bool):
                names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
                raise FinetuneError(f"{self.row_name(index)}: {name!r} is {value!r}; {what} must be {names}")
        return values


def read_columns(path: str | Path) -> Columns:
    """The columns of a labelled file (by extension) or a saved Hugging Face dataset directory."""
    path = Path(path)
    if not path.exists():
        raise FinetuneError(f"{path} does not exist")
    try:
        table = _read_directory(path) if path.is_dir() else _read_file(path)
    except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeDecodeError, OSError) as err:
        kind = FORMATS.get(path.suffix, "a saved dataset")
        raise FinetuneError(f"{path} is not readable as {kind}: {str(err).splitlines()[0]}") from None
    if table.num_rows == 0:
        raise FinetuneError(f"{path} holds no rows")
    return Columns(path, {name: table.column(name).to_pylist() for name in table.column_names})


def _read_file(path: Path) -> pa.Table:
    if path.suffix not in FORMATS:
        raise FinetuneError(f"{path}: unknown format {path.suffix!r}; use .jsonl, .csv, .parquet or a "
                                f"directory saved with datasets' save_to_disk")
    if path.stat().st_size == 0:
        raise FinetuneError(f"{path} is empty")
    if path.suffix == ".parquet":
        return pq.read_table(path)
    if path.suffix == ".csv":  # labels and texts as written: no guessing of dates or numbers in text columns
        return pa_csv.read_csv(path, convert_options=pa_csv.ConvertOptions(strings_can_be_null=False))
    return pa_json.read_json(path)


def _read_directory(path: Path) -> pa.Table:
    import datasets  # noqa: PLC0415 - slow to import, and only a saved dataset needs it

    try:
        loaded = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as err:
        raise FinetuneError(f"{path} is a directory but not a dataset saved with save_to_disk ({err})") from None
    if isinstance(loaded, datasets.DatasetDict):
        raise FinetuneError(f"{path} holds the splits {', '.join(loaded)}: name one split's directory, e.g. "
                                f"{path / next(iter(loaded))}")
    return loaded.data.table


def fingerprint(path: str | Path) -> str:
    """The sha256 of a labelled file (of every file in a saved dataset directory): what a resume checks."""
    path = Path(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]:
        digest.update(file.relative_to(path).as_posix().encode() if path.is_dir() else b"")
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()
