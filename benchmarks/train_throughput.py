"""Training throughput of a model config: tokens/s, model TFLOP/s per device and MFU, one process.

    python benchmarks/train_throughput.py --config configs/tiny_gpt.yaml [--steps 10] [section.key=value ...]

Steps the trainer's own step (`Trainer.train_step`: DeepSpeed engine over our megatron-core layers,
built as `roots_scale.pretrain` builds it) on random tokens, micro_batch_size × accumulation per
step, on whatever device is present. FLOPs are the model FLOPs of `roots_scale.training.flops`; MFU
needs a known device peak or `train.peak_tflops=...`. On CPU it also steps the same model written as
plain PyTorch (nanoGPT style: nn.Linear, scaled_dot_product_attention, F.cross_entropy,
torch.optim.AdamW, gradient clipping; no DeepSpeed, no megatron layers), same shapes and batch, in
the same process, alternating one step of each, and prints the ratio of median step times (target
≤ 1.10).
The comparison runs in fp32 (train.precision is set to fp32 on CPU). `model.vocab_size` defaults
to GPT-2's 50257 (padded as in training) when the config leaves it to the token store.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
warnings.filterwarnings("ignore", message="Transformer Engine and Apex are not installed")  # before megatron imports

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.checkpoint import checkpoint  # noqa: E402

from roots_scale.config import Config, ModelConfig, load_config, validate  # noqa: E402
from roots_scale.models.layers import RotaryEmbedding, apply_rotary, make_norm, padded_vocab_size  # noqa: E402

GPT2_VOCAB = 50257


class PlainBlock(nn.Module):
    """A pre-norm transformer block on nn.Linear: the shapes of `roots_scale.models.layers.TransformerBlock`."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        heads, kv, d = cfg.num_attention_heads, cfg.kv_heads, cfg.head_dim
        self.attn_norm = make_norm(cfg)
        self.qkv = nn.Linear(cfg.hidden_size, (heads + 2 * kv) * d, bias=cfg.bias)
        self.proj = nn.Linear(heads * d, cfg.hidden_size, bias=cfg.bias)
        self.mlp_norm = make_norm(cfg)
        swiglu = cfg.activation == "swiglu"
        self.fc_in = nn.Linear(cfg.hidden_size, (2 if swiglu else 1) * cfg.ffn_size, bias=cfg.bias)
        self.fc_out = nn.Linear(cfg.ffn_size, cfg.hidden_size, bias=cfg.bias)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        cfg = self.cfg
        batch, seq, _ = x.shape
        heads, kv, d = cfg.num_attention_heads, cfg.kv_heads, cfg.head_dim
        q, k, v = self.qkv(self.attn_norm(x)).split([heads * d, kv * d, kv * d], dim=-1)
        q = q.view(batch, seq, heads, d).transpose(1, 2)
        k, v = (t.view(batch, seq, kv, d).transpose(1, 2) for t in (k, v))
        if rope is not None:
            q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
        attention = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, dropout_p=cfg.attention_dropout if self.training else 0.0,
            enable_gqa=kv != heads)
        x = x + F.dropout(self.proj(attention.transpose(1, 2).reshape(batch, seq, heads * d)),
                          cfg.dropout, self.training)
        h = self.fc_in(self.mlp_norm(x))
        if cfg.activation == "swiglu":
            gate, up = h.chunk(2, dim=-1)
            h = F.silu(gate) * up
        else:
            h = F.gelu(h, approximate="tanh")
        return x + F.dropout(self.fc_out(h), cfg.dropout, self.training)


class PlainGPT(nn.Module):
    """The GPT of `roots_scale.models.gpt` in plain PyTorch (nanoGPT style), for the overhead comparison."""

    def __init__(self, cfg: ModelConfig, vocab_size: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.embedding = nn.Embedding(vocab_size, cfg.hidden_size)
        learned = cfg.position_embedding == "learned"
        self.position_embedding = nn.Embedding(cfg.seq_length, cfg.hidden_size) if learned else None
        self.rotary = None if learned else RotaryEmbedding(cfg.head_dim, cfg.rope_theta)
        self.layers = nn.ModuleList(PlainBlock(cfg) for _ in range(cfg.num_layers))
        self.final_norm = make_norm(cfg)
        self.output = None if cfg.tie_embeddings else nn.Linear(cfg.hidden_size, vocab_size, bias=False)

    def forward(self, tokens: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        seq = tokens.shape[1]
        x = self.embedding(tokens)
        rope = None
        if self.position_embedding is not None:
            x = x + self.position_embedding(torch.arange(seq, device=tokens.device))
        else:
            rope = self.rotary(seq, tokens.device)
        x = F.dropout(x, self.cfg.dropout, self.training)
        for layer in self.layers:
            x = checkpoint(layer, x, rope, use_reentrant=False) if self.cfg.activation_checkpointing else layer(x, rope)
        x = self.final_norm(x)
        logits = self.output(x) if self.output is not None else F.linear(x, self.embedding.weight)
        return F.cross_entropy(logits.float().flatten(0, 1), labels.flatten())


def plain_step(model: PlainGPT, optimizer: torch.optim.Optimizer, micro_batches: list[dict[str, torch.Tensor]],
               clip: float) -> float:
    """The textbook step: accumulate gradients over the micro-batches, clip, AdamW, zero."""
    total = 0.0
    for batch in micro_batches:
        loss = model(**batch) / len(micro_batches)
        loss.backward()
        total += loss.item()
    nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return total


def random_batches(cfg: Config, vocab: int, micro_batch_size: int, accumulation: int,
                   device: torch.device) -> list[dict[str, torch.Tensor]]:
    """One step's micro-batches of random token windows, on `device`."""
    generator = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(accumulation):
        window = torch.randint(0, vocab, (micro_batch_size, cfg.model.seq_length + 1), generator=generator)
        batches.append({"tokens": window[:, :-1].to(device), "labels": window[:, 1:].to(device)})
    return batches


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--steps", type=int, default=20, help="timed steps of each kind (after two warm-up steps)")
    args, overrides = parser.parse_known_args(argv)

    from megatron.core import parallel_state

    from roots_scale.distributed import discover_launch_env, init_distributed
    from roots_scale.run import build_engine
    from roots_scale.training.deepspeed_config import effective_zero_stage
    from roots_scale.training.flops import FlopsMeter, device_name
    from roots_scale.training.trainer import LoopSettings, Trainer

    on_cpu = not torch.cuda.is_available()
    cfg = load_config(args.config, [*overrides, *(["train.precision=fp32"] if on_cpu else [])])
    cfg.data.path = str(ROOT)  # random tokens, no store; validate only checks that the path exists
    plan = validate(cfg, world_size=1)
    launch = discover_launch_env()
    init_distributed(launch, cfg.parallel.tensor, cfg.parallel.pipeline)
    vocab = padded_vocab_size(cfg.model.vocab_size or GPT2_VOCAB, cfg.model.make_vocab_size_divisible_by)

    _, engine = build_engine(cfg, plan, vocab)  # the model and engine exactly as a training run builds them
    flops = FlopsMeter.for_run(cfg.model, vocab, 1, cfg.train.precision, cfg.train.peak_tflops)
    settings = LoopSettings(cfg.train.iters, plan.micro_batch_size, plan.gradient_accumulation_steps)
    trainer = Trainer(engine, [], settings, lambda step: cfg.optimizer.lr, parallel_state.get_data_parallel_group())
    batches = random_batches(cfg, vocab, plan.micro_batch_size, plan.gradient_accumulation_steps, engine.device)
    rows = {"roots_scale (DeepSpeed)": lambda: trainer.train_step(batches, cfg.optimizer.lr)}
    if on_cpu:
        plain = PlainGPT(cfg.model, vocab)
        decay = [p for p in plain.parameters() if p.dim() >= 2]
        rest = [p for p in plain.parameters() if p.dim() < 2]
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": cfg.optimizer.weight_decay}, {"params": rest, "weight_decay": 0.0}],
            lr=cfg.optimizer.lr, betas=(cfg.optimizer.beta1, cfg.optimizer.beta2), eps=cfg.optimizer.eps)
        rows["plain PyTorch"] = lambda: plain_step(plain, optimizer, batches, cfg.optimizer.clip_grad)
    seconds: dict[str, list[float]] = {name: [] for name in rows}
    for repeat in range(2 + args.steps):  # alternate step by step, so load changes hit both alike
        for name, step in rows.items():
            start = time.perf_counter()
            step()  # ends in a host sync (.item())
            if repeat >= 2:  # warm-up: allocations, optimizer state
                seconds[name].append(time.perf_counter() - start)

    tokens_per_step = plan.global_batch_size * cfg.model.seq_length
    m = cfg.model
    print(f"\n{Path(args.config).stem}: {m.num_layers} layers, hidden {m.hidden_size}, {m.num_attention_heads} heads, "
          f"seq {m.seq_length}, vocab {vocab}, {tokens_per_step} tokens/step "
          f"(micro {plan.micro_batch_size} × {plan.gradient_accumulation_steps}), {cfg.train.precision}, "
          f"ZeRO-{cfg.parallel.zero_stage} (runs as ZeRO-{effective_zero_stage(cfg, plan)}); device {device_name()}; "
          f"{flops.flops_per_token / 1e6:,.1f} MFLOPs/token; median of {args.steps} steps")
    print(f"{'step':<26}{'s/step':>10}{'tokens/s':>12}{'TFLOP/s/dev':>13}{'MFU':>8}{'vs plain':>10}")
    reference = statistics.median(seconds["plain PyTorch"]) if on_cpu else None
    for name, times in seconds.items():
        step_seconds = statistics.median(times)
        tokens_per_sec = tokens_per_step / step_seconds
        mfu = flops.mfu(tokens_per_sec)
        ratio = f"{step_seconds / reference:.2f}x" if reference else "-"
        print(f"{name:<26}{step_seconds:>10.4f}{tokens_per_sec:>12,.0f}"
              f"{flops.flops_per_device(tokens_per_sec) / 1e12:>13.4f}{'n/a' if mfu is None else f'{mfu:.1%}':>8}"
              f"{ratio:>10}")


if __name__ == "__main__":
    main()
