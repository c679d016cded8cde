"""roots-launch sweep and sweep-summary: the job array it renders, the grids it refuses, a --local sweep (a failed
point recorded, a re-run that skips finished points and completes the rest) and a job array on a real SLURM cluster,
each ranked by sweep-summary against the metrics read independently from every run's metrics.jsonl."""

from __future__ import annotations

import itertools
import json
import math
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from distributed_helpers import ROOT
from slurm_cluster import SlurmCluster, local_cluster
from store_helpers import write_random_store

from data_tools.shards import Document, write_shard
from data_tools.tokenizer import train_tokenizer
from roots_core.lock import DirectoryLock
from roots_scale.launch import cli

CPU_PROFILE = ROOT / "configs" / "clusters" / "local_cpu.yaml"  # 2 processes on this machine
GPU_PROFILE = ROOT / "configs" / "clusters" / "example_2x8_gpu.yaml"
TINY = str(ROOT / "configs" / "tiny_gpt.yaml")
SHORT_RUN = ["train.iters=4", "train.eval_interval=2", "train.eval_iters=1", "optimizer.warmup_iters=1",
             "train.save_interval=4", "run.tensorboard=false"]
GRID = ["--grid", "optimizer.lr=1e-3,2e-2", "train.micro_batch_size=2,4"]
POINTS = ["p00-lr=1e-3-micro_batch_size=2", "p01-lr=1e-3-micro_batch_size=4", "p02-lr=2e-2-micro_batch_size=2",
          "p03-lr=2e-2-micro_batch_size=4"]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_random_store(tmp_path_factory.mktemp("sweep") / "store")


def one_process_profile(tmp_path: Path, **keys: object) -> Path:
    """A profile of one CPU process on this machine (plain python locally; 1-CPU array tasks side by side)."""
    path = tmp_path / "one_process.yaml"
    path.write_text(yaml.safe_dump({"nodes": 1, "procs_per_node": 1, "cpus_per_node": 1, "time": "00:30:00",
                                    "signal_seconds": 60, "exclusive": False, "env": {"OMP_NUM_THREADS": 1}} | keys))
    return path


def dry_run(capsys: pytest.CaptureFixture, *argv: str) -> str:
    assert cli.main(["sweep", *argv, "--dry-run"]) == 0, capsys.readouterr().err
    return capsys.readouterr().out


def select_point(script: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """The script's point selection run by bash in `env`, printing the arguments it leaves, NUL-separated."""
    lines = script.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("case ${SLURM_ARRAY_TASK_ID"))
    selection = "\n".join(lines[start:lines.index("esac", start) + 1])
    return subprocess.run(["bash", "-c", selection + '\nprintf "%s\\0" "$@"'], env=env, capture_output=True, text=True)


def task_arguments(script: str, task: int) -> list[str]:
    """The arguments array task `task` gets, as bash itself sets them."""
    result = select_point(script, {"SLURM_ARRAY_TASK_ID": str(task)})
    assert result.returncode == 0, result.stderr
    return result.stdout.split("\0")[:-1]


def test_dry_run_renders_one_job_array_whose_tasks_set_each_points_overrides(capsys: pytest.CaptureFixture,
                                                                             store: Path, tmp_path: Path) -> None:
    """A 2 × 3 grid: one array 0-5 (%2 with --max-parallel), task i gets point i's overrides (the grid's product in
    order, the fixed ones, its run directory), then the pretrain.slurm body; nothing is written."""
    sweep_dir = tmp_path / "sweep"
    script = dry_run(capsys, "--config", TINY, "--grid", "optimizer.lr=1e-4,3e-4", "--grid",
                     "train.micro_batch_size=2,4,8", "--cluster", str(CPU_PROFILE), "--sweep-dir", str(sweep_dir),
                     "--max-parallel", "2", f"data.path={store}", "run.name=it's")
    syntax = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr
    directives = [line.split(None, 1)[1] for line in script.splitlines() if line.startswith("#SBATCH")]
    assert "--array=0-5%2" in directives and "--ntasks-per-node=2" in directives and "--requeue" in directives
    assert f"--output={sweep_dir}/tasks/%a/slurm-%A_%a.out" in directives
    assert not any(d.startswith("--output=") and "logs" in d for d in directives)  # one log option: the task's
    for task, (lr, micro) in enumerate(itertools.product(["1e-4", "3e-4"], ["2", "4", "8"])):
        name = f"p{task:02d}-lr={lr}-micro_batch_size={micro}"
        assert task_arguments(script, task) == [f"data.path={store}", "run.name=it's", f"optimizer.lr={lr}",
                                                f"train.micro_batch_size={micro}", f"run.output_dir={sweep_dir / name}"]
        assert (f"# {task}: {name}: 1 node(s) × 2 = 2 processes = tensor 1 × pipeline 1 × data 2; global batch "
                f"{2 * int(micro)} = ") in script
    beyond, unset = select_point(script, {"SLURM_ARRAY_TASK_ID": "6"}), select_point(script, {})
    assert beyond.returncode == 2 and "array task 6 is not a point of this sweep (0-5)" in beyond.stderr
    assert unset.returncode != 0 and "this script is a job array: submit it with sbatch" in unset.stderr
    body = (ROOT / "launch" / "pretrain.slurm").read_text().split("\nset -euo pipefail\n", 1)[1]
    assert script.endswith(body) and "TRAIN_SUBCOMMAND" not in script.split(body)[0]
    assert not sweep_dir.exists()


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Fine-tuning settings that `prepare` accepts without a checkpoint: a real tokenizer and a labelled file."""
    root = tmp_path_factory.mktemp("labelled")
    (root / "docs").mkdir()
    texts = [f"cat dog bird {i} engine gear pump" for i in range(40)]
    write_shard(root / "docs" / "part.parquet", [Document(f"d{i}", text, "test", None) for i, text in enumerate(texts)])
    tokenizer = train_tokenizer(root / "docs", root / "tokenizer", 300)
    (root / "train.jsonl").write_text("".join(json.dumps({"text": text, "label": i % 2}) + "\n"
                                              for i, text in enumerate(texts)))
    return ["finetune.task=classification", f"finetune.tokenizer={tokenizer}", f"finetune.train_path={root}/train.jsonl"]


def test_finetune_points_run_roots_train_finetune_and_local_runs_use_torchrun(capsys: pytest.CaptureFixture,
                                                                             labelled: list[str], tmp_path: Path) -> None:
    """--command finetune: every point checked as roots-train finetune checks it (a missing file is refused); the
    array exports TRAIN_SUBCOMMAND (pretrain.slurm then runs `roots_scale.cli finetune`); --local --dry-run prints
    each point's command, through torchrun for the profile's 2 processes."""
    common = ["--config", TINY, *GRID, "--cluster", str(CPU_PROFILE), "--sweep-dir", str(tmp_path / "s"),
              "--command", "finetune", *labelled]
    assert cli.main(["sweep", *common[:-1], f"finetune.train_path={tmp_path}/missing.jsonl", "--dry-run"]) == 2
    assert "missing.jsonl' is not an existing file" in capsys.readouterr().err
    script = dry_run(capsys, *common)
    assert "\nexport TRAIN_SUBCOMMAND=finetune\n" in script
    for launcher, entry in (("torchrun", "-m roots_scale.finetune"), ("deepspeed", "--module roots_scale.finetune"),
                            ("slurm", "export TRAIN_SUBCOMMAND=finetune")):  # one fine-tuning job, any launcher
        assert cli.main(["train", "--config", TINY, "--cluster", str(CPU_PROFILE), "--command", "finetune",
                         "--launcher", launcher, "--dry-run", *labelled]) == 0, launcher
        assert entry in capsys.readouterr().out, launcher
    template = (ROOT / "launch" / "pretrain.slurm").read_text()
    assert 'TRAIN=(-m roots_scale.cli "$TRAIN_SUBCOMMAND")' in template and '"$PYTHON" "${TRAIN[@]}"' in template
    commands = [shlex.split(line) for line in dry_run(capsys, *common, "--local").splitlines()]
    assert len(commands) == 4
    for words, name in zip(commands, POINTS):
        assert words[:7] == [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                             "--max-restarts"]
        assert words[8:15] == ["-m", "roots_scale.cli", "finetune", "--config", TINY, *labelled[:2]]
        assert words[-1] == f"run.output_dir={tmp_path / 's' / name}"
    assert not (tmp_path / "s").exists()


def test_written_sweep_links_each_tasks_log_to_its_run_and_refuses_another_grid_there(
        capsys: pytest.CaptureFixture, store: Path, tmp_path: Path) -> None:
    """Without --dry-run: DIR/sweep.slurm (the dry run's script), sweep.json, a run directory per point and tasks/<i>
    links to them; another grid for the same directory is refused and leaves it as it was."""
    sweep_dir = tmp_path / "sweep"
    args = ["--config", TINY, "--cluster", str(CPU_PROFILE), "--sweep-dir", str(sweep_dir), f"data.path={store}"]
    assert cli.main(["sweep", *args, *GRID]) == 0
    assert f"wrote {sweep_dir / 'sweep.slurm'} (4 of 4 points); submit it with: sbatch" in capsys.readouterr().out
    assert (sweep_dir / "sweep.slurm").read_text() == dry_run(capsys, *args, *GRID)
    assert [(sweep_dir / "tasks" / str(i)).resolve() for i in range(4)] == [(sweep_dir / n).resolve() for n in POINTS]
    plan = (sweep_dir / "sweep.json").read_text()
    assert [p["run_dir"] for p in json.loads(plan)["points"]] == [str(sweep_dir / name) for name in POINTS]

    assert cli.main(["sweep", *args, "--grid", "optimizer.lr=1e-3,5e-3"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{sweep_dir}/sweep.json lists another sweep (its point 0 runs: roots-train" in err
    assert "use a new --sweep-dir" in err and (sweep_dir / "sweep.json").read_text() == plan
    assert sorted(p.name for p in sweep_dir.iterdir()) == sorted([*POINTS, "sweep.json", "sweep.slurm", "tasks"])


BAD_INPUTS = {
    "missing =": (["--grid", "optimizer.lr"], "--grid 'optimizer.lr' is invalid: it must be section.key=V1,V2"),
    "empty list": (["--grid", "optimizer.lr="], "optimizer.lr has an empty value"),
    "empty value": (["--grid", "optimizer.lr=1e-4,,3e-4"], "optimizer.lr has an empty value"),
    "repeated value": (["--grid", "optimizer.lr=1e-4,1e-4"], "the value '1e-4' is listed twice"),
    "repeated key": (["--grid", "optimizer.lr=1e-4", "--grid", "optimizer.lr=3e-4"],
                     "--grid optimizer.lr is given twice (optimizer.lr=1e-4 and optimizer.lr=3e-4)"),
    "unknown key": (["--grid", "optimizer.lrr=1e-4,3e-4"],
                    "--grid optimizer.lrr=1e-4,3e-4: override optimizer.lrr=1e-4: unknown key 'optimizer.lrr'; "
                    "did you mean 'optimizer.lr'?"),
    "bad value": (["--grid", "train.micro_batch_size=4,four"],
                  "--grid train.micro_batch_size=4,four: override train.micro_batch_size=four: "
                  "'train.micro_batch_size' = 'four': expected an integer"),
    "impossible point": (["--grid", "parallel.tensor=1,3"],
                         "grid point p01-tensor=3: ", "parallel.tensor = 3 is invalid: a tensor-parallel group must "
                         "fit in one node (2 processes): valid values are 1, 2"),
    "missing data": (["--grid", "data.path=/nonexistent/store"], "grid point p00-path=_nonexistent_store: ",
                     "data.path"),
    "grid and fixed": (["optimizer.lr=1e-3", "--grid", "optimizer.lr=1e-4,3e-4"],
                       "optimizer.lr is both a fixed override (optimizer.lr=1e-3) and a --grid key"),
    "run dir in grid": (["--grid", "run.output_dir=a,b"], "run.output_dir is set by the sweep"),
    "fixed typo": (["train.itres=5", "--grid", "optimizer.lr=1e-4"],
                   "unknown key 'train.itres'; did you mean 'train.iters'?"),
    "max parallel": (["--grid", "optimizer.lr=1e-4", "--max-parallel", "0"], "--max-parallel 0 is invalid"),
    "local submit": (["--grid", "optimizer.lr=1e-4", "--local", "--submit"], "--local runs the points on this machine"),
    "local 2 nodes": (["--grid", "optimizer.lr=1e-4", "--local", "--cluster", str(GPU_PROFILE)],
                      f"{GPU_PROFILE} has 2 nodes; use a one-node profile"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case: str, capsys: pytest.CaptureFixture, store: Path,
                                                         tmp_path: Path) -> None:
    args, *expected = BAD_INPUTS[case]
    cluster = [] if "--cluster" in args else ["--cluster", str(CPU_PROFILE)]
    data = [] if any(arg.startswith("data.path=") for arg in args) else [f"data.path={store}"]
    code = cli.main(["sweep", "--config", TINY, "--sweep-dir", str(tmp_path / "sweep"), *cluster, *data, *args])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("roots-launch sweep: error: "), err
    assert all(fragment in err for fragment in expected), err
    assert not (tmp_path / "sweep").exists()


def test_summary_of_a_directory_that_is_not_a_sweep_is_one_line(capsys: pytest.CaptureFixture,
                                                                tmp_path: Path) -> None:
    assert cli.main(["sweep-summary", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{tmp_path}/sweep.json does not exist" in err, err


def best_valid_losses(sweep_dir: Path) -> dict[str, tuple[float, int]]:
    """Each point's lowest valid_loss and its step, read straight from its metrics.jsonl (if it logged one)."""
    best = {}
    for name in POINTS:
        path = sweep_dir / name / "metrics.jsonl"
        records = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
        values = [(r["valid_loss"], r["step"]) for r in records if "valid_loss" in r]
        if values:
            best[name] = min(values)
    return best


def summary(sweep_dir: Path, *args: str, env: dict[str, str] | None = None) -> list[dict]:
    result = subprocess.run([sys.executable, "-m", "roots_scale.launch.cli", "sweep-summary", str(sweep_dir), *args,
                             "--json"], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.slow
def test_local_sweep_records_a_failed_point_ranks_the_rest_and_a_rerun_completes_it(store: Path,
                                                                                      tmp_path: Path) -> None:
    """2 × 2 points with plain python, one after another; a point whose run directory another job holds fails (the
    others still run) and is listed last; the same command again skips the 3 finished points and runs that one."""
    sweep_dir = tmp_path / "sweep"
    command = [sys.executable, "-m", "roots_scale.launch.cli", "sweep", "--config", TINY, *GRID, "--cluster",
               str(one_process_profile(tmp_path)), "--sweep-dir", str(sweep_dir), "--local", f"data.path={store}",
               *SHORT_RUN]
    with DirectoryLock(sweep_dir / POINTS[1]):  # the run lock: as if another job were training there
        first = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)
    assert first.returncode == 1, first.stdout + first.stderr
    assert f"point 2/4 {POINTS[1]}: failed (exit code 2;" in first.stdout
    assert "3 of 4 points finished; not finished: " + POINTS[1] in first.stdout
    assert "is in use by another job" in (sweep_dir / POINTS[1] / "local.out").read_text()
    plan = json.loads((sweep_dir / "sweep.json").read_text())
    assert [p["name"] for p in plan["points"]] == POINTS and plan["grid"] == {
        "optimizer.lr": ["1e-3", "2e-2"], "train.micro_batch_size": ["2", "4"]}
    assert plan["points"][3]["command"] == shlex.join(["roots-train", "--config", TINY, f"data.path={store}",
                                                      *SHORT_RUN, "optimizer.lr=2e-2", "train.micro_batch_size=4",
                                                      f"run.output_dir={sweep_dir / POINTS[3]}"])

    best = best_valid_losses(sweep_dir)
    assert sorted(best) == [POINTS[0], POINTS[2], POINTS[3]] and len({v for v, _ in best.values()}) == 3
    rows = summary(sweep_dir)
    assert [r["name"] for r in rows] == sorted(best, key=lambda name: best[name]) + [POINTS[1]]
    for row in rows[:3]:
        assert (row["best"], row["best_step"], row["status"], row["steps"]) == (*best[row["name"]], "finished", 4)
    assert (rows[3]["best"], rows[3]["status"], rows[3]["steps"]) == (None, "failed", None)
    table = subprocess.run([sys.executable, "-m", "roots_scale.launch.cli", "sweep-summary", str(sweep_dir)],
                           capture_output=True, text=True).stdout.splitlines()
    assert table[1].split() == ["point", "optimizer.lr", "train.micro_batch_size", "best", "valid_loss", "at", "step",
                                "last", "valid_loss", "status", "steps"]
    assert [line.split()[0] for line in table[2:]] == [r["name"][:3] for r in rows]
    assert table[-1].split() == ["p01", "1e-3", "4", "-", "-", "-", "failed", "-"]
    by_lr_then_loss = summary(sweep_dir, "--metric", "lr", "--mode", "max")
    assert [r["values"]["optimizer.lr"] for r in by_lr_then_loss][:2] == ["2e-2", "2e-2"]

    finished = {name: (sweep_dir / name / "metrics.jsonl").read_bytes() for name in best}
    second = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)
    assert second.returncode == 0, second.stdout + second.stderr
    assert second.stdout.count("finished before, skipped") == 3
    assert f"point 2/4 {POINTS[1]}: finished (exit code 0;" in second.stdout
    assert {name: (sweep_dir / name / "metrics.jsonl").read_bytes() for name in best} == finished
    assert [r["status"] for r in summary(sweep_dir)] == ["finished"] * 4
    assert set(best_valid_losses(sweep_dir)) == set(POINTS)


@pytest.fixture(scope="module")
def slurm_cluster() -> Iterator[SlurmCluster]:
    yield from local_cluster()


@pytest.mark.slow
def test_slurm_job_array_trains_every_point_and_the_summary_ranks_them(slurm_cluster: SlurmCluster, store: Path,
                                                                       tmp_path: Path) -> None:
    """roots-launch sweep --submit on a real SLURM cluster: one array of 4 tasks (2 at a time), each point trained
    through the pretrain.slurm body with its log in its run directory; sweep-summary ranks them by valid_loss."""
    sweep_dir = tmp_path / "sweep"
    submitted = slurm_cluster.run(
        sys.executable, "-m", "roots_scale.launch.cli", "sweep", "--config", TINY, *GRID, "--cluster",
        str(one_process_profile(tmp_path)), "--sweep-dir", str(sweep_dir), "--max-parallel", "2", "--submit",
        f"data.path={store}", *SHORT_RUN, cwd=tmp_path)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    job = re.search(r"submitted array job (\d+) \(4 of 4 points\)", submitted.stdout).group(1)
    records = slurm_cluster.wait(job, timeout=600)
    logs = {name: (sweep_dir / name / f"slurm-{job}_{index}.out") for index, name in enumerate(POINTS)}
    assert sorted(int(r["ArrayTaskId"]) for r in records) == [0, 1, 2, 3]
    assert [r["JobState"] for r in records] == ["COMPLETED"] * 4, {n: p.read_text()[-2000:] for n, p in logs.items()}
    for name, log in logs.items():
        text = log.read_text()
        assert "pretrain.slurm: job" in text and f"run {sweep_dir / name}" in text
        assert "training stopped at step 4: finished" in text
        assert json.loads((sweep_dir / name / "exit_status.json").read_text())["reason"] == "finished"

    best = best_valid_losses(sweep_dir)
    assert sorted(best) == POINTS
    rows = summary(sweep_dir, env=slurm_cluster.env)
    assert [r["name"] for r in rows] == sorted(best, key=lambda name: best[name])
    assert all(r["status"] == "finished" and math.isclose(r["best"], best[r["name"]][0]) for r in rows)
    again = slurm_cluster.run(sys.executable, "-m", "roots_scale.launch.cli", "sweep", "--config", TINY, *GRID,
                              "--cluster", str(one_process_profile(tmp_path)), "--sweep-dir", str(sweep_dir),
                              "--max-parallel", "2", "--submit", f"data.path={store}", *SHORT_RUN, cwd=tmp_path)
    assert again.returncode == 0 and "every point of" in again.stdout and "nothing to submit" in again.stdout
