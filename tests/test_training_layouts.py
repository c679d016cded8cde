"""Training through DeepSpeed computes the same thing on any layout and under either launcher (real torchrun
and the real `deepspeed` launcher; the one-process reference and the blend run on forked ranks)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from distributed_helpers import ROOT, torchrun
from in_process import pretrain_ranks
from store_helpers import write_random_store

STEPS = 8
COMMON = ["--config", "configs/tiny_gpt.yaml", f"train.iters={STEPS}", "train.log_interval=1"]


def losses(run_dir: Path) -> list[tuple[float, float]]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, STEPS + 1))
    return [(r["loss"], r["grad_norm"]) for r in records]


@pytest.mark.slow
def test_tensor_and_data_parallel_match_one_process(tmp_path: Path) -> None:
    store = write_random_store(tmp_path / "store")
    data = [f"data.path={store}"]
    # each run has global batch 8 = micro 4 × accumulation × DP
    pretrain_ranks(1, *COMMON, *data, "train.gradient_accumulation_steps=2", f"run.output_dir={tmp_path / 'tp1'}")
    proc = torchrun(2, "roots_scale/pretrain.py", *COMMON, *data, "train.gradient_accumulation_steps=2",
                    "parallel.tensor=2", f"run.output_dir={tmp_path / 'tp2'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = {name: losses(tmp_path / name) for name in ("tp1", "tp2")}

    deepspeed_launcher = Path(sys.executable).parent / "deepspeed"
    proc = subprocess.run(
        [str(deepspeed_launcher), "--num_gpus", "2", "--master_port", "29561", "roots_scale/pretrain.py",
         *COMMON, *data, "train.gradient_accumulation_steps=1", f"run.output_dir={tmp_path / 'dp2'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    results["dp2"] = losses(tmp_path / "dp2")

    for name in ("tp2", "dp2"):
        for (loss, norm), (ref_loss, ref_norm) in zip(results[name], results["tp1"]):
            assert loss == pytest.approx(ref_loss, rel=1e-5), name
            assert norm == pytest.approx(ref_norm, rel=1e-5), name


@pytest.mark.slow
def test_training_on_a_blend_file(tmp_path: Path) -> None:
    stores = [write_random_store(tmp_path / f"store{i}", seed=i) for i in range(2)]
    blend = tmp_path / "blend.yaml"
    blend.write_text("datasets:\n" + "".join(f"  - {{path: {p.name}, weight: {w}}}\n" for p, w in zip(stores, (1, 3))))
    pretrain_ranks(2, *COMMON, f"data.path={blend}", "data.num_workers=1", f"run.output_dir={tmp_path / 'run'}")
    assert len(losses(tmp_path / "run")) == STEPS
    cached = [p.name for p in (tmp_path / "run" / "index_cache").iterdir()]
    assert len(cached) == 3  # one index per store plus the interleave, built once and shared by both ranks
