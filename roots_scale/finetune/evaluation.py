"""Scoring a fine-tuned model on labelled rows: class predictions, or greedy decoding, then the task's metrics.

The same evaluators serve training (inside the DeepSpeed engine, the rows shared out over the data-parallel
ranks, `Shard`) and `roots-train evaluate` (one process). Every data-parallel rank runs the same number of
forward passes (ZeRO-3 gathers weights collectively inside them), and every rank ends with the same metrics.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from megatron.core import tensor_parallel

from roots_core.tokenizer import Tokenizer
from roots_scale.config import Config
from roots_scale.data.loader import collate
from roots_scale.finetune.examples import Encoded
from roots_scale.finetune.metrics import classification_metrics, confusion, text_metrics

Forward = Callable[..., torch.Tensor]  # the model (or engine) called with a collated batch's fields


@dataclass
class Shard:
    """This process's share of the rows: every `size`-th row from `rank`, in equal numbers of batches."""

    rank: int = 0
    size: int = 1
    group: object = None

    def batches(self, rows: int, batch_size: int) -> list[list[int]]:
        """This rank's batches of row indices; a rank with fewer rows repeats its last batch's rows (marked by the
        caller as not its own through `owned`) so that every rank makes as many forward passes."""
        mine = list(range(self.rank, rows, self.size))
        count = math.ceil(math.ceil(rows / self.size) / batch_size)
        batches = [mine[start:start + batch_size] for start in range(0, len(mine), batch_size)]
        filler = mine[:1] or [0]
        return batches + [filler] * (count - len(batches))

    def owned(self, batch_index: int, rows: int, batch_size: int) -> bool:
        """Whether batch `batch_index` holds rows of this rank (rather than filler)."""
        return batch_index * batch_size < len(range(self.rank, rows, self.size))

    def gather(self, items: list) -> list:
        """Every rank's `items`, concatenated (all ranks get all)."""
        if self.size == 1:
            return items
        gathered: list[list | None] = [None] * self.size
        dist.all_gather_object(gathered, items, group=self.group)
        return [item for part in gathered for item in part]

    def all_true(self, flag: bool) -> bool:
        """Whether `flag` holds on every rank."""
        if self.size == 1:
            return flag
        value = torch.tensor([int(flag)])
        dist.all_reduce(value, op=dist.ReduceOp.MIN, group=self.group)
        return bool(value.item())


@dataclass
class Evaluation:
    """A task's metrics on the validation rows (unprefixed names), and what a report adds (the confusion matrix,
    the decoded texts)."""

    metrics: dict[str, float]
    details: dict = field(default_factory=dict)


def _device_batch(samples: Sequence[dict[str, np.ndarray]], device: torch.device) -> dict[str, torch.Tensor]:
    return {key: value.to(device) for key, value in collate(list(samples)).items()}


@torch.no_grad()
def evaluate_classification(forward: Forward, valid: Encoded, num_classes: int, shard: Shard, batch_size: int,
                            device: torch.device) -> Evaluation:
    """Predicted classes of every validation row; accuracy, precision, recall, F1, loss and the confusion matrix."""
    rows = len(valid.samples)
    results = []
    for index, batch_rows in enumerate(shard.batches(rows, batch_size)):
        batch = _device_batch([valid.samples[row] for row in batch_rows], device)
        labels = batch.pop("label")
        logits = forward(**batch).float()
        if shard.owned(index, rows, batch_size):
            losses = F.cross_entropy(logits, labels, reduction="none")
            results += [(row, int(prediction), int(label), float(loss)) for row, prediction, label, loss
                        in zip(batch_rows, logits.argmax(-1).tolist(), labels.tolist(), losses.tolist())]
    results = sorted(shard.gather(results))
    true = [label for _, _, label, _ in results]
    predicted = [prediction for _, prediction, _, _ in results]
    metrics = {**classification_metrics(true, predicted, num_classes),
               "loss": float(np.mean([loss for *_, loss in results]))}
    return Evaluation(metrics, {"confusion": confusion(true, predicted, num_classes), "predictions": predicted})


@torch.no_grad()
def greedy_decode(forward: Forward, prompts: Sequence[Sequence[int]], max_new_tokens: int, context: int,
                  vocab_size: int, tokens: dict[str, int], shard: Shard, device: torch.device) -> list[list[int]]:
    """Greedy continuations of a batch of prompts, each until end-of-document or `max_new_tokens`; the logits may
    be vocab-parallel (they are gathered over the tensor-parallel group). Rows are right-padded: with causal
    attention the padding never reaches a real token's logits."""
    rows = [list(prompt) for prompt in prompts]
    new: list[list[int]] = [[] for _ in prompts]
    done = [False] * len(rows)
    for _ in range(max_new_tokens):
        if shard.all_true(all(done)):
            break
        windows = [row[-context:] for row in rows]
        batch = torch.full((len(windows), max(map(len, windows))), tokens["pad"], dtype=torch.long)
        for index, window in enumerate(windows):
            batch[index, :len(window)] = torch.tensor(window)
        logits = forward(tokens=batch.to(device))
        last = logits[torch.arange(len(windows)), torch.tensor([len(w) - 1 for w in windows])]
        full = tensor_parallel.gather_from_tensor_model_parallel_region(last.float())
        for index, token in enumerate(full[:, :vocab_size].argmax(-1).tolist()):
            if not done[index]:
                rows[index].append(token)
                new[index].append(token)
                done[index] = token == tokens["eod"]
    return [ids[:-1] if ids and ids[-1] == tokens["eod"] else ids for ids in new]


@torch.no_grad()
def evaluate_text(forward: Forward, valid: Encoded, tokenizer: Tokenizer, bleu_tokenize: str, max_new_tokens: int,
                  context: int, shard: Shard, batch_size: int, device: torch.device) -> Evaluation:
    """Greedy decoding of every validation prompt; BLEU and chrF against the references, and the target loss."""
    rows = len(valid.samples)
    results = []
    for index, batch_rows in enumerate(shard.batches(rows, batch_size)):
        batch = _device_batch([valid.samples[row] for row in batch_rows], device)
        loss = float(forward(**batch))
        weight = float(batch["loss_mask"].sum())
        decoded = greedy_decode(forward, [valid.prompts[row] for row in batch_rows], max_new_tokens, context,
                                tokenizer.vocab_size, tokenizer.special_tokens, shard, device)
        if shard.owned(index, rows, batch_size):
            texts = [tokenizer.decode(ids) for ids in decoded]
            results += [(row, text, loss * weight / len(batch_rows), weight / len(batch_rows))
                        for row, text in zip(batch_rows, texts)]
    results = sorted(shard.gather(results))
    hypotheses = [text for _, text, _, _ in results]
    metrics = {**text_metrics(hypotheses, valid.references, bleu_tokenize),
               "loss": sum(loss for *_, loss, _ in results) / max(sum(weight for *_, weight in results), 1.0)}
    return Evaluation(metrics, {"hypotheses": hypotheses})


def task_evaluator(cfg: Config, valid: Encoded, tokenizer: Tokenizer, shard: Shard, batch_size: int
                   ) -> Callable[[Forward, torch.device], Evaluation]:
    """The task's evaluation of `valid` through a forward function (the engine, or a model)."""
    ft = cfg.finetune
    if ft.task == "classification":
        return lambda forward, device: evaluate_classification(forward, valid, len(ft.labels), shard, batch_size,
                                                               device)
    return lambda forward, device: evaluate_text(forward, valid, tokenizer, ft.bleu_tokenize, ft.max_target_tokens,
                                                 cfg.model.seq_length, shard, batch_size, device)
