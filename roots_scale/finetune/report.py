"""`roots-train evaluate` on a fine-tuned checkpoint: its task's metrics on a labelled file, in one process, as the
run's validation computes them (the same encoding and evaluator), printed as a table or written as JSON."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from roots_core.errors import TokenizerError
from roots_core.tokenizer import Tokenizer
from roots_scale.config import Config
from roots_scale.finetune.errors import FinetuneError
from roots_scale.finetune.evaluation import Evaluation, Shard, task_evaluator
from roots_scale.finetune.examples import encode_file
from roots_scale.finetune.metrics import confusion_table, metrics_table


def evaluate_labelled(model: nn.Module, cfg: Config, path: str | Path, batch_size: int,
                      device: torch.device | str) -> Evaluation:
    """The fine-tuned `model`'s metrics on the labelled file at `path` (every row)."""
    try:
        tokenizer = Tokenizer(cfg.finetune.tokenizer)
    except TokenizerError as err:
        raise FinetuneError(f"the checkpoint's tokenizer (finetune.tokenizer): {err}") from None
    data = encode_file(path, cfg, tokenizer)
    model.eval()
    with torch.no_grad():
        return task_evaluator(cfg, data, tokenizer, Shard(), batch_size)(model, torch.device(device))


def format_report(evaluation: Evaluation, cfg: Config) -> str:
    """The metrics, then (classification) the confusion matrix with the class names."""
    text = metrics_table(evaluation.metrics)
    if "confusion" in evaluation.details:
        text += "\n\n" + confusion_table(evaluation.details["confusion"], cfg.finetune.labels)
    return text
