"""A plain, non-editable install works away from the checkout: the wheel ships roots-launch's job templates, and
roots-launch and the trainer run from it, ending user errors in one line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from store_helpers import write_random_store

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "runs", "build", "dist", "*.egg-info", "__pycache__",
                                    ".pytest_cache")


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The repository built as a wheel and installed with `pip install --target`: a directory to put on PYTHONPATH."""
    work = tmp_path_factory.mktemp("install")
    source = work / "source"  # a clean copy, so that no stale build/ in the checkout can leak into the wheel
    shutil.copytree(ROOT, source, symlinks=True, ignore=NOT_SOURCE)
    pip("wheel", "--no-deps", "--no-build-isolation", "-w", str(work / "wheels"), str(source))
    [wheel] = (work / "wheels").glob("roots_scale-*.whl")
    pip("install", "--no-deps", "--target", str(work / "target"), str(wheel))
    return work / "target"


def pip(*args: str) -> None:
    """Run the venv's pip; fail the test with its output if it fails."""
    result = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def run_installed(target: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """`args` with the venv's interpreter, in `cwd`, importing our packages from `target` and never the checkout."""
    env = {key: value for key, value in os.environ.items() if key not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env |= {"PYTHONPATH": str(target), "DS_ACCELERATOR": "cpu"}  # DeepSpeed: no accelerator-detection warning
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_the_packages_import_from_the_install(target: Path, tmp_path: Path) -> None:
    """roots_core, roots_scale and data_tools come from the target, not from the checkout's editable install."""
    code = ("import json, data_tools, roots_core, roots_scale, roots_scale.launch.cli; "
            "print(json.dumps([m.__file__ for m in (roots_core, roots_scale, data_tools, roots_scale.launch.cli)]))")
    result = run_installed(target, tmp_path, sys.executable, "-c", code)
    assert result.returncode == 0, result.stderr
    for path in json.loads(result.stdout):
        assert Path(path).is_relative_to(target), path
    installed = target / "roots_scale" / "launch" / "templates"
    for name in ("pretrain.slurm", "data_pipeline.slurm"):
        assert (installed / name).read_text() == (ROOT / "launch" / name).read_text()  # the checkout links to them
    assert not (target / "roots_scale" / "launch.py").exists()


def test_roots_launch_renders_the_packaged_templates(target: Path, tmp_path: Path) -> None:
    """`python -m roots_scale.launch.cli train/data --dry-run` from a directory without a checkout: the scripts
    embed the installed templates; the console script is installed too."""
    shutil.copy(ROOT / "configs" / "tiny_gpt.yaml", tmp_path / "tiny_gpt.yaml")
    write_random_store(tmp_path / "runs" / "demo" / "store", num_documents=10)  # the config's data.path
    (tmp_path / "cluster.yaml").write_text(yaml.safe_dump(
        {"nodes": 1, "procs_per_node": 2, "time": "10", "signal_seconds": 60, "log_dir": "logs"}))
    templates = target / "roots_scale" / "launch" / "templates"

    train = run_installed(target, tmp_path, sys.executable, "-m", "roots_scale.launch.cli", "train", "--cluster",
                          "cluster.yaml", "--config", "tiny_gpt.yaml", "--dry-run")
    assert train.returncode == 0, train.stderr
    assert train.stdout.startswith("#!/bin/bash\n") and "#SBATCH --ntasks-per-node=2" in train.stdout
    assert train.stdout.endswith((templates / "pretrain.slurm").read_text().split("\nset -euo pipefail\n", 1)[1])

    data = run_installed(target, tmp_path, sys.executable, "-m", "roots_scale.launch.cli", "data", "--cluster",
                         "cluster.yaml", "--work-dir", "work", "--extract", "jsonl", "tiny_gpt.yaml",
                         "--vocab-size", "100", "--dry-run")
    assert data.returncode == 0, data.stderr
    assert (templates / "data_pipeline.slurm").read_text() in data.stdout
    for script in (train.stdout, data.stdout):
        syntax = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True)
        assert syntax.returncode == 0, syntax.stderr

    console = run_installed(target, tmp_path, str(target / "bin" / "roots-launch"), "--help")
    assert console.returncode == 0 and console.stdout.startswith("usage: roots-launch"), console.stderr


def test_the_installed_trainer_reports_a_config_typo_in_one_line(target: Path, tmp_path: Path) -> None:
    """`python -m roots_scale.pretrain` from the install: an unknown override is exit code 2 and one line, no traceback."""
    shutil.copy(ROOT / "configs" / "tiny_gpt.yaml", tmp_path / "tiny_gpt.yaml")
    result = run_installed(target, tmp_path, sys.executable, "-m", "roots_scale.pretrain", "--config",
                           "tiny_gpt.yaml", "train.itres=5")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    [line] = result.stderr.splitlines()
    assert "itres" in line and line.startswith("roots-train: error: "), line
