"""Train the tokenizer: a lossless sentencepiece model on a balanced sample of document shards.

(Loading one back is `roots_core.tokenizer.Tokenizer`, shared with training and inference.)

Lossless means decode(encode(text)) == text for any text: identity normalization, no dummy
prefix, whitespace kept as is, and byte fallback for characters outside the vocabulary. (One
exception is sentencepiece's own: U+2581 "▁", its whitespace marker, decodes as a space.)
Special ids are fixed, whatever the corpus: pad=0, unk=1, eod=2 (sentencepiece's eos, the
end-of-document token), mask=3, cls=4, sep=5; there is no bos.

The training sample can be balanced by source or language, as ROOTS balanced its tokenizer
corpus: one seeded reservoir per group (so memory is bounded by the sample size), each group's
quota `max_sentences × weight`, the weight given (`--proportions`) or proportional to the group's
size^(1/T) (temperature sampling: T=1 keeps natural proportions, larger T flattens them). A group
with fewer sentences than its quota gives all it has, and the shortfall goes to the other groups
by weight, so the sample keeps its size.
"""

from __future__ import annotations

import argparse
import io
import math
import os
import random
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import sentencepiece as spm

from data_tools.errors import DataToolsError
from data_tools.shards import iter_batches, list_shards
from roots_core.atomic import write_bytes_atomic
from roots_core.tokenizer import SPECIAL_TOKENS, Tokenizer, model_proto

_USER_DEFINED_SYMBOLS = ("<mask>", "<cls>", "<sep>")
MODEL_TYPES = ("bpe", "unigram")
BALANCE_BY = ("none", "source", "lang")
ALL = "all"  # the one group when the sample is not balanced
UNKNOWN_LANGUAGE = "und"  # the group of documents whose lang is null
MAX_SENTENCE_LENGTH = 4192  # bytes; sentencepiece's own default
_MIN_VOCAB_SIZE = len(SPECIAL_TOKENS) + 256 + 1  # specials + the 256 byte-fallback pieces + one more


class Sample(NamedTuple):
    """A tokenizer training sample: its sentences in corpus order, and per group how many were used of how many."""

    sentences: list[str]
    balance_by: str
    used: dict[str, int]
    available: dict[str, int]


def sample_sentences(
    docs_dir: Path,
    max_sentences: int = 2_000_000,
    balance_by: str = "none",
    proportions: dict[str, float] | None = None,
    temperature: float | None = None,
    max_sentence_length: int = MAX_SENTENCE_LENGTH,
    seed: int = 0,
) -> Sample:
    """A deterministic sample of at most `max_sentences` lines of the shards in `docs_dir`, balanced by group.

    Documents are split into lines; blank lines are dropped and longer lines are cut into pieces
    of at most `max_sentence_length` UTF-8 bytes. Balanced samples read the shards twice: once to
    count each group's lines (for the quotas), once to fill the reservoirs.
    """
    if max_sentences < 1:
        raise DataToolsError(f"max sentences must be at least 1, got {max_sentences}")
    if max_sentence_length < 4:
        raise DataToolsError(f"max sentence length must be at least 4 bytes (one character), got {max_sentence_length}")
    if balance_by not in BALANCE_BY:
        raise DataToolsError(f"--balance-by {balance_by!r} is not supported; use one of {', '.join(BALANCE_BY)}")
    if balance_by == "none" and (proportions is not None or temperature is not None):
        raise DataToolsError("--proportions and --temperature weigh groups: they need --balance-by source or lang")
    if proportions is not None and temperature is not None:
        raise DataToolsError("give --proportions or --temperature, not both (the temperature sets default weights)")
    if temperature is not None and not (math.isfinite(temperature) and temperature > 0):
        raise DataToolsError(f"--temperature must be a positive number, got {temperature}")
    if balance_by == "none":
        quotas = {ALL: max_sentences}
    else:
        sizes = Counter(group for group, _ in _sentences(docs_dir, balance_by, max_sentence_length))
        weights = _weights(sizes, proportions, 1.0 if temperature is None else temperature, balance_by, docs_dir)
        quotas = _quotas(sizes, weights, max_sentences)
    reservoirs = {group: _Reservoir(quota, random.Random(f"{seed}:{group}")) for group, quota in quotas.items()}
    for index, (group, sentence) in enumerate(_sentences(docs_dir, balance_by, max_sentence_length)):
        reservoirs[group].offer(index, sentence)
    kept = sorted(item for reservoir in reservoirs.values() for item in reservoir.items)
    return Sample(
        [sentence for _, sentence in kept],
        balance_by,
        {group: len(reservoir.items) for group, reservoir in sorted(reservoirs.items())},
        {group: reservoir.seen for group, reservoir in sorted(reservoirs.items())},
    )


class _Reservoir:
    """A seeded uniform sample (Algorithm R) of at most `capacity` items, in bounded memory."""

    def __init__(self, capacity: int, rng: random.Random) -> None:
        """An empty reservoir."""
        self.capacity, self.rng = capacity, rng
        self.items: list[tuple[int, str]] = []
        self.seen = 0

    def offer(self, index: int, sentence: str) -> None:
        """Consider the `index`-th sentence of the corpus for the sample."""
        if len(self.items) < self.capacity:
            self.items.append((index, sentence))
        else:
            slot = self.rng.randint(0, self.seen)
            if slot < self.capacity:
                self.items[slot] = (index, sentence)
        self.seen += 1


def _weights(
    sizes: Counter, proportions: dict[str, float] | None, temperature: float, balance_by: str, docs_dir: Path
) -> dict[str, float]:
    """Each group's share of the sample: the given proportions, else size^(1/temperature), normalized."""
    found = ", ".join(f"{group} ({count:,} lines)" for group, count in sorted(sizes.items()))
    if proportions is None:
        raw = {group: count ** (1 / temperature) for group, count in sizes.items()}
    else:
        unlisted = sorted(set(sizes) - set(proportions))
        if unlisted:
            raise DataToolsError(f"--proportions gives no weight to {balance_by} group(s) {', '.join(unlisted)}; "
                                 f"the groups in {docs_dir} are: {found}")
        unknown = sorted(set(proportions) - set(sizes))
        if unknown:
            raise DataToolsError(f"--proportions names {balance_by} group(s) {', '.join(unknown)} that {docs_dir} "
                                 f"does not have; the groups there are: {found}")
        raw = {group: proportions[group] for group in sizes}
    total = sum(raw.values())
    if total <= 0:
        raise DataToolsError(f"--proportions gives every {balance_by} group weight 0; the groups are: {found}")
    return {group: weight / total for group, weight in raw.items()}


def _quotas(sizes: Counter, weights: dict[str, float], budget: int) -> dict[str, int]:
    """Each group's number of sentences: budget × weight, capped at its size, the shortfall shared by weight."""
    quotas = {group: 0 for group in sizes}
    open_groups = sorted(group for group, weight in weights.items() if weight > 0)
    ideal: dict[str, float] = {}
    while open_groups:
        total = sum(weights[group] for group in open_groups)
        ideal = {group: budget * weights[group] / total for group in open_groups}
        full = [group for group in open_groups if ideal[group] >= sizes[group]]
        if not full:
            break
        for group in full:
            quotas[group] = sizes[group]
            budget -= sizes[group]
        open_groups = [group for group in open_groups if group not in full]
    for group in open_groups:  # the largest-remainder method: integer quotas summing to the budget
        quotas[group] = int(ideal[group])
    leftover = budget - sum(quotas[group] for group in open_groups)
    for group in sorted(open_groups, key=lambda g: (quotas[g] - ideal[g], g))[: max(leftover, 0)]:
        quotas[group] += 1
    return quotas


def _sentences(docs_dir: Path, balance_by: str, max_sentence_length: int) -> Iterator[tuple[str, str]]:
    """(group, line) for every non-blank line of every document, in shard order, cut to `max_sentence_length` bytes."""
    columns = ["text"] if balance_by == "none" else ["text", balance_by]
    for shard in list_shards(docs_dir):
        for batch in iter_batches(shard, columns):
            texts = batch.column(0).to_pylist()
            groups = [ALL] * len(texts) if balance_by == "none" else batch.column(1).to_pylist()
            for text, group in zip(texts, groups):
                group = group or UNKNOWN_LANGUAGE
                for line in text.split("\n"):
                    if line.strip():
                        for piece in _cut(line, max_sentence_length):
                            yield group, piece


def _cut(line: str, max_bytes: int) -> Iterator[str]:
    """`line` in consecutive pieces of at most `max_bytes` UTF-8 bytes, cut between characters."""
    encoded = line.encode("utf-8")
    start = 0
    while start < len(encoded):
        end = min(start + max_bytes, len(encoded))
        while end < len(encoded) and encoded[end] & 0xC0 == 0x80:  # a continuation byte: back off
            end -= 1
        yield encoded[start:end].decode("utf-8")
        start = end


def train_tokenizer(
    docs_dir: Path,
    prefix: Path,
    vocab_size: int,
    model_type: str = "bpe",
    max_sentences: int = 2_000_000,
    balance_by: str = "none",
    proportions: dict[str, float] | None = None,
    temperature: float | None = None,
    report: Callable[[Sample], None] | None = None,
) -> Path:
    """Train sentencepiece on a sample of `docs_dir`; write PREFIX.model and PREFIX.vocab; return the .model path.

    `report`, if given, sees the sample before training starts (the CLI prints its group counts).
    """
    if model_type not in MODEL_TYPES:
        raise DataToolsError(f"model type {model_type!r} is not supported; use one of {', '.join(MODEL_TYPES)}")
    if vocab_size < _MIN_VOCAB_SIZE:
        raise DataToolsError(
            f"vocab size {vocab_size} is too small: at least {_MIN_VOCAB_SIZE} "
            f"({len(SPECIAL_TOKENS)} special tokens + 256 byte-fallback pieces + 1)"
        )
    sample = sample_sentences(docs_dir, max_sentences, balance_by, proportions, temperature)
    if not sample.sentences:
        raise DataToolsError(f"the document shards in {docs_dir} contain no text to train a tokenizer on")
    if report is not None:
        report(sample)
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sample.sentences),
            model_writer=model,
            vocab_size=vocab_size,
            model_type=model_type,
            byte_fallback=True,
            normalization_rule_name="identity",
            remove_extra_whitespaces=False,
            add_dummy_prefix=False,
            split_digits=True,
            allow_whitespace_only_pieces=True,
            max_sentence_length=MAX_SENTENCE_LENGTH,
            pad_id=SPECIAL_TOKENS["pad"],
            unk_id=SPECIAL_TOKENS["unk"],
            eos_id=SPECIAL_TOKENS["eod"],
            bos_id=-1,
            user_defined_symbols=list(_USER_DEFINED_SYMBOLS),
            num_threads=os.cpu_count() or 1,
            minloglevel=2,
        )
    except RuntimeError as exc:
        raise DataToolsError(
            f"sentencepiece could not train a {model_type} vocabulary of {vocab_size} on {docs_dir}: {exc} "
            "(a smaller --vocab-size or more text fixes 'Vocabulary size too high')"
        ) from exc
    model_path = Path(f"{prefix}.model")
    write_bytes_atomic(model_path, model.getvalue())
    write_bytes_atomic(Path(f"{prefix}.vocab"), _vocab_file(model.getvalue()))
    return model_path


def _vocab_file(model_bytes: bytes) -> bytes:
    """The `.vocab` text sentencepiece writes beside a model: one `piece<TAB>score` line per id."""
    proto = model_proto(model_bytes)
    return "".join(f"{piece.piece}\t{piece.score:g}\n" for piece in proto.pieces).encode("utf-8")


def parse_proportions(text: str) -> dict[str, float]:
    """`KEY=WEIGHT,...` as a dict (argparse type); weights are finite and ≥ 0, keys distinct."""
    proportions: dict[str, float] = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        try:
            weight = float(value)
        except ValueError:
            weight = math.nan
        if not sep or not key.strip() or not math.isfinite(weight) or weight < 0 or key.strip() in proportions:
            raise argparse.ArgumentTypeError(
                f"{item!r} in {text!r} is not a new KEY=WEIGHT pair; expected e.g. 'wikipedia=0.3,commoncrawl=0.7' "
                "(weights ≥ 0, each key once)")
        proportions[key.strip()] = weight
    return proportions


def _print_sample(sample: Sample) -> None:
    """The per-group sentence counts of a training sample, as a table."""
    total = len(sample.sentences)
    balanced = "" if sample.balance_by == "none" else f" balanced by {sample.balance_by}"
    print(f"tokenizer sample: {total:,} sentences{balanced}")
    print(f"  {'group':<24}{'used':>12}{'available':>12}{'share':>8}")
    for group, used in sample.used.items():
        print(f"  {group:<24}{used:>12,}{sample.available[group]:>12,}{used / total:>8.1%}")


def run(args: argparse.Namespace) -> int:
    """Train the sentencepiece tokenizer and describe it."""
    model_path = train_tokenizer(args.input, args.output, args.vocab_size, args.model_type, args.max_sentences,
                                 args.balance_by, args.proportions, args.temperature, report=_print_sample)
    tokenizer = Tokenizer(model_path)
    print(f"{model_path}: vocab_size {tokenizer.vocab_size}, special ids {tokenizer.special_tokens}, "
          f"fingerprint {tokenizer.fingerprint}")
    return 0


def register(commands) -> None:
    """Add the `train-tokenizer` subcommand to an argparse subparsers object."""
    parser = commands.add_parser("train-tokenizer", help="train a lossless sentencepiece tokenizer on shards")
    parser.add_argument("--input", type=Path, required=True, metavar="DOCS_DIR")
    parser.add_argument("--output", type=Path, required=True, metavar="PREFIX", help="writes PREFIX.model/.vocab")
    parser.add_argument("--vocab-size", type=int, required=True)
    parser.add_argument("--model-type", choices=MODEL_TYPES, default="bpe")
    parser.add_argument("--max-sentences", type=int, default=2_000_000, help="sample at most this many lines")
    parser.add_argument("--balance-by", choices=BALANCE_BY, default="none",
                        help="draw the sample per source or per language (one reservoir per group)")
    parser.add_argument("--proportions", type=parse_proportions, metavar="KEY=WEIGHT,...",
                        help="each group's share of the sample (every group found must be listed)")
    parser.add_argument("--temperature", type=float, metavar="T",
                        help="weights ∝ group size^(1/T) when no --proportions: 1 natural (default), larger flatter")
    parser.set_defaults(run=run)
