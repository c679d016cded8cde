"""Run a worker script under real torchrun (gloo on CPU) and collect what rank 0 wrote."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
TORCHRUN = Path(sys.executable).parent / "torchrun"


def torchrun_command(nproc: int, script: Path | str, *args: str,
                     env: dict[str, str] | None = None) -> tuple[list[str], dict[str, str]]:
    """The command line and environment of `torchrun --standalone --nproc_per_node N script args...`."""
    run_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    run_env.pop("RANK", None)
    run_env.pop("WORLD_SIZE", None)
    return [str(TORCHRUN), "--standalone", "--nproc_per_node", str(nproc), str(script), *args], run_env


def torchrun(nproc: int, script: Path | str, *args: str, timeout: int = 600,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run torchrun from the repository root to completion."""
    command, run_env = torchrun_command(nproc, script, *args, env=env)
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=run_env)


def torchrun_background(nproc: int, script: Path | str, *args: str, log: Path,
                        env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start torchrun in a session of its own, output to `log`; `signal_job` signals it and all its workers."""
    command, run_env = torchrun_command(nproc, script, *args, env=env)
    with open(log, "w") as handle:
        return subprocess.Popen(command, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT, env=run_env,
                                start_new_session=True)


def signal_job(job: subprocess.Popen, number: signal.Signals) -> None:
    """Send `number` to a launcher and every process under it at once, as a node crash (SIGKILL) or a
    scheduler (SIGTERM to every task) would. torchrun starts each worker in a session of its own, so
    signalling the launcher's process group would reach the launcher alone and orphan its workers."""
    processes = [psutil.Process(job.pid), *psutil.Process(job.pid).children(recursive=True)]
    for process in processes:
        try:
            process.send_signal(number)
        except psutil.NoSuchProcess:
            pass
    if number == signal.SIGKILL:
        job.wait(timeout=60)
        _, alive = psutil.wait_procs(processes, timeout=60)
        assert not alive, f"still running after SIGKILL: {alive}"


def logged_steps(run_dir: Path) -> int:
    """How many steps a run has logged to its metrics.jsonl so far."""
    path = run_dir / "metrics.jsonl"
    return len(path.read_text().splitlines()) if path.is_file() else 0


def wait_for(predicate, job: subprocess.Popen, log: Path, timeout: float = 180.0) -> None:
    """Poll `predicate` until it holds; fail with the job's log if the job ends first or time runs out."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert job.poll() is None, f"the job ended early:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"timed out:\n{log.read_text()[-3000:]}"
        time.sleep(0.05)


def kill_job(job: subprocess.Popen) -> None:
    """SIGKILL the job and all its workers, as a crashed node would leave them."""
    signal_job(job, signal.SIGKILL)
