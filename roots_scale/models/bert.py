"""BERT: a bidirectional encoder with a masked-language-model head and a sentence-order head.

Embeddings: word (vocab-parallel) + learned position + token type, then LayerNorm and dropout, as in
BERT. The blocks are the pre-norm `TransformerBlock`s the GPT uses (x + attn(norm(x)), then
x + mlp(norm(x)), GELU MLP) with a final norm, rather than BERT's original post-norm blocks: pre-norm
trains stably without warmup tricks and keeps one block implementation. Attention is bidirectional:
every position attends to every real token of its sample and to no padding.

MLM head (megatron's BertLMHead): dense + GELU + LayerNorm, then logits against the word embedding
(tied) plus an output bias over this rank's vocabulary slice, marked `tensor_model_parallel` like the
embedding so gradient-norm and clipping count each slice once. The loss is taken only at the chosen
positions (labels >= 0 and loss_mask > 0), and only their logits are computed. Sentence-order head:
pooler (first token, dense + tanh) then a replicated 2-way linear; its cross-entropy is added to the
MLM loss when `sentence_order_label` is given.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from megatron.core import tensor_parallel
from torch import nn
from torch.utils.checkpoint import checkpoint

from roots_scale.config import ModelConfig
from roots_scale.models.layers import (
    TransformerBlock,
    make_norm,
    normal_init,
    padding_attention_mask,
    parallel_config,
    parallel_cross_entropy,
    parallel_logits,
)

NUM_TOKEN_TYPES = 2  # segment A / segment B


def _linear(cfg: ModelConfig, in_features: int, out_features: int) -> nn.Linear:
    """A small replicated linear layer (same weights on every tensor-parallel rank)."""
    layer = nn.Linear(in_features, out_features)
    normal_init(cfg.init_std)(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


class BERT(nn.Module):
    """Token ids [batch, seq] in; the MLM + SOP loss when labels are given, else (vocab-parallel MLM
    logits [batch, seq, local vocab], SOP logits [batch, 2])."""

    def __init__(self, cfg: ModelConfig, vocab_size: int, tensor_parallel_size: int) -> None:
        super().__init__()
        if cfg.position_embedding != "learned" or not cfg.tie_embeddings:
            raise ValueError("BERT uses learned positions and a tied MLM output layer: set "
                             "model.position_embedding=learned and model.tie_embeddings=true")
        mp = parallel_config(tensor_parallel_size)
        self.cfg = cfg
        self.vocab_size = vocab_size
        init = normal_init(cfg.init_std)
        self.embedding = tensor_parallel.VocabParallelEmbedding(
            vocab_size, cfg.hidden_size, init_method=init, config=mp)
        self.position_embedding = nn.Embedding(cfg.seq_length, cfg.hidden_size)
        init(self.position_embedding.weight)
        self.token_type_embedding = nn.Embedding(NUM_TOKEN_TYPES, cfg.hidden_size)
        init(self.token_type_embedding.weight)
        self.embedding_norm = make_norm(cfg)
        self.dropout = nn.Dropout(cfg.dropout)
        self.layers = nn.ModuleList(TransformerBlock(cfg, mp) for _ in range(cfg.num_layers))
        self.final_norm = make_norm(cfg)
        # MLM head; the output layer is the word embedding, plus a bias over this rank's vocab slice.
        self.lm_dense = _linear(cfg, cfg.hidden_size, cfg.hidden_size)
        self.lm_norm = make_norm(cfg)
        self.lm_bias = nn.Parameter(torch.zeros(self.embedding.weight.shape[0]))
        tensor_parallel.set_tensor_model_parallel_attributes(self.lm_bias, is_parallel=True, dim=0, stride=1)
        # Sentence-order head.
        self.pooler = _linear(cfg, cfg.hidden_size, cfg.hidden_size)
        self.sop_head = _linear(cfg, cfg.hidden_size, 2)

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
               token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Final hidden states [batch, seq, hidden] (replicated across tensor-parallel ranks)."""
        seq = input_ids.shape[1]
        if seq > self.cfg.seq_length:
            raise ValueError(f"BERT input has {seq} positions; model.seq_length is {self.cfg.seq_length}")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        x = (self.embedding(input_ids)
             + self.position_embedding(torch.arange(seq, device=input_ids.device))
             + self.token_type_embedding(token_type_ids))
        x = self.dropout(self.embedding_norm(x))
        mask = padding_attention_mask(attention_mask)  # never None: attention stays bidirectional
        for layer in self.layers:
            if self.cfg.activation_checkpointing and self.training:
                x = checkpoint(layer, x, None, mask, use_reentrant=False)
            else:
                x = layer(x, None, mask)
        return self.final_norm(x)

    def mlm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits over this rank's vocabulary slice for hidden states [..., hidden]."""
        h = self.lm_norm(F.gelu(self.lm_dense(hidden)))  # erf GELU, as BERT and Megatron's BertLMHead
        return parallel_logits(h, self.embedding.weight) + self.lm_bias

    def sop_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Sentence-order logits [batch, 2] from the first ([CLS]) position."""
        return self.sop_head(torch.tanh(self.pooler(hidden[:, 0])))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                loss_mask: torch.Tensor | None = None,
                sentence_order_label: torch.Tensor | None = None):
        hidden = self.encode(input_ids, attention_mask, token_type_ids)
        if labels is None:
            return self.mlm_logits(hidden), self.sop_logits(hidden)
        weights = (labels >= 0).float()
        if loss_mask is not None:
            weights = weights * loss_mask.float()
        chosen = weights > 0  # the same on every tensor-parallel rank: selection keeps ranks in step
        logits = self.mlm_logits(hidden[chosen])
        loss = parallel_cross_entropy(logits, labels[chosen], weights[chosen])
        if sentence_order_label is not None:
            loss = loss + F.cross_entropy(self.sop_logits(hidden).float(), sentence_order_label.reshape(-1))
        return loss
