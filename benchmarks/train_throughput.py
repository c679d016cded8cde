"""Training throughput of a model config: tokens/s, model TFLOP/s per device and MFU, on one process or a layout.

    python benchmarks/train_throughput.py --config configs/tiny_gpt.yaml [--steps 10] [section.key=value ...]
    python benchmarks/train_throughput.py --config configs/tiny_gpt.yaml --nproc 2 parallel.pipeline=2 ...

With --nproc N the layout's step (tensor × pipeline × data from the overrides) is timed on N torchrun workers
and set beside the 1F1B pipeline model (see `layout_table`): the bubble fraction (P − 1)/(m + P − 1) and the
step time the model predicts from one process stepping the whole model.

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
import json
import os
import statistics
import subprocess
import sys
import tempfile
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


def build_trainer(cfg: Config, plan, vocab: int):
    """(trainer, flops meter, device batches) of a training run's model and engine on the initialized world."""
    from megatron.core import parallel_state

    from roots_scale.run import build_engine
    from roots_scale.training.flops import FlopsMeter
    from roots_scale.training.pipeline import engine_steps
    from roots_scale.training.trainer import LoopSettings, Trainer

    _, engine = build_engine(cfg, plan, vocab)  # the model and engine exactly as a training run builds them
    world = torch.distributed.get_world_size()
    flops = FlopsMeter.for_run(cfg.model, vocab, world, cfg.train.precision, cfg.train.peak_tflops)
    settings = LoopSettings(cfg.train.iters, plan.micro_batch_size, plan.gradient_accumulation_steps)
    trainer = Trainer(engine, [], settings, lambda step: cfg.optimizer.lr, parallel_state.get_data_parallel_group(),
                      steps=engine_steps(engine))
    batches = random_batches(cfg, vocab, plan.micro_batch_size, plan.gradient_accumulation_steps, engine.device)
    return trainer, flops, batches


def time_steps(rows: dict, steps: int) -> dict[str, list[float]]:
    """Seconds per step of each row's step function, alternating step by step after two warm-up steps."""
    seconds: dict[str, list[float]] = {name: [] for name in rows}
    for repeat in range(2 + steps):  # alternate step by step, so load changes hit both alike
        for name, step in rows.items():
            start = time.perf_counter()
            step()  # ends in a host sync (.item())
            if repeat >= 2:  # warm-up: allocations, optimizer state
                seconds[name].append(time.perf_counter() - start)
    return seconds


def setup(config: str, overrides: list[str], world_size: int):
    """(config, batch plan, padded vocab) for a benchmark run on `world_size` processes."""
    on_cpu = not torch.cuda.is_available()
    cfg = load_config(config, [*overrides, *(["train.precision=fp32"] if on_cpu else [])])
    cfg.data.path = str(ROOT)  # random tokens, no store; validate only checks that the path exists
    plan = validate(cfg, world_size=world_size)
    vocab = padded_vocab_size(cfg.model.vocab_size or GPT2_VOCAB, cfg.model.make_vocab_size_divisible_by)
    return cfg, plan, vocab


def describe(config: str, cfg: Config, plan, vocab: int, flops, steps: int) -> str:
    from roots_scale.training.deepspeed_config import effective_zero_stage
    from roots_scale.training.flops import device_name

    m = cfg.model
    return (f"\n{Path(config).stem}: {m.num_layers} layers, hidden {m.hidden_size}, {m.num_attention_heads} heads, "
            f"seq {m.seq_length}, vocab {vocab}, {plan.global_batch_size * m.seq_length} tokens/step "
            f"(micro {plan.micro_batch_size} × {plan.gradient_accumulation_steps}"
            f"{f' × data {plan.data_parallel_size}' if plan.data_parallel_size > 1 else ''}), {cfg.train.precision}, "
            f"ZeRO-{cfg.parallel.zero_stage} (runs as ZeRO-{effective_zero_stage(cfg, plan)}); device {device_name()}; "
            f"{flops.flops_per_token / 1e6:,.1f} MFLOPs/token; median of {steps} steps")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--steps", type=int, default=20, help="timed steps of each kind (after two warm-up steps)")
    parser.add_argument("--nproc", type=int, default=1,
                        help="processes for a parallel layout (parallel.tensor × parallel.pipeline × data), started "
                             "with torchrun; the table compares them with the pipeline model of one process")
    parser.add_argument("--result", help=argparse.SUPPRESS)  # a torchrun worker's step times (JSON), for its parent
    args, overrides = parser.parse_known_args(argv)
    if args.nproc > 1 and "RANK" not in os.environ:
        layout_table(args, overrides)
        return

    from roots_scale.distributed import discover_launch_env, init_distributed

    launch = discover_launch_env()
    cfg, plan, vocab = setup(args.config, overrides, launch.world_size)
    init_distributed(launch, cfg.parallel.tensor, cfg.parallel.pipeline)
    trainer, flops, batches = build_trainer(cfg, plan, vocab)
    rows = {"roots_scale (DeepSpeed)": lambda: trainer.train_step(batches, cfg.optimizer.lr)}
    on_cpu = not torch.cuda.is_available()
    if args.result:  # a worker of layout_table: report this layout's step times and stop
        seconds = time_steps(rows, args.steps)["roots_scale (DeepSpeed)"]
        if launch.rank == 0:
            Path(args.result).write_text(json.dumps(seconds))
        return
    if on_cpu:
        plain = PlainGPT(cfg.model, vocab)
        decay = [p for p in plain.parameters() if p.dim() >= 2]
        rest = [p for p in plain.parameters() if p.dim() < 2]
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": cfg.optimizer.weight_decay}, {"params": rest, "weight_decay": 0.0}],
            lr=cfg.optimizer.lr, betas=(cfg.optimizer.beta1, cfg.optimizer.beta2), eps=cfg.optimizer.eps)
        rows["plain PyTorch"] = lambda: plain_step(plain, optimizer, batches, cfg.optimizer.clip_grad)
    seconds = time_steps(rows, args.steps)

    tokens_per_step = plan.global_batch_size * cfg.model.seq_length
    print(describe(args.config, cfg, plan, vocab, flops, args.steps))
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


def layout_table(args: argparse.Namespace, overrides: list[str]) -> None:
    """Time the layout on `--nproc` torchrun workers, then one process stepping one replica's batch with the
    whole model (same micro-batch and accumulation, same threads per process), and compare the layout's step
    time with the 1F1B pipeline model: each of the T × P model-parallel ranks does 1/(T × P) of the work per
    micro-batch, and a step takes m + P − 1 micro-batch slots, so

        predicted = T1 / (T × P) × (m + P − 1) / m,   bubble = (P − 1) / (m + P − 1).

    Communication (activations between stages, TP all-reduces, DP gradient all-reduce) is what the model leaves
    out: the gap between predicted and measured is its cost."""
    cfg, plan, vocab = setup(args.config, overrides, args.nproc)
    threads = max(1, (os.cpu_count() or 1) // args.nproc) if not torch.cuda.is_available() else None
    with tempfile.TemporaryDirectory() as scratch:
        result = Path(scratch) / "layout.json"
        env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={args.nproc}",
                   __file__, "--config", args.config, "--steps", str(args.steps), "--result", str(result), *overrides]
        subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
        layout_seconds = json.loads(result.read_text())

    from roots_scale.distributed import discover_launch_env, init_distributed
    from roots_scale.training.flops import FlopsMeter

    if threads:
        torch.set_num_threads(threads)
    single = [*overrides, "parallel.tensor=1", "parallel.pipeline=1",
              f"train.gradient_accumulation_steps={plan.gradient_accumulation_steps}",
              f"train.micro_batch_size={plan.micro_batch_size}", "train.global_batch_size=null"]
    one_cfg, one_plan, _ = setup(args.config, single, 1)
    init_distributed(discover_launch_env(), 1, 1)
    trainer, one_flops, batches = build_trainer(one_cfg, one_plan, vocab)
    one = time_steps({"one": lambda: trainer.train_step(batches, one_cfg.optimizer.lr)}, args.steps)["one"]

    t, p, m = cfg.parallel.tensor, cfg.parallel.pipeline, plan.gradient_accumulation_steps
    t1, measured = statistics.median(one), statistics.median(layout_seconds)
    predicted = t1 / (t * p) * (m + p - 1) / m
    bubble = (p - 1) / (m + p - 1)
    tokens_per_sec = plan.global_batch_size * cfg.model.seq_length / measured
    one_tokens_per_sec = one_plan.global_batch_size * cfg.model.seq_length / t1
    flops = FlopsMeter.for_run(cfg.model, vocab, args.nproc, cfg.train.precision, cfg.train.peak_tflops)
    print(describe(args.config, cfg, plan, vocab, flops, args.steps))
    print(f"layout tensor {t} × pipeline {p} × data {plan.data_parallel_size} on {args.nproc} processes"
          f"{f' ({threads} thread(s) each)' if threads else ''}; m = {m} micro-batches per step")
    print(f"{'':<34}{'s/step':>10}{'tokens/s':>12}{'TFLOP/s/dev':>13}{'MFU':>8}")
    mfu = flops.mfu(tokens_per_sec)
    print(f"{'one process, whole model (T1)':<34}{t1:>10.4f}{one_tokens_per_sec:>12,.0f}"
          f"{one_flops.flops_per_device(one_tokens_per_sec) / 1e12:>13.4f}{'':>8}")
    print(f"{'layout, measured':<34}{measured:>10.4f}{tokens_per_sec:>12,.0f}"
          f"{flops.flops_per_device(tokens_per_sec) / 1e12:>13.4f}{'n/a' if mfu is None else f'{mfu:.1%}':>8}")
    print(f"{'layout, 1F1B model (no comm.)':<34}{predicted:>10.4f}")
    print(f"pipeline bubble (P−1)/(m+P−1) = {bubble:.1%}; measured / predicted = {measured / predicted:.2f}")


if __name__ == "__main__":
    main()
