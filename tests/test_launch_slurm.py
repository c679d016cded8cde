"""launch/ against a real one-node SLURM cluster: pretraining with requeue, a failing job, data-pipeline arrays, PMIx."""

from __future__ import annotations

import json
import re
import shlex
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from distributed_helpers import ROOT
from pipeline_helpers import check_data_pipeline_matches_a_local_run
from slurm_cluster import SlurmCluster, local_cluster
from store_helpers import write_random_store

pytestmark = pytest.mark.slow
ITERS = 200  # long enough (several seconds) for the signal to land mid-run
CPU_PROFILE = ROOT / "configs" / "clusters" / "local_cpu.yaml"


@pytest.fixture(scope="module")
def slurm_cluster() -> Iterator[SlurmCluster]:
    yield from local_cluster()


def read_metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_pretrain_slurm_trains_checkpoints_and_requeues_on_the_signal_until_done(
        slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    """sbatch launch/pretrain.slurm: 2 CPU tasks train; SIGUSR1 (what --signal sends) makes the run save and the
    job requeue itself; the second attempt resumes from that checkpoint and finishes."""
    store, run, logs = write_random_store(tmp_path / "store"), tmp_path / "run", tmp_path / "logs"
    logs.mkdir()
    job = slurm_cluster.sbatch(
        "--ntasks-per-node=2", f"--output={logs}/%x-%j.out", "launch/pretrain.slurm", "configs/tiny_gpt.yaml",
        f"data.path={store}", f"run.output_dir={run}", f"train.iters={ITERS}", "train.save_interval=1000")
    deadline = time.monotonic() + 180
    while not ((run / "metrics.jsonl").is_file() and (run / "metrics.jsonl").read_text().count("\n") >= 3):
        assert time.monotonic() < deadline, slurm_cluster.records(job)
        time.sleep(0.2)
    signalled = slurm_cluster.run("scancel", "--signal=USR1", job)  # to the job's tasks, as --signal=USR1@N does
    assert signalled.returncode == 0, signalled.stderr

    [record] = slurm_cluster.wait(job, timeout=300)
    log = (logs / f"roots-pretrain-{job}.out").read_text()
    assert (record["JobState"], record["ExitCode"], record["Restarts"]) == ("COMPLETED", "0:0", "1"), log[-3000:]
    preempted = int(re.search(r"preempted at step (\d+), checkpoint saved; requeueing", log).group(1))
    assert 3 <= preempted < ITERS
    assert "restart 1: 1 node(s) x 2 process(es)" in log
    assert f"finished at step {ITERS} (resumed from step {preempted}; 2 processes" in log
    assert json.loads((run / "exit_status.json").read_text())["reason"] == "finished"
    checkpoints = run / "checkpoints"
    assert (checkpoints / "latest").read_text().strip() == f"iter_{ITERS:07d}"
    assert (checkpoints / f"iter_{preempted:07d}").is_dir()  # the checkpoint the signal asked for
    assert [m["step"] for m in read_metrics(run)] == list(range(1, ITERS + 1))  # nothing lost or repeated


def test_pretrain_slurm_bad_config_fails_before_training_and_is_not_requeued(
        slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    """CONFIG from the environment, overrides as arguments; a typo fails in the preflight with its message."""
    job = slurm_cluster.sbatch(f"--output={tmp_path}/%x-%j.out", "launch/pretrain.slurm", "train.itres=5",
                               env={"CONFIG": "configs/tiny_gpt.yaml"})
    [record] = slurm_cluster.wait(job, timeout=120)
    log = (tmp_path / f"roots-pretrain-{job}.out").read_text()
    assert (record["JobState"], record["Restarts"]) == ("FAILED", "0"), log
    assert "unknown key 'train.itres'; did you mean 'train.iters'?" in log
    assert "pretrain.slurm: job" not in log  # stopped before launching the training step


def test_pretrain_slurm_bad_blend_fails_in_the_preflight(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    """The preflight reads the blend and splits the stores as training would: a bad blend fails in seconds."""
    store = write_random_store(tmp_path / "store", num_documents=10)
    blend = tmp_path / "blend.yaml"
    blend.write_text(f"datasets:\n  - {{path: {store}, weight: -1}}\n")
    job = slurm_cluster.sbatch(f"--output={tmp_path}/%x-%j.out", "launch/pretrain.slurm", f"data.path={blend}",
                               env={"CONFIG": "configs/tiny_gpt.yaml"})
    [record] = slurm_cluster.wait(job, timeout=120)
    log = (tmp_path / f"roots-pretrain-{job}.out").read_text()
    assert (record["JobState"], record["Restarts"]) == ("FAILED", "0"), log
    assert f"pretrain.slurm: error: {blend}" in log and "'weight' must be a finite number" in log, log
    assert "pretrain.slurm: job" not in log


def test_pretrain_slurm_runs_a_pipeline_layout_and_its_preflight_checks_the_layout(slurm_cluster: SlurmCluster,
                                                                                    tmp_path: Path) -> None:
    """tensor × pipeline × data against the job's processes: 1 × 3 cannot run on 2 and fails in the preflight;
    1 × 2 × 1 trains, checkpoints and finishes."""
    store = write_random_store(tmp_path / "store")
    jobs = {stages: slurm_cluster.sbatch(
        "--ntasks-per-node=2", f"--output={tmp_path}/pp{stages}-%j.out", "launch/pretrain.slurm",
        "configs/tiny_gpt.yaml", f"data.path={store}", f"run.output_dir={tmp_path / f'run{stages}'}",
        "model.num_layers=6", "train.iters=4", "train.save_interval=2", f"parallel.pipeline={stages}")
        for stages in (3, 2)}
    records = {stages: slurm_cluster.wait(job, timeout=300)[0] for stages, job in jobs.items()}
    logs = {stages: (tmp_path / f"pp{stages}-{job}.out").read_text() for stages, job in jobs.items()}
    assert (records[3]["JobState"], records[3]["Restarts"]) == ("FAILED", "0"), logs[3]
    assert "parallel.tensor × parallel.pipeline = 1 × 3 = 3 does not divide the 2 processes" in logs[3]
    assert "pretrain.slurm: job" not in logs[3]
    assert records[2]["JobState"] == "COMPLETED", logs[2][-3000:]
    assert "layout tensor 1 × pipeline 2 × data 1" in logs[2]
    assert [m["step"] for m in read_metrics(tmp_path / "run2")] == [1, 2, 3, 4]
    meta = yaml.safe_load((tmp_path / "run2" / "checkpoints" / "iter_0000004" / "meta.yaml").read_text())
    assert meta["layout"]["pipeline"] == 2


def test_generated_slurm_job_stops_requeueing_a_run_that_makes_no_progress(slurm_cluster: SlurmCluster,
                                                                           tmp_path: Path) -> None:
    """roots-launch train --submit on the local CPU profile (its #SBATCH header read by the real sbatch), with a
    stand-in trainer that keeps asking for a requeue at the same step: requeued once, then the job fails instead
    of looping. (The job script's decisions are under test here, not training.)"""
    store, run, trainer = write_random_store(tmp_path / "store", num_documents=10), tmp_path / "run", tmp_path / "trainer"
    trainer.write_text(
        "#!/bin/bash\n"
        f'if [ "$1" = -c ]; then echo {shlex.quote(str(run))}; exit 0; fi  # the preflight asks for the run dir\n'
        f"mkdir -p {shlex.quote(str(run))}\n"
        f"""[ "$SLURM_PROCID" = 0 ] && echo '{{"reason": "exit_duration", "step": 7, "requeue": true}}' """
        f"> {shlex.quote(str(run / 'exit_status.json'))}\n"
        "exit 3\n")
    trainer.chmod(0o755)
    profile = tmp_path / "cluster.yaml"
    profile.write_text(yaml.safe_dump(yaml.safe_load(CPU_PROFILE.read_text()) | {"python": str(trainer)}))
    submitted = slurm_cluster.run(sys.executable, "-m", "roots_scale.launch.cli", "train", "--cluster", str(profile),
                                  "--config", str(ROOT / "configs/tiny_gpt.yaml"), f"data.path={store}",
                                  f"run.output_dir={run}", "--submit", cwd=tmp_path)
    assert submitted.returncode == 0, submitted.stderr
    job = re.search(r"Submitted batch job (\d+)", submitted.stdout).group(1)
    [record] = slurm_cluster.wait(job, timeout=120)
    log = (tmp_path / "logs" / f"tiny_gpt-{job}.out").read_text()
    assert (record["JobState"], record["Restarts"], record["NumTasks"]) == ("FAILED", "1", "2"), log
    assert "pretrain.slurm: job" in log and "1 node(s) x 2 process(es), 1 CPU(s) each" in log
    assert "exit_duration at step 7, checkpoint saved; requeueing" in log
    assert "exit_duration at step 7, no progress since the previous attempt; not requeueing" in log


def test_generated_data_pipeline_arrays_match_a_local_run(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    """roots-launch data → extract/clean/dedup(3 phases)/train-tokenizer/tokenize as 2-task arrays chained afterok:
    byte-identical shards, tokenizer and token store to running each stage once, locally."""
    check_data_pipeline_matches_a_local_run(slurm_cluster, tmp_path, CPU_PROFILE)


def test_srun_mpi_pmix_gives_mpi_and_slurm_the_same_ranks(slurm_cluster: SlurmCluster) -> None:
    """`srun --mpi=pmix`: MPI (mpi4py over the PyPI Open MPI) initializes, and its ranks are the SLURM_PROCID /
    SLURM_NTASKS that roots_scale's discovery reads under srun (tests/test_distributed.py)."""
    code = ("import json, os; from mpi4py import MPI; c = MPI.COMM_WORLD; print(json.dumps([c.Get_rank(), "
            "c.Get_size(), int(os.environ['SLURM_PROCID']), int(os.environ['SLURM_NTASKS'])]))")
    result = slurm_cluster.run("srun", "--mpi=pmix", "--ntasks=2", sys.executable, "-c", code)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = sorted(json.loads(line) for line in result.stdout.splitlines() if line.startswith("["))
    assert rows == [[0, 2, 0, 2], [1, 2, 1, 2]]
