"""Two real nodes on one machine (launch/local_slurm.sh start --nodes 2: network namespaces on a private bridge,
own hostnames, a node-local directory each): training through sbatch, torchrun and mpirun across both, a node-local
index cache, a node killed mid-run and the job resumed, a hung node detected, the data pipeline's arrays."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from distributed_helpers import ROOT
from pipeline_helpers import check_data_pipeline_matches_a_local_run
from slurm_cluster import SlurmCluster, local_cluster
from store_helpers import write_random_store

pytestmark = pytest.mark.slow
PROFILE = ROOT / "configs" / "clusters" / "local_2node.yaml"
ITERS = 200  # a few seconds of training: time for a kill to land between a checkpoint and the end
TRAIN = ["configs/tiny_gpt.yaml", f"train.iters={ITERS}", "train.save_interval=20", "train.log_interval=1"]


@pytest.fixture(scope="module")
def cluster() -> Iterator[SlurmCluster]:
    yield from local_cluster(nodes=2)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return write_random_store(tmp_path_factory.mktemp("multinode") / "store")


@pytest.fixture(scope="module")
def reference(cluster: SlurmCluster, store: Path, tmp_path_factory) -> dict[int, float]:
    """The losses of an undisturbed run on both nodes, one process each, with the cache in the run directory."""
    run = tmp_path_factory.mktemp("reference") / "run"
    job = submit(cluster, run, store, run.parent)
    [record] = cluster.wait(job, timeout=300)
    assert record["JobState"] == "COMPLETED", log_of(run.parent, job)
    assert json.loads((run / "placement.json").read_text())["nodes"] == ["node1", "node2"]
    return losses(run)


def submit(cluster: SlurmCluster, run: Path, store: Path, logs: Path, *overrides: str,
           tasks_per_node: int = 1) -> str:
    return cluster.sbatch("--nodes=2", f"--ntasks-per-node={tasks_per_node}", f"--output={logs}/%j.out",
                          "launch/pretrain.slurm", *TRAIN, f"data.path={store}", f"run.output_dir={run}", *overrides)


def log_of(logs: Path, job: str) -> str:
    path = logs / f"{job}.out"
    return path.read_text()[-4000:] if path.is_file() else "(no log)"


def losses(run: Path) -> dict[int, float]:
    """Step → loss; for a resumed run, the last attempt's value of each step."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {row["step"]: row["loss"] for row in rows if "loss" in row}


def wait_for_step(run: Path, step: int, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not (run / "metrics.jsonl").is_file() or max(losses(run), default=0) < step:
        assert time.monotonic() < deadline, f"{run} never reached step {step}"
        time.sleep(0.1)


def test_two_nodes_train_as_one_node_and_keep_tensor_groups_inside_a_node(cluster: SlurmCluster, store: Path,
                                                                           tmp_path: Path) -> None:
    """sbatch --nodes 2 launch/pretrain.slurm, 2 processes per node, tensor parallel 2 × data parallel 2: the
    losses of the same layout on one node (torchrun), and each tensor-parallel group on one host."""
    layout = ["parallel.tensor=2", f"train.iters={ITERS // 10}"]
    job = submit(cluster, tmp_path / "two", store, tmp_path, *layout, tasks_per_node=2)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one_node = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "4",
                               "-m", "roots_scale.pretrain", "--config", *TRAIN, f"data.path={store}",
                               f"run.output_dir={tmp_path / 'one'}", *layout],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert one_node.returncode == 0, one_node.stderr[-3000:]
    [record] = cluster.wait(job, timeout=300)
    assert record["JobState"] == "COMPLETED", log_of(tmp_path, job)
    assert losses(tmp_path / "two") == losses(tmp_path / "one") and len(losses(tmp_path / "one")) == ITERS // 10
    placement = json.loads((tmp_path / "two" / "placement.json").read_text())
    assert placement["hosts"] == ["node1", "node1", "node2", "node2"]
    assert [group["hosts"] for group in placement["tensor_groups"]] == [["node1"], ["node2"]]
    assert not placement["tensor_groups_span_nodes"]
    assert (tmp_path / "two" / "checkpoints" / "latest").read_text().strip() == f"iter_{ITERS // 10:07d}"


def test_a_node_local_index_cache_builds_the_same_indices_and_losses(cluster: SlurmCluster, store: Path,
                                                                     reference: dict[int, float],
                                                                     tmp_path: Path) -> None:
    """data.cache_dir on each node's own directory (ROOTS_NODE_LOCAL): each node builds the sample index, the
    two are byte-identical, and the losses are those of the shared cache."""
    local = cluster.state / "local"  # one path; each node sees its own directory there
    job = submit(cluster, tmp_path / "run", store, tmp_path, f"data.cache_dir={local}/cache")
    [record] = cluster.wait(job, timeout=300)
    assert record["JobState"] == "COMPLETED", log_of(tmp_path, job)
    assert losses(tmp_path / "run") == reference
    built = []
    for node in ("node1", "node2"):
        cache = cluster.node_local(node) / "cache"
        built.append({str(p.relative_to(cache)): p.read_bytes() for p in sorted(cache.rglob("*")) if p.is_file()})
    assert built[0] and any(name.endswith(".npy") for name in built[0]) and built[0] == built[1]
    assert not any(local.iterdir())  # nothing reached the shared filesystem at that path


def test_a_killed_node_ends_the_job_and_the_requeued_job_resumes_with_the_same_losses(
        cluster: SlurmCluster, store: Path, reference: dict[int, float], tmp_path: Path) -> None:
    """Every process of node2 killed mid-run (as a crashed node): node1's ranks stop at once, SLURM marks the node
    down and requeues the job (NODE_FAIL), which waits for two nodes; node2 back, it resumes from the last
    checkpoint and every loss is bitwise the undisturbed run's."""
    run = tmp_path / "run"
    job = submit(cluster, run, store, tmp_path)
    wait_for_step(run, 45)  # past the checkpoints of steps 20 and 40
    killed = cluster.script("kill-node", "node2")
    assert killed.returncode == 0, killed.stderr
    killed_at = time.monotonic()
    while cluster.records(job)[0]["JobState"] == "RUNNING":
        assert time.monotonic() - killed_at < 120, cluster.records(job)
        time.sleep(0.5)
    [record] = cluster.records(job)
    assert record["JobState"] in ("PENDING", "REQUEUED") and record["Restarts"] == "1", record
    first_attempt = log_of(tmp_path, job)
    assert "a collective lost a peer" in first_attempt and "NODE FAILURE" in first_attempt, first_attempt
    interrupted_at = max(losses(run))
    assert interrupted_at < ITERS

    restarted = cluster.script("start", "--nodes", "2")  # node2's slurmd back: the node returns to service
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    [record] = cluster.wait(job, timeout=300)
    log = log_of(tmp_path, job)
    assert record["JobState"] == "COMPLETED", log
    resumed_from = int(log.split("resumed from step ")[1].split(";")[0])
    assert resumed_from % 20 == 0 and 40 <= resumed_from <= interrupted_at
    assert losses(run) == reference
    assert json.loads((run / "exit_status.json").read_text())["reason"] == "finished"


def test_a_hung_node_is_detected_within_the_collective_timeout(cluster: SlurmCluster, store: Path,
                                                               tmp_path: Path) -> None:
    """node2's training process stopped (SIGSTOP: alive, silent): node1's rank fails its collective after
    parallel.collective_timeout_s, exit_status.json says peer_failed, and the job ends instead of hanging."""
    run = tmp_path / "run"
    job = submit(cluster, run, store, tmp_path, "train.iters=100000", "parallel.collective_timeout_s=8")
    wait_for_step(run, 5)
    trainers = [pid for pid in cluster.node_pids("node2")
                if b"roots_scale.pretrain" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    assert trainers
    for pid in trainers:
        os.kill(pid, signal.SIGSTOP)
    stopped_at = time.monotonic()
    while not (run / "exit_status.json").is_file():
        assert time.monotonic() - stopped_at < 60, log_of(tmp_path, job)
        time.sleep(0.2)
    detected_after = time.monotonic() - stopped_at
    [record] = cluster.wait(job, timeout=120)
    status = json.loads((run / "exit_status.json").read_text())
    assert status["reason"] == "peer_failed" and "Timed out" in status["message"], status
    assert 8 <= detected_after < 40
    assert (record["JobState"], record["ExitCode"]) == ("FAILED", "4:0"), log_of(tmp_path, job)


def test_torchrun_and_mpirun_train_across_the_two_nodes(cluster: SlurmCluster, store: Path,
                                                        reference: dict[int, float], tmp_path: Path) -> None:
    """roots-launch train --launcher torchrun (c10d rendezvous on node1), run once per node by srun; and mpirun
    inside a two-node allocation (Open MPI starts its daemons with srun: no ssh). Both: the reference losses."""
    overrides = [f"train.iters={ITERS}", "train.save_interval=20", "train.log_interval=1", f"data.path={store}"]
    script = tmp_path / "torchrun.sh"
    rendered = cluster.run(sys.executable, "-m", "roots_scale.launch.cli", "train", "--launcher", "torchrun",
                           "--cluster", str(PROFILE), "--config", "configs/tiny_gpt.yaml", "--output", str(script),
                           *overrides, f"run.output_dir={tmp_path / 'torchrun'}")
    assert rendered.returncode == 0, rendered.stderr
    torchrun = cluster.run("srun", "--nodes=2", "--ntasks-per-node=1", "bash", str(script), timeout=300)
    assert torchrun.returncode == 0, torchrun.stderr[-3000:]
    assert json.loads((tmp_path / "torchrun" / "placement.json").read_text())["hosts"] == ["node1", "node2"]
    assert losses(tmp_path / "torchrun") == reference

    mpirun = Path(sys.executable).parent / "mpirun"
    command = (f"{mpirun} --allow-run-as-root -np 2 --map-by node {sys.executable} -m roots_scale.pretrain "
               f"--config configs/tiny_gpt.yaml {' '.join(overrides)} run.output_dir={tmp_path / 'mpirun'}")
    job = cluster.sbatch("--nodes=2", "--ntasks-per-node=1", f"--output={tmp_path}/%j.out", "--wrap", command)
    [record] = cluster.wait(job, timeout=300)
    assert record["JobState"] == "COMPLETED", log_of(tmp_path, job)
    assert json.loads((tmp_path / "mpirun" / "placement.json").read_text())["hosts"] == ["node1", "node2"]
    assert losses(tmp_path / "mpirun") == reference


def test_data_pipeline_arrays_run_on_both_nodes_and_match_a_local_run(cluster: SlurmCluster,
                                                                      tmp_path: Path) -> None:
    records = check_data_pipeline_matches_a_local_run(cluster, tmp_path, PROFILE)
    hosts = {task["BatchHost"] for tasks in records.values() for task in tasks}
    assert hosts == {"node1", "node2"}
