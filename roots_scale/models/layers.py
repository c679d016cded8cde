"""Transformer building blocks on megatron-core's tensor-parallel layers.

Parallelism lives in the layers: a ColumnParallelLinear holds this rank's slice of the output
features, a RowParallelLinear sums partial products across the tensor-parallel group. Weights
are initialized on the full (unsharded) matrix from the seed and then sliced, so a model is the
same function whatever tensor-parallel size builds it. Fused weights are laid out so that a
contiguous slice is self-contained: QKV grouped per KV head, SwiGLU's gate/up interleaved by
`stride=2`.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from megatron.core import tensor_parallel
from megatron.core.model_parallel_config import ModelParallelConfig
from torch import nn

from roots_scale.config import ModelConfig
from roots_scale.models.sequence_parallel import gather_linear, reduce_scatter_sequence, scatter_sequence

InitMethod = Callable[[torch.Tensor], torch.Tensor]


def parallel_config(tensor_parallel_size: int) -> ModelParallelConfig:
    """The megatron-core settings our layers need: full-weight CPU init, no fused CUDA paths. Sequence
    parallelism is not megatron-core's here (its path needs CUDA): see `column` and `row`."""
    return ModelParallelConfig(
        tensor_model_parallel_size=tensor_parallel_size,
        use_cpu_initialization=True,
        perform_initialization=True,
        params_dtype=torch.float32,
        gradient_accumulation_fusion=False,
        sequence_parallel=False,
    )


def normal_init(std: float) -> InitMethod:
    return lambda weight: nn.init.normal_(weight, mean=0.0, std=std)


def output_init(cfg: ModelConfig) -> InitMethod:
    """GPT-2's scaled init for projections that write into the residual stream."""
    return normal_init(cfg.init_std / math.sqrt(2.0 * cfg.num_layers))


def padded_vocab_size(vocab_size: int, divisible_by: int) -> int:
    """Pad the vocabulary to a multiple of `divisible_by`, independent of the tensor-parallel size."""
    return divisible_by * math.ceil(vocab_size / divisible_by)


def make_norm(cfg: ModelConfig, sequence_parallel: bool = False) -> nn.Module:
    """LayerNorm or RMSNorm; under sequence parallelism one whose weight gradients are summed over the tensor-
    parallel group (each rank normalizes only its slice of the sequence)."""
    if cfg.normalization == "rmsnorm":
        norm = SequenceParallelRMSNorm if sequence_parallel else nn.RMSNorm
    else:
        norm = SequenceParallelLayerNorm if sequence_parallel else nn.LayerNorm
    return norm(cfg.hidden_size, eps=cfg.norm_eps)


def replicated(weight: torch.Tensor | None) -> torch.Tensor | None:
    """A weight every TP rank holds, used on this rank's slice of the sequence: its gradient is summed over the
    tensor-parallel group in backward (forward is the identity), so every rank takes the same update."""
    return None if weight is None else tensor_parallel.copy_to_tensor_model_parallel_region(weight)


class SequenceParallelLayerNorm(nn.LayerNorm):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.normalized_shape, replicated(self.weight), replicated(self.bias), self.eps)


class SequenceParallelRMSNorm(nn.RMSNorm):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, self.normalized_shape, replicated(self.weight), self.eps)


def to_sequence_parallel(x: torch.Tensor) -> torch.Tensor:
    """[batch, seq, hidden] → this rank's slice of the sequence, sequence first: [seq / TP, batch, hidden]."""
    return scatter_sequence(x.transpose(0, 1))


def column(layer: nn.Module, x: torch.Tensor, sequence_parallel: bool) -> torch.Tensor:
    """A column-parallel layer; under sequence parallelism `x` is this rank's sequence slice, gathered first
    (the layer's weights are used directly: its own input handling assumes the whole sequence)."""
    if not sequence_parallel:
        return layer(x)[0]
    return gather_linear(x, layer.weight, layer.bias)


def row(layer: nn.Module, x: torch.Tensor, sequence_parallel: bool) -> torch.Tensor:
    """A row-parallel layer; under sequence parallelism its partial outputs are reduce-scattered to this rank's
    sequence slice instead of all-reduced, and its bias is `replicated`."""
    if not sequence_parallel:
        return layer(x)[0]
    out = reduce_scatter_sequence(F.linear(x, layer.weight))
    return out if layer.bias is None else out + replicated(layer.bias)


class RotaryEmbedding(nn.Module):
    """Rotary position embedding (RoPE), rotate-half convention."""

    def __init__(self, head_dim: int, theta: float) -> None:
        super().__init__()
        inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, seq_len: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        positions = torch.arange(seq_len, device=device, dtype=torch.float32)
        angles = torch.outer(positions, self.inv_freq.to(device))
        angles = torch.cat((angles, angles), dim=-1)  # [seq, head_dim]
        return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate `x` [batch, heads, seq, head_dim] by the position angles."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return (x.float() * cos + rotated.float() * sin).to(x.dtype)


class Attention(nn.Module):
    """Multi-head / grouped-query self-attention, heads split across tensor-parallel ranks."""

    def __init__(self, cfg: ModelConfig, mp: ModelParallelConfig, sequence_parallel: bool = False) -> None:
        super().__init__()
        tp = mp.tensor_model_parallel_size
        self.head_dim = cfg.head_dim
        self.q_per_kv = cfg.num_attention_heads // cfg.kv_heads
        self.local_kv_heads = cfg.kv_heads // tp
        self.local_heads = cfg.num_attention_heads // tp
        self.dropout = cfg.attention_dropout
        self.sequence_parallel = sequence_parallel  # x is [seq / TP, batch, hidden]; QKV gathers the sequence
        qkv_size = cfg.kv_heads * (self.q_per_kv + 2) * cfg.head_dim
        self.qkv = tensor_parallel.ColumnParallelLinear(
            cfg.hidden_size, qkv_size, config=mp, init_method=normal_init(cfg.init_std),
            bias=cfg.bias, gather_output=False)
        self.proj = tensor_parallel.RowParallelLinear(
            cfg.num_attention_heads * cfg.head_dim, cfg.hidden_size, config=mp,
            init_method=output_init(cfg), bias=cfg.bias, input_is_parallel=True, skip_bias_add=False)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None,
                padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        qkv = column(self.qkv, x, self.sequence_parallel)
        first, second = qkv.shape[:2]
        qkv = qkv.view(first, second, self.local_kv_heads, self.q_per_kv + 2, self.head_dim)
        q = qkv[:, :, :, : self.q_per_kv].reshape(first, second, self.local_heads, self.head_dim)
        k, v = qkv[:, :, :, self.q_per_kv], qkv[:, :, :, self.q_per_kv + 1]
        order = (1, 2, 0, 3) if self.sequence_parallel else (0, 2, 1, 3)
        q, k, v = (t.permute(*order) for t in (q, k, v))  # [batch, heads, seq, head_dim]
        if rope is not None:
            q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=padding_mask, is_causal=padding_mask is None,
            dropout_p=self.dropout if self.training else 0.0,
            enable_gqa=self.local_kv_heads != self.local_heads)
        back = (2, 0, 1, 3) if self.sequence_parallel else (0, 2, 1, 3)  # the inverse of `order`
        out = out.permute(*back).reshape(first, second, self.local_heads * self.head_dim)
        return row(self.proj, out, self.sequence_parallel)


class MLP(nn.Module):
    """GELU MLP (GPT-2) or SwiGLU (Llama); the hidden features are split across ranks."""

    def __init__(self, cfg: ModelConfig, mp: ModelParallelConfig, sequence_parallel: bool = False) -> None:
        super().__init__()
        self.swiglu = cfg.activation == "swiglu"
        width = 2 * cfg.ffn_size if self.swiglu else cfg.ffn_size
        self.fc_in = tensor_parallel.ColumnParallelLinear(
            cfg.hidden_size, width, config=mp, init_method=normal_init(cfg.init_std),
            bias=cfg.bias, gather_output=False, stride=2 if self.swiglu else 1)
        self.fc_out = tensor_parallel.RowParallelLinear(
            cfg.ffn_size, cfg.hidden_size, config=mp, init_method=output_init(cfg),
            bias=cfg.bias, input_is_parallel=True, skip_bias_add=False)
        self.sequence_parallel = sequence_parallel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = column(self.fc_in, x, self.sequence_parallel)
        if self.swiglu:
            gate, up = h.chunk(2, dim=-1)
            h = F.silu(gate) * up
        else:
            h = F.gelu(h, approximate="tanh")
        return row(self.fc_out, h, self.sequence_parallel)


class TransformerBlock(nn.Module):
    """Pre-norm residual block: x + attn(norm(x)), then x + mlp(norm(x)); under sequence parallelism on this
    rank's slice of the sequence, sequence first."""

    def __init__(self, cfg: ModelConfig, mp: ModelParallelConfig, sequence_parallel: bool = False) -> None:
        super().__init__()
        self.attn_norm = make_norm(cfg, sequence_parallel)
        self.attn = Attention(cfg, mp, sequence_parallel)
        self.mlp_norm = make_norm(cfg, sequence_parallel)
        self.mlp = MLP(cfg, mp, sequence_parallel)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None,
                padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.dropout(self.attn(self.attn_norm(x), rope, padding_mask))
        return x + self.dropout(self.mlp(self.mlp_norm(x)))


def parallel_logits(hidden: torch.Tensor, weight: torch.Tensor, sequence_parallel: bool = False) -> torch.Tensor:
    """Logits for this rank's vocabulary slice from a (tied) vocab-parallel weight; under sequence parallelism
    from this rank's sequence slice, gathered first (and the gradient reduce-scattered back)."""
    if sequence_parallel:
        return gather_linear(hidden, weight)
    return F.linear(tensor_parallel.copy_to_tensor_model_parallel_region(hidden), weight)


def parallel_cross_entropy(logits: torch.Tensor, labels: torch.Tensor,
                           loss_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean token cross-entropy over vocab-parallel logits, never gathering the full vocabulary."""
    losses = tensor_parallel.vocab_parallel_cross_entropy(logits.float(), labels)
    if loss_mask is None:
        return losses.mean()
    loss_mask = loss_mask.float()
    return (losses * loss_mask).sum() / loss_mask.sum().clamp(min=1.0)


def padding_attention_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """A bidirectional SDPA mask from a [batch, seq] padding mask (1 real, 0 pad): True where a query
    may attend, [batch, 1, 1, seq], so every position sees every real token and no padding."""
    return attention_mask.bool()[:, None, None, :]
