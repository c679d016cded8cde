"""GPT: a decoder-only language model, GPT-2 style or Llama style by config.

GPT-2: learned positions, LayerNorm, GELU, tied input/output embeddings.
Llama: RoPE, RMSNorm, SwiGLU, grouped-query attention, untied output layer.
With sequence parallelism (Megatron's) the blocks work on this rank's slice of the sequence, sequence first
([seq / TP, batch, hidden]): norms, dropout and residuals on 1/TP of the tokens, the sequence gathered
before each column-parallel layer and reduce-scattered after each row-parallel one.

The model is a sequence of layers: token embedding, positions, the blocks, the final norm and the
output layer. Each is initialized from its own seed (`seed + its index in that sequence`), so a
pipeline stage that builds only some of them (models/pipeline.py) gets the very weights this
class builds whole.
"""

from __future__ import annotations

import torch
from megatron.core import tensor_parallel
from megatron.core.model_parallel_config import ModelParallelConfig
from torch import nn
from torch.utils.checkpoint import checkpoint

from roots_scale.config import ModelConfig
from roots_scale.models.layers import (
    RotaryEmbedding,
    TransformerBlock,
    column,
    make_norm,
    normal_init,
    parallel_config,
    parallel_cross_entropy,
    parallel_logits,
    to_sequence_parallel,
)

EMBEDDING_INDEX, POSITIONS_INDEX, FIRST_BLOCK_INDEX = 0, 1, 2


def layer_count(cfg: ModelConfig) -> int:
    """How many layers the sequence has: embedding, positions, the blocks, final norm, output."""
    return cfg.num_layers + 4


def token_embedding(cfg: ModelConfig, vocab_size: int, mp: ModelParallelConfig) -> nn.Module:
    return tensor_parallel.VocabParallelEmbedding(vocab_size, cfg.hidden_size, init_method=normal_init(cfg.init_std),
                                                  config=mp)


def position_embedding(cfg: ModelConfig) -> nn.Embedding | None:
    """Learned absolute positions (GPT-2), or None where RoPE rotates queries and keys instead."""
    if cfg.position_embedding != "learned":
        return None
    embedding = nn.Embedding(cfg.seq_length, cfg.hidden_size)
    normal_init(cfg.init_std)(embedding.weight)
    return embedding


def output_logits(output: nn.Module | None, embedding: nn.Module, hidden: torch.Tensor,
                  sequence_parallel: bool) -> torch.Tensor:
    """Vocab-parallel logits [batch, seq, vocab / TP] from the final hidden states (this rank's sequence slice,
    sequence first, under sequence parallelism), through the output layer or the tied embedding."""
    if output is None:
        logits = parallel_logits(hidden, embedding.weight, sequence_parallel)
    else:
        logits = column(output, hidden, sequence_parallel)
    return logits.transpose(0, 1).contiguous() if sequence_parallel else logits


def output_layer(cfg: ModelConfig, vocab_size: int, mp: ModelParallelConfig) -> nn.Module:
    return tensor_parallel.ColumnParallelLinear(cfg.hidden_size, vocab_size, config=mp,
                                                init_method=normal_init(cfg.init_std), bias=False, gather_output=False)


def add_positions(x: torch.Tensor, positions: nn.Embedding | None) -> torch.Tensor:
    if positions is None:
        return x
    return x + positions(torch.arange(x.shape[1], device=x.device))


def run_block(block: TransformerBlock, x: torch.Tensor, rope, recompute: bool) -> torch.Tensor:
    """One block, its activations recomputed in the backward pass when `recompute` (activation checkpointing)."""
    if recompute:
        return checkpoint(block, x, rope, use_reentrant=False)
    return block(x, rope)


class GPT(nn.Module):
    """Token ids [batch, seq] in; vocab-parallel logits, or the mean loss when labels are given."""

    def __init__(self, cfg: ModelConfig, vocab_size: int, tensor_parallel_size: int, seed: int = 0,
                 sequence_parallel: bool = False) -> None:
        super().__init__()
        mp = parallel_config(tensor_parallel_size)
        self.sequence_parallel = sequence_parallel
        self.cfg = cfg
        self.vocab_size = vocab_size
        torch.manual_seed(seed + EMBEDDING_INDEX)
        self.embedding = token_embedding(cfg, vocab_size, mp)
        torch.manual_seed(seed + POSITIONS_INDEX)
        self.position_embedding = position_embedding(cfg)
        self.rotary = None if self.position_embedding is not None else RotaryEmbedding(cfg.head_dim, cfg.rope_theta)
        self.dropout = nn.Dropout(cfg.dropout)
        blocks = []
        for index in range(cfg.num_layers):
            torch.manual_seed(seed + FIRST_BLOCK_INDEX + index)
            blocks.append(TransformerBlock(cfg, mp, sequence_parallel))
        self.layers = nn.ModuleList(blocks)
        self.final_norm = make_norm(cfg, sequence_parallel)
        self.output = None
        if not cfg.tie_embeddings:
            torch.manual_seed(seed + layer_count(cfg) - 1)
            self.output = output_layer(cfg, vocab_size, mp)

    def hidden_states(self, tokens: torch.Tensor) -> torch.Tensor:
        """The final-norm hidden states [batch, seq, hidden] (this rank's sequence slice, sequence first, under
        sequence parallelism)."""
        x = self.dropout(add_positions(self.embedding(tokens), self.position_embedding))
        if self.sequence_parallel:
            x = to_sequence_parallel(x)
        rope = None if self.rotary is None else self.rotary(tokens.shape[1], tokens.device)
        recompute = self.cfg.activation_checkpointing and self.training
        for layer in self.layers:
            x = run_block(layer, x, rope, recompute)
        return self.final_norm(x)

    def forward(self, tokens: torch.Tensor, labels: torch.Tensor | None = None,
                loss_mask: torch.Tensor | None = None) -> torch.Tensor:
        logits = output_logits(self.output, self.embedding, self.hidden_states(tokens), self.sequence_parallel)
        if labels is None:
            return logits
        return parallel_cross_entropy(logits, labels, loss_mask)
