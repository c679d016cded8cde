"""Labelled passages from document shards: `roots-data make-labels` turns a stage's output into the JSON-lines files
`roots-train finetune` reads (`text`, `label`), each passage labelled by a column of its document (the source it
came from, its language). Train and valid are split by document (no document lends passages to both), or by
passage.
"""

from __future__ import annotations

import argparse
import json
import math
import random
from collections import defaultdict
from pathlib import Path

from data_tools.errors import DataToolsError
from data_tools.shards import iter_batches, list_shards
from roots_core.atomic import write_text_atomic


def passages(text: str, min_words: int, max_words: int) -> list[str]:
    """The document cut into consecutive passages of `max_words` words (lines joined), each of at least
    `min_words` words."""
    words = text.split()
    chunks = [words[start:start + max_words] for start in range(0, len(words), max_words)]
    return [" ".join(chunk) for chunk in chunks if len(chunk) >= min_words]


def make_labels(input_dir: Path, output_dir: Path, label_column: str = "source", valid_fraction: float = 0.2,
                min_words: int = 10, max_words: int = 40, per_document: int = 40, split_by: str = "document",
                seed: int = 0) -> dict[str, dict]:
    """Write `train.jsonl` and `valid.jsonl` under `output_dir`; return the passages per split and label.
    `split_by="document"` holds out whole documents (a fair test of the label itself); "passage" holds out passages,
    so a document can lend to both (its topic then helps, as in the demo)."""
    if not 0 < valid_fraction < 1:
        raise DataToolsError(f"--valid-fraction {valid_fraction} must be between 0 and 1")
    documents: dict[str, list[list[str]]] = defaultdict(list)
    for shard in list_shards(input_dir):
        for batch in iter_batches(shard, ["text", label_column]):
            for text, label in zip(batch.column("text").to_pylist(), batch.column(label_column).to_pylist()):
                found = passages(text, min_words, max_words)[:per_document]
                if label is not None and found:
                    documents[str(label)].append(found)
    if len(documents) < 2:
        raise DataToolsError(f"{input_dir}: documents carry {len(documents)} distinct {label_column!r} value(s) "
                             f"({', '.join(documents) or 'none'}); a classification needs at least 2")
    rng = random.Random(seed)
    rows: dict[str, list[dict]] = {"train": [], "valid": []}
    for label, docs in sorted(documents.items()):
        units = docs if split_by == "document" else [[text] for doc in docs for text in doc]
        if len(units) < 2:
            raise DataToolsError(f"{input_dir}: only one {split_by} has {label_column}={label!r}: it cannot be in "
                                 f"both train and valid")
        rng.shuffle(units)
        held_out = max(1, math.floor(valid_fraction * len(units)))
        for split, chosen in (("valid", units[:held_out]), ("train", units[held_out:])):
            rows[split] += [{"text": text, "label": label} for unit in chosen for text in unit]
    output_dir.mkdir(parents=True, exist_ok=True)
    counts: dict[str, dict] = {}
    for split, split_rows in rows.items():
        rng.shuffle(split_rows)
        write_text_atomic(output_dir / f"{split}.jsonl",
                          "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in split_rows))
        counts[split] = {label: sum(row["label"] == label for row in split_rows) for label in sorted(documents)}
    return counts


def run(args: argparse.Namespace) -> int:
    """The `make-labels` subcommand."""
    counts = make_labels(args.input, args.output, args.label, args.valid_fraction, args.min_words, args.max_words,
                         args.per_document, args.split_by, args.seed)
    for split, per_label in counts.items():
        listed = ", ".join(f"{label} {count}" for label, count in per_label.items())
        print(f"{args.output / (split + '.jsonl')}: {sum(per_label.values())} passages ({listed})")
    return 0


def register(commands) -> None:
    """Add the `make-labels` subcommand to an argparse subparsers object."""
    parser = commands.add_parser("make-labels", help="labelled passages (text, label) for roots-train finetune",
                                 description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", type=Path, required=True, metavar="DIR", help="document shards (any stage)")
    parser.add_argument("--output", type=Path, required=True, metavar="DIR", help="train.jsonl and valid.jsonl")
    parser.add_argument("--label", default="source", help="the document column to label by (default: source)")
    parser.add_argument("--valid-fraction", type=float, default=0.2, help="documents held out (default 0.2)")
    parser.add_argument("--max-words", type=int, default=40, help="words per passage (default 40)")
    parser.add_argument("--min-words", type=int, default=10, help="a shorter last passage is dropped (default 10)")
    parser.add_argument("--per-document", type=int, default=40, help="passages per document at most (default 40)")
    parser.add_argument("--split-by", choices=("document", "passage"), default="document",
                        help="hold out whole documents (default), or passages (a document may lend to both)")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(run=run)
