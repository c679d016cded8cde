"""Layout-free checkpoint I/O: save and load time against torch.save / torch.load of the same bytes, and the
peak memory each rank adds while saving and loading, against its own shard plus the largest single tensor.

    python benchmarks/checkpoint_io.py [--nproc 2] [--layers 8] [--hidden 1024] [--vocab 32768] [--dir DIR]

Builds the engine a training run builds (fp32, ZeRO-1 over `--nproc` data-parallel ranks, forked gloo processes),
saves its layout-free state (every rank writes only what it owns, `checkpoint.deepspeed_state.save_layout_free`)
and loads it back into the engine (`load_into_engine`: with the saved tensor-parallel cut, each rank copies from
the memory-mapped files its whole weights and only its ZeRO share of the fp32 state). The baselines write each
rank's pieces with one torch.save, and torch.load one file holding exactly what a rank restores. Peak
memory is the resident anonymous memory (RssAnon), sampled every 2 ms during each phase.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import psutil  # noqa: E402
import torch  # noqa: E402

from in_process import run_ok  # noqa: E402


def anonymous_memory() -> int:
    """This process's resident anonymous memory (RssAnon): what it holds, without file pages it maps (the
    memory-mapped checkpoint files count as page cache, which the kernel reclaims)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    return psutil.Process().memory_info().rss


class PeakMemory:
    """The most anonymous memory this process held above its level at entry, sampled every 2 ms."""

    def __enter__(self) -> PeakMemory:
        self.start = anonymous_memory()
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, anonymous_memory())
            time.sleep(0.002)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, anonymous_memory())

    @property
    def added(self) -> int:
        return self.peak - self.start


def rank_io(layers: int, hidden: int, vocab: int, directory: str) -> dict[str, float]:
    import torch.distributed as dist

    from roots_scale.checkpoint import consolidated, deepspeed_state
    from roots_scale.checkpoint.manager import _coordinates
    from roots_scale.config import load_config, validate
    from roots_scale.distributed import discover_launch_env, init_distributed
    from roots_scale.run import build_engine

    cfg = load_config(ROOT / "configs/tiny_gpt.yaml", [f"data.path={ROOT}", "train.precision=fp32",
                                                       f"model.num_layers={layers}", f"model.hidden_size={hidden}",
                                                       "model.num_attention_heads=16", f"model.vocab_size={vocab}"])
    world = int(os.environ["WORLD_SIZE"])
    plan = validate(cfg, world)
    init_distributed(discover_launch_env(), 1)
    _, engine = build_engine(cfg, plan, vocab)
    deepspeed_state.link_optimizer_states(engine)
    folder = Path(directory) / "layout_free"
    at = _coordinates()
    dist.barrier()
    with PeakMemory() as save_memory:
        start = time.perf_counter()
        pieces = deepspeed_state.save_layout_free(engine, folder, at)
        save_seconds = time.perf_counter() - start
    layouts = deepspeed_state.slice_layouts(engine, at.tp_size)
    gathered: list = [None] * world
    dist.all_gather_object(gathered, (pieces, layouts))
    if at.rank == 0:
        index = consolidated.build_index({n: lay for _, rank_layouts in gathered for n, lay in rank_layouts.items()},
                                         [p for rank_pieces, _ in gathered for p in rank_pieces],
                                         deepspeed_state.adam_step(engine))
        (folder / consolidated.INDEX).write_text(json.dumps(index))
    own_bytes = (folder / consolidated.rank_file(at.rank)).stat().st_size
    payload = {p.key: v for p, v in deepspeed_state.owned_pieces(engine, at)}
    start = time.perf_counter()
    torch.save(payload, Path(directory) / f"baseline{at.rank}.pt")
    baseline_save = time.perf_counter() - start
    # what a load restores on this rank: every weight, and its own share of the fp32 state (its own pieces)
    payload.update({name: param.detach().clone() for name, param in engine.module.named_parameters()})
    torch.save(payload, Path(directory) / f"restored{at.rank}.pt")
    restored_bytes = (Path(directory) / f"restored{at.rank}.pt").stat().st_size
    del payload
    dist.barrier()
    reader = consolidated.LayoutFreeReader(folder)
    with PeakMemory() as load_memory:
        start = time.perf_counter()
        deepspeed_state.load_into_engine(engine, reader, at)
        load_seconds = time.perf_counter() - start
    start = time.perf_counter()
    loaded = torch.load(Path(directory) / f"restored{at.rank}.pt", weights_only=True)
    baseline_load = time.perf_counter() - start
    del loaded
    largest = max(p.numel() for p in engine.module.parameters()) * 4
    dist.barrier()
    return {"own_mb": own_bytes / 1e6, "save_s": save_seconds, "baseline_save_s": baseline_save,
            "restored_mb": restored_bytes / 1e6, "load_s": load_seconds, "baseline_load_s": baseline_load,
            "save_peak_mb": save_memory.added / 1e6, "load_peak_mb": load_memory.added / 1e6,
            "largest_tensor_mb": largest / 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--vocab", type=int, default=32768)
    parser.add_argument("--dir", help="where to write (default: a temporary directory)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as directory:
        results = [r.value for r in run_ok(rank_io, args.nproc, args.layers, args.hidden, args.vocab, directory,
                                           timeout=1800)]
    print(f"GPT {args.layers} layers, hidden {args.hidden}, vocab {args.vocab}; fp32, ZeRO-1 over {args.nproc} ranks")
    print(f"{'rank':<6}{'shard MB':>10}{'save MB/s':>11}{'vs torch.save':>15}{'load MB/s':>11}{'vs torch.load':>15}"
          f"{'save peak MB':>14}{'load peak MB':>14}{'shard+tensor MB':>17}")
    for rank, r in enumerate(results):
        save_bw, load_bw = r["own_mb"] / r["save_s"], r["restored_mb"] / r["load_s"]
        print(f"{rank:<6}{r['own_mb']:>10.1f}{save_bw:>11.0f}{r['baseline_save_s'] / r['save_s']:>14.2f}x"
              f"{load_bw:>11.0f}{r['baseline_load_s'] / r['load_s']:>14.2f}x{r['save_peak_mb']:>14.1f}"
              f"{r['load_peak_mb']:>14.1f}{r['own_mb'] + r['largest_tensor_mb']:>17.1f}")
    print("(load MB/s: what a rank restores, all its weights and its own share of the fp32 state, over the load "
          "time; torch.load reads the same bytes from one file)")


if __name__ == "__main__":
    main()
