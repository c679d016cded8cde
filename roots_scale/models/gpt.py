"""GPT: a decoder-only language model, GPT-2 style or Llama style by config.

GPT-2: learned positions, LayerNorm, GELU, tied input/output embeddings.
Llama: RoPE, RMSNorm, SwiGLU, grouped-query attention, untied output layer.
"""

from __future__ import annotations

import torch
from megatron.core import tensor_parallel
from torch import nn
from torch.utils.checkpoint import checkpoint

from roots_scale.config import ModelConfig
from roots_scale.models.layers import (
    RotaryEmbedding,
    TransformerBlock,
    make_norm,
    normal_init,
    parallel_config,
    parallel_cross_entropy,
    parallel_logits,
)


class GPT(nn.Module):
    """Token ids [batch, seq] in; vocab-parallel logits, or the mean loss when labels are given."""

    def __init__(self, cfg: ModelConfig, vocab_size: int, tensor_parallel_size: int) -> None:
        super().__init__()
        mp = parallel_config(tensor_parallel_size)
        self.cfg = cfg
        self.vocab_size = vocab_size
        self.embedding = tensor_parallel.VocabParallelEmbedding(
            vocab_size, cfg.hidden_size, init_method=normal_init(cfg.init_std), config=mp)
        self.position_embedding = None
        self.rotary = None
        if cfg.position_embedding == "learned":
            self.position_embedding = nn.Embedding(cfg.seq_length, cfg.hidden_size)
            normal_init(cfg.init_std)(self.position_embedding.weight)
        else:
            self.rotary = RotaryEmbedding(cfg.head_dim, cfg.rope_theta)
        self.dropout = nn.Dropout(cfg.dropout)
        self.layers = nn.ModuleList(TransformerBlock(cfg, mp) for _ in range(cfg.num_layers))
        self.final_norm = make_norm(cfg)
        self.output = None
        if not cfg.tie_embeddings:
            self.output = tensor_parallel.ColumnParallelLinear(
                cfg.hidden_size, vocab_size, config=mp, init_method=normal_init(cfg.init_std),
                bias=False, gather_output=False)

    def forward(self, tokens: torch.Tensor, labels: torch.Tensor | None = None,
                loss_mask: torch.Tensor | None = None) -> torch.Tensor:
        seq = tokens.shape[1]
        x = self.embedding(tokens)
        rope = None
        if self.position_embedding is not None:
            x = x + self.position_embedding(torch.arange(seq, device=tokens.device))
        else:
            rope = self.rotary(seq, tokens.device)
        x = self.dropout(x)
        for layer in self.layers:
            if self.cfg.activation_checkpointing and self.training:
                x = checkpoint(layer, x, rope, use_reentrant=False)
            else:
                x = layer(x, rope)
        x = self.final_norm(x)
        if self.output is None:
            logits = parallel_logits(x, self.embedding.weight)
        else:
            logits, _ = self.output(x)
        if labels is None:
            return logits
        return parallel_cross_entropy(logits, labels, loss_mask)
