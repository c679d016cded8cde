"""Labelled columns to fixed-length token samples: classification inputs with a class index, and text-to-text
windows whose loss falls on the target tokens only.

Classification: BERT reads `[CLS] a [SEP]` (`[CLS] a [SEP] b [SEP]` for pairs, token types 0 then 1), GPT reads
`a [SEP] b` then an end-of-document token whose final hidden state the head classifies. Texts longer than the
context are cut at the end (the longer of a pair first) and counted. Text-to-text: the prompt (the template
around the source), then the target and an end-of-document token; a prompt that leaves no room for the target is
an error, a target that runs past the context is cut and counted.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from roots_core.tokenizer import Tokenizer
from roots_scale.config import Config, FinetuneConfig
from roots_scale.finetune.errors import FinetuneError
from roots_scale.finetune.records import Columns, read_columns


def label_names(columns: Columns, field_name: str) -> list[str]:
    """The classes of a training file: its distinct labels, integers in numeric order, else sorted as text."""
    values = columns.column(field_name, (int, str), "a label")
    distinct = set(values)
    if all(isinstance(value, int) for value in distinct):
        return [str(value) for value in sorted(distinct)]
    return sorted(str(value) for value in distinct)


def label_indices(columns: Columns, field_name: str, names: Sequence[str]) -> np.ndarray:
    """Each row's class index in `names`; FinetuneError naming the row of a label that is not a known class."""
    index = {name: position for position, name in enumerate(names)}
    labels = []
    for row, value in enumerate(columns.column(field_name, (int, str), "a label")):
        if str(value) not in index:
            raise FinetuneError(f"{columns.row_name(row)}: label {value!r} is not one of the {len(names)} classes "
                                f"the model was trained on ({', '.join(names[:20])})")
        labels.append(index[str(value)])
    return np.asarray(labels, dtype=np.int64)


@dataclass
class Encoded:
    """Samples of one file, and how many rows had to be cut to fit the context."""

    samples: list[dict[str, np.ndarray]]
    truncated: int = 0
    prompts: list[list[int]] = field(default_factory=list)  # text-to-text: what the model reads before it writes
    references: list[str] = field(default_factory=list)  # text-to-text: the targets, as text


def _padded(ids: Sequence[int], length: int, pad: int) -> np.ndarray:
    out = np.full(length, pad, dtype=np.int64)
    out[:len(ids)] = ids
    return out


def _texts(columns: Columns, cfg: FinetuneConfig) -> tuple[list[str], list[str] | None]:
    """The text column, or the two columns of a pair when the file has both."""
    first, second = cfg.text_pair_fields
    if first in columns.values and second in columns.values:
        return columns.column(first, str, "a text"), columns.column(second, str, "a text")
    if cfg.text_field not in columns.values:
        raise FinetuneError(f"{columns.path} has neither a {cfg.text_field!r} column nor the pair {first!r}, "
                            f"{second!r} (finetune.text_field, finetune.text_pair_fields); its columns are "
                            f"{', '.join(sorted(columns.values))}")
    return columns.column(cfg.text_field, str, "a text"), None


def _fit_pair(a: list[int], b: list[int], budget: int) -> tuple[list[int], list[int], bool]:
    """Cut the longer of `a` and `b` at its end, one token at a time, until both fit `budget`."""
    if len(a) + len(b) <= budget:
        return a, b, False
    a, b = list(a), list(b)
    while len(a) + len(b) > budget:
        (a if len(a) >= len(b) else b).pop()
    return a, b, True


def classification(columns: Columns, cfg: FinetuneConfig, names: Sequence[str], tokenizer: Tokenizer, arch: str,
                   seq_length: int) -> Encoded:
    """Fixed-length classification samples (`input_ids`, `attention_mask`, BERT's `token_type_ids`, `label`)."""
    first, second = _texts(columns, cfg)
    labels = label_indices(columns, cfg.label_field, names)
    special = tokenizer.special_tokens
    firsts = tokenizer.encode_batch(first)
    seconds = tokenizer.encode_batch(second) if second is not None else [np.zeros(0, np.int32)] * len(first)
    pair = second is not None
    encoded = Encoded([])
    for a, b, label in zip(firsts, seconds, labels):
        if arch == "bert":  # [CLS] a [SEP] (b [SEP])
            a, b, cut = _fit_pair(a.tolist(), b.tolist(), seq_length - 2 - pair)
            ids = [special["cls"], *a, special["sep"]] + ([*b, special["sep"]] if pair else [])
            types = [0] * (len(a) + 2) + [1] * (len(ids) - len(a) - 2)
        else:  # a ([SEP] b) [EOD]: the head reads the last token's hidden state
            a, b, cut = _fit_pair(a.tolist(), b.tolist(), seq_length - 1 - pair)
            ids = [*a, special["sep"], *b, special["eod"]] if pair else [*a, special["eod"]]
            types = None
        sample = {"input_ids": _padded(ids, seq_length, special["pad"]),
                  "attention_mask": _padded([1] * len(ids), seq_length, 0), "label": np.int64(label)}
        if types is not None:
            sample["token_type_ids"] = _padded(types, seq_length, 0)
        encoded.samples.append(sample)
        encoded.truncated += cut
    return encoded


def check_template(template: str) -> None:
    """FinetuneError unless the seq2seq prompt template places the source once, with no other field."""
    try:
        rendered = template.format(source="\0")
    except (KeyError, IndexError, ValueError) as err:
        raise FinetuneError(f"finetune.prompt_template = {template!r} is invalid ({err!r}): write the source as "
                            f"{{source}} and any literal brace doubled, e.g. "
                            f"'Translate to Chinese: {{source}}\\n'") from None
    if rendered.count("\0") != 1:
        raise FinetuneError(f"finetune.prompt_template = {template!r} must contain {{source}} exactly once")


def seq2seq(columns: Columns, cfg: FinetuneConfig, tokenizer: Tokenizer, seq_length: int) -> Encoded:
    """Text-to-text windows (`tokens`, `labels` shifted by one, `loss_mask` on target tokens), with the prompts
    and reference texts that validation decodes from and scores against."""
    sources = columns.column(cfg.source_field, str, "a source text")
    targets = columns.column(cfg.target_field, str, "a target text")
    special = tokenizer.special_tokens
    prompts = tokenizer.encode_batch([cfg.prompt_template.format(source=source) for source in sources])
    encoded = Encoded([], references=list(targets))
    for row, (prompt, target) in enumerate(zip(prompts, tokenizer.encode_batch(targets))):
        prompt = prompt.tolist()
        if not prompt:
            raise FinetuneError(f"{columns.row_name(row)}: the prompt is empty (an empty source with the template "
                                f"{cfg.prompt_template!r}); give the row a source or drop it")
        if len(prompt) >= seq_length:
            raise FinetuneError(f"{columns.row_name(row)}: the source is {len(prompt)} tokens in its prompt, which "
                                f"leaves no room for a target in the model's context of {seq_length} tokens "
                                f"(model.seq_length); shorten it or drop the row")
        whole = [*prompt, *target.tolist(), special["eod"]]
        encoded.truncated += len(whole) > seq_length + 1
        whole = whole[:seq_length + 1]
        mask = [0] * (len(prompt) - 1) + [1] * (len(whole) - len(prompt))  # predicting target tokens and eod
        encoded.samples.append({"tokens": _padded(whole[:-1], seq_length, special["pad"]),
                                "labels": _padded(whole[1:], seq_length, special["pad"]),
                                "loss_mask": _padded(mask, seq_length, 0)})
        encoded.prompts.append(prompt)
    return encoded


class Shuffled:
    """`total` samples drawn epoch by epoch from `samples`, each epoch in its own seeded order: sample i depends
    only on i, so a resumed run continues with exactly the samples it would have seen."""

    def __init__(self, samples: Sequence[dict[str, np.ndarray]], total: int, seed: int) -> None:
        self.samples = samples
        self.total = total
        self.seed = seed
        self._orders: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return self.total

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        epoch, position = divmod(index, len(self.samples))
        if epoch not in self._orders:
            self._orders[epoch] = np.random.default_rng([self.seed, epoch]).permutation(len(self.samples))
        return self.samples[int(self._orders[epoch][position])]


def encode_file(path: str | Path, cfg: Config, tokenizer: Tokenizer, limit: int | None = None) -> Encoded:
    """The samples of one labelled file for the run's task (the first `limit` rows)."""
    columns = read_columns(path)
    if limit is not None:
        columns = dataclasses.replace(columns, values={k: v[:limit] for k, v in columns.values.items()})
    if cfg.finetune.task == "classification":
        return classification(columns, cfg.finetune, cfg.finetune.labels, tokenizer, cfg.model.arch,
                              cfg.model.seq_length)
    return seq2seq(columns, cfg.finetune, tokenizer, cfg.model.seq_length)
