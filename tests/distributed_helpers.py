"""Run a worker script under real torchrun (gloo on CPU) and collect what rank 0 wrote."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TORCHRUN = Path(sys.executable).parent / "torchrun"


def torchrun(nproc: int, script: Path | str, *args: str, timeout: int = 600,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc_per_node N script args...`, from the repository root."""
    run_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    run_env.pop("RANK", None)
    run_env.pop("WORLD_SIZE", None)
    return subprocess.run(
        [str(TORCHRUN), "--standalone", "--nproc_per_node", str(nproc), str(script), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=run_env)
