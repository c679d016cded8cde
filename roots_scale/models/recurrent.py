"""RecurrentLM: the textbook recurrent language models (Elman RNN, LSTM, GRU), baselines beside the GPT.

    tokens → embedding → dropout → `num_layers` stacked RNN / LSTM / GRU layers of `hidden_size` (dropout between
    them) → dropout → output layer (the embedding, tied, or a Linear of its own) → logits [batch, seq, vocab]

Every window starts from a zero state, as every GPT window starts from nothing: the samples are the same
shuffled windows, so the state is never carried from one batch to the next (no truncated BPTT across batches).
The interface is GPT's (`forward(tokens, labels=None, loss_mask=None)`) so the trainer, checkpoints and the
post-training tools take it as they are. No tensor parallelism inside: it trains with data parallelism and
ZeRO 0-3. Of the transformer settings it uses `hidden_size`, `num_layers`, `dropout`, `bias`, `tie_embeddings`,
`init_std` (embedding and untied output layer; the recurrent layers keep torch's uniform ±1/√hidden) and
`activation_checkpointing` (the whole stack recomputed in backward).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from roots_scale.config import ModelConfig

CELLS: dict[str, type[nn.RNNBase]] = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
GATES = {"rnn": 1, "lstm": 4, "gru": 3}  # hidden-sized blocks in each layer's weight_ih / weight_hh


def is_recurrent(cfg: ModelConfig) -> bool:
    """Whether `cfg` describes a RecurrentLM rather than a transformer."""
    return cfg.arch in CELLS


class RecurrentLM(nn.Module):
    """Token ids [batch, seq] in; logits [batch, seq, vocab], or the mean (loss-mask weighted) cross-entropy."""

    def __init__(self, cfg: ModelConfig, vocab_size: int, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.cfg = cfg
        self.vocab_size = vocab_size
        self.embedding = nn.Embedding(vocab_size, cfg.hidden_size)
        nn.init.normal_(self.embedding.weight, std=cfg.init_std)
        self.dropout = nn.Dropout(cfg.dropout)
        self.rnn = CELLS[cfg.arch](cfg.hidden_size, cfg.hidden_size, cfg.num_layers, bias=cfg.bias, batch_first=True,
                                   dropout=cfg.dropout if cfg.num_layers > 1 else 0.0)
        self.output = None
        if not cfg.tie_embeddings:
            self.output = nn.Linear(cfg.hidden_size, vocab_size, bias=False)
            nn.init.normal_(self.output.weight, std=cfg.init_std)

    def forward(self, tokens: torch.Tensor, labels: torch.Tensor | None = None,
                loss_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.dropout(self.embedding(tokens))
        if self.cfg.activation_checkpointing and self.training:
            x = checkpoint(self.rnn, x, use_reentrant=False)[0]
        else:
            x = self.rnn(x)[0]
        x = self.dropout(x)
        logits = self.output(x) if self.output is not None else F.linear(x, self.embedding.weight)
        if labels is None:
            return logits
        losses = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), reduction="none")
        if loss_mask is None:
            return losses.mean()
        weights = loss_mask.flatten().float()
        return (losses * weights).sum() / weights.sum().clamp(min=1.0)
