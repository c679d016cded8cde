"""The models a fine-tuning task trains: the pretrained GPT or BERT, plus a classification head for
`classification` (text-to-text trains the GPT as it is, its loss on the target tokens).

The classifiers subclass the pretrained models, so every pretrained weight keeps its name (a checkpoint loads
by name, and reshaping, conversion and export see the same model) and the head adds `classifier.*`. The head is
one replicated linear layer: on the [CLS] position's pooled state (BERT's pretrained pooler, dense + tanh), or on
the last real token's final hidden state (GPT, as GPT-1 fine-tuned with an appended extract token).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from roots_scale.config import FinetuneConfig, ModelConfig
from roots_scale.models import build_model
from roots_scale.models.bert import BERT
from roots_scale.models.gpt import GPT, layer_count
from roots_scale.models.layers import normal_init

HEAD_PREFIX = "classifier."


def classifier_head(cfg: ModelConfig, num_classes: int) -> nn.Linear:
    head = nn.Linear(cfg.hidden_size, num_classes)
    normal_init(cfg.init_std)(head.weight)
    nn.init.zeros_(head.bias)
    return head


def class_logits_or_loss(head: nn.Linear, pooled: torch.Tensor, label: torch.Tensor | None) -> torch.Tensor:
    """Class logits [batch, classes], or their mean cross-entropy against `label`."""
    logits = head(pooled).float()
    return logits if label is None else F.cross_entropy(logits, label.reshape(-1))


class GPTClassifier(GPT):
    """A GPT whose head classifies the last real token (`attention_mask` marks the real tokens, padding last)."""

    def __init__(self, cfg: ModelConfig, vocab_size: int, tensor_parallel_size: int, num_classes: int,
                 seed: int = 0) -> None:
        super().__init__(cfg, vocab_size, tensor_parallel_size, seed)
        torch.manual_seed(seed + layer_count(cfg))
        self.classifier = classifier_head(cfg, num_classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                label: torch.Tensor | None = None) -> torch.Tensor:
        hidden = self.hidden_states(input_ids)
        last = attention_mask.sum(dim=1) - 1
        pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        return class_logits_or_loss(self.classifier, self.dropout(pooled), label)


class BERTClassifier(BERT):
    """A BERT whose head classifies the pooled [CLS] state."""

    def __init__(self, cfg: ModelConfig, vocab_size: int, tensor_parallel_size: int, num_classes: int,
                 seed: int = 0) -> None:
        torch.manual_seed(seed)
        super().__init__(cfg, vocab_size, tensor_parallel_size)
        self.classifier = classifier_head(cfg, num_classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None, label: torch.Tensor | None = None) -> torch.Tensor:
        hidden = self.encode(input_ids, attention_mask, token_type_ids)
        pooled = torch.tanh(self.pooler(hidden[:, 0]))
        return class_logits_or_loss(self.classifier, self.dropout(pooled), label)


def build_task_model(model: ModelConfig, task: FinetuneConfig, vocab_rows: int, tensor_parallel_size: int = 1,
                     seed: int = 0) -> nn.Module:
    """The model `task` trains: a classifier over `task.labels`, or the GPT itself for text-to-text."""
    if task.task == "classification":
        classifier = BERTClassifier if model.arch == "bert" else GPTClassifier
        return classifier(model, vocab_rows, tensor_parallel_size, len(task.labels or ()), seed)
    return build_model(model, vocab_rows, tensor_parallel_size, seed)
