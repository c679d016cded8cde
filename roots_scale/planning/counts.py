"""What a GPT holds and keeps for backward, counted from its config the way `roots_scale.models` builds it.

Parameters are exact (tests compare them with built models, per tensor-parallel rank and pipeline stage).
Activations are the bytes autograd saves per micro-batch in our blocks (layer by layer: norm inputs, the
linear layers' inputs, QKV, the attention output, the MLP's hidden activations; LayerNorm keeps its input,
RMSNorm also its normalized input; SDPA keeps no score matrix), checked against saved-tensor hooks on CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

from roots_scale.config import ModelConfig

PRECISION_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}


@dataclass(frozen=True)
class Split:
    """Parameters of one part of the model: the part tensor parallelism splits, and the part every TP rank holds."""

    split: int = 0
    replicated: int = 0

    def per_rank(self, tensor_parallel: int) -> int:
        return self.split // tensor_parallel + self.replicated

    @property
    def total(self) -> int:
        return self.split + self.replicated

    def __add__(self, other: Split) -> Split:
        return Split(self.split + other.split, self.replicated + other.replicated)

    def __mul__(self, count: int) -> Split:
        return Split(self.split * count, self.replicated * count)


@dataclass(frozen=True)
class ParameterCounts:
    """Parameters by layer, as `GPT` lays them out (vocabulary padded as training pads it)."""

    embedding: Split
    positions: Split
    block: Split
    final_norm: Split
    output: Split  # zero when tied to the embedding
    num_layers: int
    tied: bool

    @property
    def total(self) -> int:
        return (self.embedding + self.positions + self.block * self.num_layers + self.final_norm + self.output).total

    def stage(self, stage: int, stages: int) -> Split:
        """The parameters of pipeline stage `stage` of `stages`; with tied embeddings the last stage holds a copy of
        the token embedding."""
        part = self.block * blocks_in_stage(self.num_layers, stage, stages)
        if stage == 0:
            part = part + self.embedding + self.positions
        if stage == stages - 1:
            part = part + self.final_norm + self.output
            if self.tied and stages > 1:
                part = part + self.embedding
        return part

    def per_rank(self, tensor_parallel: int, stages: int) -> int:
        """The most parameters any rank holds (the fullest stage)."""
        return max(self.stage(stage, stages).per_rank(tensor_parallel) for stage in range(stages))


def blocks_in_stage(num_layers: int, stage: int, stages: int) -> int:
    """Transformer blocks on pipeline stage `stage`: num_layers / stages, the first stages taking one more when the
    division leaves a remainder (as a balanced partition does)."""
    return num_layers // stages + (1 if stage < num_layers % stages else 0)


def parameter_counts(cfg: ModelConfig, vocab_rows: int) -> ParameterCounts:
    h, d, heads, kv = cfg.hidden_size, cfg.head_dim, cfg.num_attention_heads, cfg.kv_heads
    bias = 1 if cfg.bias else 0
    norm = Split(replicated=h * (2 if cfg.normalization == "layernorm" else 1))
    qkv_width = (heads + 2 * kv) * d
    mlp_width = (2 if cfg.activation == "swiglu" else 1) * cfg.ffn_size
    block = (norm * 2
             + Split(split=h * qkv_width + bias * qkv_width)  # column-parallel QKV, bias split with it
             + Split(split=heads * d * h, replicated=bias * h)  # row-parallel projection, bias whole
             + Split(split=h * mlp_width + bias * mlp_width)
             + Split(split=cfg.ffn_size * h, replicated=bias * h))
    return ParameterCounts(
        embedding=Split(split=vocab_rows * h),
        positions=Split(replicated=cfg.seq_length * h if cfg.position_embedding == "learned" else 0),
        block=block, final_norm=norm,
        output=Split() if cfg.tie_embeddings else Split(split=vocab_rows * h),
        num_layers=cfg.num_layers, tied=cfg.tie_embeddings)


@dataclass(frozen=True)
class ActivationBytes:
    """Bytes autograd keeps per micro-batch on one rank: per block, and the layers before and after the blocks."""

    block: float
    first_stage_extra: float  # the token ids (and RoPE's angles)
    last_stage_extra: float  # final norm, output layer input, the loss's fp32 softmax over the local vocabulary


def activation_bytes(cfg: ModelConfig, vocab_rows: int, micro_batch: int, tensor_parallel: int,
                     precision: str, sequence_parallel: bool = False) -> ActivationBytes:
    """Saved-for-backward bytes of one micro-batch (see the module docstring). Sequence parallelism keeps the
    norms' inputs, the residual stream and the column-parallel layers' inputs for 1/TP of the tokens."""
    w, t = PRECISION_BYTES[precision], tensor_parallel
    local = t if sequence_parallel else 1  # what the replicated (unsplit) activations are divided by
    tokens = micro_batch * cfg.seq_length
    h, d = cfg.hidden_size, cfg.head_dim
    heads, kv, ffn = cfg.num_attention_heads // t, cfg.kv_heads // t, cfg.ffn_size // t
    stats = 4 * tokens * (2 if cfg.normalization == "layernorm" else 1) / local  # per-token fp32 norm statistics
    norm = (h if cfg.normalization == "layernorm" else 2 * h)  # RMSNorm also keeps its normalized input
    if cfg.activation_checkpointing:
        block = tokens * h * w / local  # only the block's input; the rest is recomputed in backward
    else:
        attention = ((norm + h) / local + (heads + 2 * kv) * d + heads * d  # norm, QKV in and out, attention out
                     + (heads + kv) * d * (cfg.position_embedding == "rope"))  # rotated queries and keys
        mlp = (norm + h) / local + (3 * ffn if cfg.activation == "swiglu" else ffn) + ffn  # hidden (and gate)
        block = tokens * (attention + mlp) * w + 2 * stats + 4 * tokens * heads  # + SDPA's log-sum-exp
    rope_angles = 2 * cfg.seq_length * d * 4 if cfg.position_embedding == "rope" else 0
    return ActivationBytes(block=block, first_stage_extra=8 * tokens + rope_angles,
                           last_stage_extra=tokens * ((norm + h) * w / local + 4 * vocab_rows // t + 8) + stats)
