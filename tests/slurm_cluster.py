"""A real SLURM cluster on this machine (launch/local_slurm.sh: one node, or several in network namespaces) as a
pytest fixture, or the reason there is none."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from distributed_helpers import ROOT

SCRIPT = ROOT / "launch" / "local_slurm.sh"
FAILED = {"FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE", "PREEMPTED"}


def unavailable_reason(nodes: int = 1) -> str | None:
    """Why this machine cannot host a local cluster of `nodes` (not Linux, not root, no SLURM and no apt, no
    namespaces tools), or None."""
    if not sys.platform.startswith("linux"):
        return f"needs Linux, this is {sys.platform}"
    if os.geteuid() != 0:
        return "needs root: it installs munge and SLURM and starts munged as the munge user"
    if not Path("/usr/sbin/slurmd").exists() and shutil.which("apt-get") is None:
        return "SLURM is not installed and there is no apt-get to install it (Debian/Ubuntu only)"
    if nodes > 1 and (shutil.which("ip") is None or shutil.which("nsenter") is None):
        return "needs iproute2 (ip) and util-linux (nsenter) for the nodes' network namespaces"
    return None


@dataclass
class SlurmCluster:
    """The running cluster: an environment that points the SLURM commands at it, and job helpers."""

    env: dict[str, str]
    state: Path  # ROOTS_SLURM_DIR

    def node_local(self, node: str) -> Path:
        """What `node` sees at ROOTS_NODE_LOCAL (its own directory; the other nodes see theirs there)."""
        return self.state / "nodes" / node / "local"

    def node_pids(self, node: str) -> list[int]:
        """Every process running on `node` (in its network namespace)."""
        namespace = next(line.split()[2] for line in (self.state / "etc" / "nodes").read_text().splitlines()
                         if line.split()[0] == node)
        listed = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True, check=True)
        return [int(pid) for pid in listed.stdout.split()]

    def script(self, *args: str) -> subprocess.CompletedProcess:
        """launch/local_slurm.sh ARGS... on this cluster."""
        return self.run("bash", str(SCRIPT), *args, timeout=300)

    def run(self, *args: str, cwd: Path = ROOT, env: dict[str, str] | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(list(args), cwd=cwd, env={**self.env, **(env or {})}, capture_output=True,
                              text=True, timeout=timeout)

    def sbatch(self, *args: str, cwd: Path = ROOT, env: dict[str, str] | None = None) -> str:
        """Submit; return the job id."""
        result = self.run("sbatch", "--parsable", *args, cwd=cwd, env=env)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip().split(";")[0]

    def records(self, job_id: str) -> list[dict[str, str]]:
        """`scontrol show job` fields, one dict per job (per task for an array)."""
        out = self.run("scontrol", "show", "job", "-o", job_id).stdout
        return [dict(re.findall(r"(\w+)=(\S*)", line)) for line in out.splitlines() if line.strip()]

    def wait(self, job_id: str, timeout: float = 300) -> list[dict[str, str]]:
        """Poll (faster than sbatch --wait's back-off) until every task of the job has ended; return the records."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            records = self.records(job_id)
            if records and all(r["JobState"] == "COMPLETED" or r["JobState"] in FAILED
                               or r.get("Reason") == "DependencyNeverSatisfied" for r in records):
                return records
            time.sleep(0.5)
        raise AssertionError(f"job {job_id} still running after {timeout}s: {self.records(job_id)}")


def local_cluster(nodes: int = 1) -> Iterator[SlurmCluster]:
    """For a fixture: start a cluster of its own of `nodes` nodes (installing the packages if needed), yield it,
    stop it."""
    reason = unavailable_reason(nodes)
    if reason is not None:
        pytest.skip(f"no local SLURM cluster: {reason}")
    state = Path(tempfile.mkdtemp(prefix="roots-slurm-", dir="/tmp"))  # short: slurmd's socket paths live here
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}  # not the job this runs in, if any
    env.update(ROOTS_SLURM_DIR=str(state), OMP_NUM_THREADS="1", PYTHON=sys.executable)
    started = subprocess.run(["bash", str(SCRIPT), "start", "--nodes", str(nodes)], env=env, capture_output=True,
                             text=True, timeout=900)
    try:
        if started.returncode != 0:
            pytest.fail(f"launch/local_slurm.sh start failed:\n{started.stdout[-3000:]}\n{started.stderr[-3000:]}")
        yield SlurmCluster({**env, "SLURM_CONF": str(state / "etc" / "slurm.conf")}, state)
    finally:
        stopped = subprocess.run(["bash", str(SCRIPT), "stop"], env=env, capture_output=True, text=True, timeout=120)
        if stopped.returncode == 0:
            shutil.rmtree(state, ignore_errors=True)
