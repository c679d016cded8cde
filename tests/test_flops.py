"""Model FLOPs per token, the device peak table and MFU, checked against counts done by hand."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest

from distributed_helpers import ROOT
from roots_scale.config import ModelConfig, load_config
from roots_scale.training.flops import FlopsMeter, matmul_params, model_flops_per_token, peak_flops

LLAMA_STYLE = ModelConfig(num_layers=2, hidden_size=64, num_attention_heads=4, num_kv_heads=2, seq_length=16,
                          position_embedding="rope", normalization="rmsnorm", activation="swiglu", bias=False,
                          tie_embeddings=False)


def test_gpt2_125m_flops_and_mfu_match_a_hand_count() -> None:
    model = load_config(ROOT / "configs/gpt2_125m.yaml").model
    # Per layer: QKV 768·2304 = 1,769,472; output 768·768 = 589,824; MLP 2·768·3072 = 4,718,592
    # → 7,077,888 (= 12·768²); × 12 layers = 84,934,656. LM head 768·50304 = 38,633,472.
    assert matmul_params(model, 50304) == 84_934_656 + 38_633_472 == 123_568_128
    # 6 · 123,568,128 = 741,408,768; attention 12 · 12 layers · 768 · 1024 = 113,246,208.
    assert model_flops_per_token(model, 50304) == 741_408_768 + 113_246_208 == 854_654_976

    # 8 H100 SXM at 1.6M tokens/s in all: 854,654,976 · 1.6e6 / 8 = 1.709309952e14 FLOP/s per device,
    # over a 989e12 peak = 17.283215...%.
    meter = FlopsMeter(854_654_976, num_devices=8, peak=peak_flops("NVIDIA H100 80GB HBM3", "bf16"))
    assert meter.flops_per_device(1.6e6) == pytest.approx(1.709309952e14)
    assert meter.mfu(1.6e6) == pytest.approx(1.709309952e14 / 989e12)
    assert meter.mfu(1.6e6) == pytest.approx(0.17283215, rel=1e-7)


def test_grouped_query_attention_and_swiglu_count_their_own_shapes() -> None:
    # h 64, 4 heads of 16, 2 KV heads; SwiGLU ffn 256 (8/3 · 64 rounded up to 256). Per layer:
    # Q 64·64 = 4096, K and V 64·32 each = 4096, output 64·64 = 4096, MLP 3·64·256 = 49,152 → 61,440.
    # Two layers 122,880 + untied LM head 64·256 = 16,384 → 139,264 (the input embedding is a lookup).
    assert LLAMA_STYLE.ffn_size == 256
    assert matmul_params(LLAMA_STYLE, 256) == 139_264
    # 6 · 139,264 + 12 · 2 · 64 · 16 = 835,584 + 24,576
    assert model_flops_per_token(LLAMA_STYLE, 256) == 860_160


def test_bert_adds_its_mlm_head_transform() -> None:
    gpt = ModelConfig(num_layers=2, hidden_size=64, num_attention_heads=4, seq_length=32)
    bert = dataclasses.replace(gpt, arch="bert")
    assert model_flops_per_token(bert, 512) - model_flops_per_token(gpt, 512) == 6 * 64 * 64


MODEL_WEIGHTS = """
import json, sys
from roots_scale.config import ModelConfig
from roots_scale.distributed import discover_launch_env, init_distributed
from roots_scale.models.gpt import GPT
init_distributed(discover_launch_env(), 1)
counts = {}
for name, kwargs in json.loads(sys.argv[1]).items():
    model = GPT(ModelConfig(**kwargs), 256, 1)
    weights = {n: p.numel() for n, p in model.named_parameters() if p.dim() == 2}
    weights.pop("position_embedding.weight", None)  # a lookup
    if not model.cfg.tie_embeddings:
        weights.pop("embedding.weight")  # a lookup; the untied output layer is the LM-head matmul
    counts[name] = sum(weights.values())
print(json.dumps(counts))
"""


@pytest.mark.slow
def test_matmul_params_equal_the_built_models_matrices() -> None:
    """The count from the config agrees with the weights the real GPT allocates, GPT-2 and Llama style."""
    configs = {"gpt2": ModelConfig(num_layers=2, hidden_size=64, num_attention_heads=4, seq_length=16),
               "llama": LLAMA_STYLE}
    proc = subprocess.run([sys.executable, "-c", MODEL_WEIGHTS,
                           json.dumps({k: dataclasses.asdict(v) for k, v in configs.items()})],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    counts = json.loads(proc.stdout.splitlines()[-1])
    assert counts == {name: matmul_params(cfg, 256) for name, cfg in configs.items()}


@pytest.mark.parametrize("name, dtype, peak", [
    ("NVIDIA H100 80GB HBM3", "bf16", 989e12),
    ("NVIDIA H200", "bf16", 989e12),
    ("NVIDIA GH200 480GB", "fp16", 989e12),
    ("NVIDIA H100 PCIe", "bf16", 756e12),
    ("NVIDIA A100-SXM4-80GB", "bf16", 312e12),
    ("Tesla V100-SXM2-32GB", "fp16", 125e12),
    ("Tesla V100-SXM2-32GB", "bf16", None),  # Volta has no bf16
    ("NVIDIA L40S", "bf16", 362e12),
    ("AMD Instinct MI250X", "bf16", 383e12),
    ("AMD Instinct MI300X", "bf16", 1307.4e12),
    ("cpu", "fp32", None),
    ("Some Future Accelerator", "bf16", None),
])
def test_peak_flops_table(name: str, dtype: str, peak: float | None) -> None:
    assert peak_flops(name, dtype) == peak


def test_peak_override_and_no_mfu_without_a_peak(monkeypatch: pytest.MonkeyPatch) -> None:
    tiny = load_config(ROOT / "configs/tiny_gpt.yaml").model
    monkeypatch.setattr("roots_scale.training.flops.device_name", lambda: "cpu")
    looked_up = FlopsMeter.for_run(tiny, 512, num_devices=2, precision="fp32", peak_tflops=None)
    assert looked_up.peak is None and looked_up.mfu(1000.0) is None
    overridden = FlopsMeter.for_run(tiny, 512, num_devices=2, precision="fp32", peak_tflops=0.5)
    assert overridden.mfu(1000.0) == pytest.approx(model_flops_per_token(tiny, 512) * 1000.0 / 2 / 0.5e12)
