"""Model FLOPs per token and device peaks: tokens/s to TFLOP/s per device and MFU.

Training FLOPs per token, counted from the config (Megatron / PaLM convention, "model FLOPs":
activation recomputation is not counted, so MFU does not reward recomputing):

    F = 6 · P_matmul + 12 · L · (n_heads · d_head) · s

- P_matmul: weights of every matrix multiply a token goes through. Per layer: Q (h × n_heads·d_head),
  K and V (h × n_kv·d_head each, so grouped-query attention counts its smaller K/V), the output
  projection (n_heads·d_head × h), and the MLP (2 · h · ffn for GELU, 3 · h · ffn for SwiGLU's gate,
  up and down). Plus the LM head, h × V, counted once whether or not it is tied to the input
  embedding (the embedding lookup is a gather, not a matmul); BERT adds its MLM head transform
  (h × h). Biases, norms, position embeddings and BERT's per-sequence pooler / sentence-order head
  (one token in s) are left out.
- 6 = 2 FLOPs per multiply-add × 3 (forward, backward for activations, backward for weights).
- 12 · L · (n_heads · d_head) · s: attention scores QKᵀ and the weighted sum over values, each
  2 · s · n_heads · d_head FLOPs per token forward, × 3 for training. Over the full s×s matrix, as
  PaLM (appendix B) and Megatron count it, also for causal models: a causal kernel skips half of
  it, so causal MFU is conservative by that half.

For gpt2_125m (L 12, h 768, 12 heads, s 1024, V 50304): P_matmul = 12 · 12 · 768² + 768 · 50304 =
123,568,128 and F = 741,408,768 + 113,246,208 = 854,654,976 FLOPs per token.

Recurrent models (RNN, LSTM, GRU; models/recurrent.py) have no attention term: F = 6 · P_matmul with

    P_matmul = L · g · (h · h + h · h) + h · V,   g = 1 (RNN), 3 (GRU: reset, update, new), 4 (LSTM: i, f, g, o)

- Every layer multiplies its input (h wide: the embedding and every layer are `hidden_size`) by W_ih [g·h × h] and
  the previous state by W_hh [g·h × h] once per token; plus the LM head h × V (tied or not).
- The gate nonlinearities, the element-wise state updates (LSTM's c = f·c + i·g, GRU's interpolation) and
  the biases are O(g · h) per token and left out, like the transformer's norms.
For a 2-layer LSTM, h 256, V 2048: P_matmul = 2 · 4 · 2 · 256² + 256 · 2048 = 1,572,864 and
F = 9,437,184 FLOPs per token.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from roots_scale.config import ModelConfig
from roots_scale.models.recurrent import GATES, is_recurrent

# Dense (no sparsity) tensor-core peak FLOP/s per device, by a substring of the device name and the
# training precision; the first matching pattern wins, so specific names come before general ones.
# fp32 is the plain FP32 (matrix, where the vendor lists one) rate, not TF32.
PEAK_FLOPS: list[tuple[str, dict[str, float]]] = [
    ("H100 PCIe", {"bf16": 756e12, "fp16": 756e12, "fp32": 51.2e12}),
    ("H100 NVL", {"bf16": 835e12, "fp16": 835e12, "fp32": 60e12}),
    ("H100", {"bf16": 989e12, "fp16": 989e12, "fp32": 66.9e12}),  # SXM
    ("H200", {"bf16": 989e12, "fp16": 989e12, "fp32": 66.9e12}),  # SXM, and GH200
    ("B200", {"bf16": 2250e12, "fp16": 2250e12, "fp32": 75e12}),
    ("A100", {"bf16": 312e12, "fp16": 312e12, "fp32": 19.5e12}),
    ("A800", {"bf16": 312e12, "fp16": 312e12, "fp32": 19.5e12}),
    ("L40S", {"bf16": 362e12, "fp16": 362e12, "fp32": 91.6e12}),
    ("L40", {"bf16": 181e12, "fp16": 181e12, "fp32": 90.5e12}),
    ("L4", {"bf16": 121e12, "fp16": 121e12, "fp32": 30.3e12}),
    ("V100", {"fp16": 125e12, "fp32": 15.7e12}),  # no bf16 on Volta
    ("MI300X", {"bf16": 1307.4e12, "fp16": 1307.4e12, "fp32": 163.4e12}),
    ("MI325X", {"bf16": 1307.4e12, "fp16": 1307.4e12, "fp32": 163.4e12}),
    ("MI250X", {"bf16": 383e12, "fp16": 383e12, "fp32": 95.7e12}),
    ("MI250", {"bf16": 362.1e12, "fp16": 362.1e12, "fp32": 90.5e12}),
]


def matmul_params(model_cfg: ModelConfig, vocab_size: int) -> int:
    """Weights of the matrix multiplies one token goes through (see the module docstring)."""
    if is_recurrent(model_cfg):
        h = model_cfg.hidden_size
        return model_cfg.num_layers * GATES[model_cfg.arch] * 2 * h * h + h * vocab_size
    h, d = model_cfg.hidden_size, model_cfg.head_dim
    attention = h * (model_cfg.num_attention_heads + 2 * model_cfg.kv_heads) * d + model_cfg.num_attention_heads * d * h
    mlp = (3 if model_cfg.activation == "swiglu" else 2) * h * model_cfg.ffn_size
    heads = h * vocab_size + (h * h if model_cfg.arch == "bert" else 0)
    return model_cfg.num_layers * (attention + mlp) + heads


def model_flops_per_token(model_cfg: ModelConfig, vocab_size: int) -> int:
    """Training FLOPs per token: 6 · matmul params + 12 · L · (heads · head_dim) · seq, without the attention term
    for recurrent models (module docstring)."""
    if is_recurrent(model_cfg):
        return 6 * matmul_params(model_cfg, vocab_size)
    attention_width = model_cfg.num_attention_heads * model_cfg.head_dim
    return 6 * matmul_params(model_cfg, vocab_size) + 12 * model_cfg.num_layers * attention_width * model_cfg.seq_length


def peak_flops(device_name: str, dtype: str) -> float | None:
    """Dense peak FLOP/s of one `device_name` device at `dtype` (bf16/fp16/fp32); None when unknown (CPU)."""
    for pattern, peaks in PEAK_FLOPS:
        if pattern.lower() in device_name.lower():
            return peaks.get(dtype)
    return None


def device_name() -> str:
    """The accelerator's marketing name (e.g. 'NVIDIA H100 80GB HBM3'), or 'cpu'."""
    return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"


@dataclass(frozen=True)
class FlopsMeter:
    """Turns a measured global tokens/s into model TFLOP/s per device and MFU."""

    flops_per_token: float
    num_devices: int
    peak: float | None  # FLOP/s of one device; None = MFU not reported

    def flops_per_device(self, tokens_per_sec: float) -> float:
        return self.flops_per_token * tokens_per_sec / self.num_devices

    def mfu(self, tokens_per_sec: float) -> float | None:
        """Model FLOPs utilization: achieved model FLOP/s per device over the device's peak."""
        return None if self.peak is None else self.flops_per_device(tokens_per_sec) / self.peak

    @classmethod
    def for_run(cls, model_cfg: ModelConfig, vocab_size: int, num_devices: int, precision: str,
                peak_tflops: float | None) -> FlopsMeter:
        """The meter for this process's device: `peak_tflops` (train.peak_tflops) overrides the table."""
        peak = peak_tflops * 1e12 if peak_tflops is not None else peak_flops(device_name(), precision)
        return cls(model_flops_per_token(model_cfg, vocab_size), num_devices, peak)
