"""The textbook baselines against the transformer: an LSTM, a GRU and a GPT of about the same parameter count,
trained by `roots-train` on the same tokens of the same store for the same number of steps.

    python benchmarks/recurrent_vs_transformer.py [--store STORE] [--steps 150] [--nproc 1] [section.key=value ...]

Without --store it first builds the small real-text store `make demo` builds (the built-in MediaWiki dump and
WARC → extract → clean → dedup → sentencepiece tokenizer → token store) in a temporary directory. The GPT is
configs/tiny_gpt.yaml (GPT-2 style) at `--gpt-hidden`; the LSTM and GRU get the hidden size (a multiple of 4) whose
parameter count is nearest the GPT's, with the same number of layers, tied embeddings and the same optimizer,
batch, sequence length, seed and data order. Each run is a real `roots-train` process (torchrun with --nproc > 1);
the table reads their metrics.jsonl (validation perplexity after the last step; the median of the logged
training tokens/s) and their final checkpoints (parameters), with the GPT as the baseline of each ratio.
Extra `section.key=value` overrides apply to all three runs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
warnings.filterwarnings("ignore", message="Transformer Engine and Apex are not installed")  # before megatron imports

import torch  # noqa: E402

from roots_core.token_store import TokenStore  # noqa: E402
from roots_scale.checkpoint.consolidated import read_full_state  # noqa: E402
from roots_scale.config import load_config  # noqa: E402
from roots_scale.models.recurrent import RecurrentLM  # noqa: E402
from roots_scale.training.flops import model_flops_per_token  # noqa: E402

CONFIG = "configs/tiny_gpt.yaml"
ARCHS = ("gpt", "lstm", "gru")


@dataclass
class Result:
    """One trained model: what the table shows."""

    arch: str
    hidden: int
    parameters: int
    flops_per_token: int
    valid_ppl: float
    tokens_per_sec: float


def build_demo_store(work: Path) -> Path:
    """The `make demo` store (corpus → extract → clean → dedup → tokenizer → tokenize), built under `work`."""
    raw = work / "raw"
    steps = [["demo-corpus", "--output", str(raw)],
             ["extract", "--format", "wikipedia", "--output", str(work / "docs"),
              str(raw / "wikipedia" / "demowiki-pages-articles.xml.bz2")],
             ["extract", "--format", "warc", "--output", str(work / "docs"),
              str(raw / "commoncrawl" / "demo.warc.gz")],
             ["clean", "--input", str(work / "docs"), "--output", str(work / "clean")],
             ["dedup", "--input", str(work / "clean"), "--output", str(work / "dedup")],
             ["train-tokenizer", "--input", str(work / "dedup"), "--output", str(work / "tokenizer" / "spm"),
              "--vocab-size", "2000"],
             ["tokenize", "--input", str(work / "dedup"), "--tokenizer", str(work / "tokenizer" / "spm.model"),
              "--output", str(work / "store")]]
    for step in steps:  # as commands, like `make demo`: extract's HTML sandbox is spawned, re-importing __main__
        proc = subprocess.run([sys.executable, "-m", "data_tools.cli", *step], cwd=ROOT, capture_output=True,
                              text=True, check=False)
        if proc.returncode != 0:
            raise SystemExit(f"roots-data {' '.join(step)} failed:\n{proc.stderr[-3000:]}")
    return work / "store"


def recurrent_parameters(arch: str, hidden: int, layers: int, vocab_rows: int) -> int:
    """Parameters of a RecurrentLM, counted on the meta device (nothing allocated)."""
    cfg = load_config(CONFIG, [f"model.arch={arch}", f"model.hidden_size={hidden}", f"model.num_layers={layers}"])
    with torch.device("meta"):
        return sum(p.numel() for p in RecurrentLM(cfg.model, vocab_rows).parameters())


def matched_hidden(arch: str, target: int, layers: int, vocab_rows: int) -> int:
    """The hidden size (a multiple of 4, as model.num_attention_heads requires) whose parameter count is nearest
    `target`: a bisection, the count growing with the hidden size."""
    low, high = 1, 1024  # in units of 4
    while low < high:
        middle = (low + high) // 2
        if recurrent_parameters(arch, 4 * middle, layers, vocab_rows) < target:
            low = middle + 1
        else:
            high = middle
    candidates = [4 * max(1, low - 1), 4 * low]
    return min(candidates, key=lambda h: abs(recurrent_parameters(arch, h, layers, vocab_rows) - target))


def train(store: Path, run_dir: Path, steps: int, nproc: int, overrides: list[str]) -> None:
    """One fresh `roots-train` run: `steps` steps, validation and a checkpoint after the last."""
    shutil.rmtree(run_dir, ignore_errors=True)  # a finished run left in --work would resume and train nothing
    args = ["--config", CONFIG, f"data.path={store}", f"run.output_dir={run_dir}", f"train.iters={steps}",
            f"train.eval_interval={steps}", f"train.save_interval={steps}", "train.log_interval=1",
            "run.tensorboard=false", *overrides]
    env = {**os.environ}
    if nproc == 1:
        command = [sys.executable, str(ROOT / "roots_scale" / "pretrain.py"), *args]
    else:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // nproc))
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
                   str(ROOT / "roots_scale" / "pretrain.py"), *args]
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{run_dir.name} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")


def read_result(arch: str, hidden: int, run_dir: Path) -> Result:
    """The table's row of one finished run, from its metrics and its last checkpoint."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    state = read_full_state(run_dir)
    rows = state.params["embedding.weight"].shape[0]
    return Result(arch, hidden, sum(t.numel() for t in state.params.values()),
                  model_flops_per_token(state.config.model, rows),
                  next(r["valid_ppl"] for r in reversed(records) if "valid_ppl" in r),
                  statistics.median(r["tokens_per_sec"] for r in records[1:] if r.get("tokens_per_sec")))


def table(results: list[Result]) -> str:
    """The results side by side, each ratio against the GPT (the first row)."""
    base = results[0]
    lines = [(f"{'model':<6}{'hidden':>7}{'parameters':>12}{'vs GPT':>8}{'MFLOP/token':>13}{'valid ppl':>11}"
              f"{'vs GPT':>8}{'tokens/s':>10}{'vs GPT':>8}")]
    for r in results:
        lines.append(f"{r.arch:<6}{r.hidden:>7}{r.parameters:>12,}{r.parameters / base.parameters:>8.2f}"
                     f"{r.flops_per_token / 1e6:>13.2f}{r.valid_ppl:>11.2f}{r.valid_ppl / base.valid_ppl:>8.2f}"
                     f"{r.tokens_per_sec:>10,.0f}{r.tokens_per_sec / base.tokens_per_sec:>8.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", type=Path, help="token store to train on (default: build the demo store)")
    parser.add_argument("--steps", type=int, default=150, help="training steps of each model")
    parser.add_argument("--gpt-hidden", type=int, default=128, help="the GPT's hidden size; the others match it")
    parser.add_argument("--nproc", type=int, default=1, help="training processes (data parallel, torchrun)")
    parser.add_argument("--work", type=Path, help="keep the store and runs here (default: a temporary directory)")
    args, overrides = parser.parse_known_args(argv)
    overrides = ["model.seq_length=64", "train.micro_batch_size=8", "train.eval_iters=10", "optimizer.lr=2e-3",
                 "optimizer.min_lr=2e-4", *overrides]
    cfg = load_config(CONFIG, overrides)
    with tempfile.TemporaryDirectory() as scratch:
        work = args.work or Path(scratch)
        store = args.store or build_demo_store(work / "demo")
        tokens = TokenStore(store).num_tokens
        results: list[Result] = []
        for arch in ARCHS:
            if arch == "gpt":
                hidden = args.gpt_hidden
            else:
                rows = read_full_state(work / "run_gpt").params["embedding.weight"].shape[0]
                hidden = matched_hidden(arch, results[0].parameters, cfg.model.num_layers, rows)
            run_dir = work / f"run_{arch}"
            train(store, run_dir, args.steps, args.nproc, [f"model.arch={arch}", f"model.hidden_size={hidden}",
                                                           *overrides])
            results.append(read_result(arch, hidden, run_dir))
    print(f"\n{'the demo store' if args.store is None else store} ({tokens:,} tokens): {args.steps} steps of "
          f"{cfg.train.micro_batch_size * args.nproc} × {cfg.model.seq_length} tokens, {cfg.model.num_layers} layers, "
          f"lr {cfg.optimizer.lr:g}, {args.nproc} process(es) on {os.cpu_count()} CPU cores"
          f"{' / ' + torch.cuda.get_device_name() if torch.cuda.is_available() else ''}")
    print(table(results))


if __name__ == "__main__":
    main()
