"""roots-launch sweep: a grid of overrides over one config, every point checked before anything is written, run as
one SLURM job array or one point after another on this machine; `sweep-summary` ranks the points by a metric.

Each point is an ordinary run directory (`run.output_dir` = DIR/pNN-key=value-...), so it resumes, fails and
finishes like any run; DIR/sweep.json lists the points (overrides, run directory, roots-train command).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import shlex
import subprocess
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from roots_core.atomic import write_text_atomic
from roots_core.errors import RootsError
from roots_scale.config import load_config, parse_overrides
from roots_scale.launch.profile import ClusterProfile, LaunchError
from roots_scale.launch.render import ENTRY_MODULES, check_plan, command, comment, slurm_script
from roots_scale.launch.sweep_summary import LOCAL_EXIT, point_status, read_json

COMMANDS = tuple(ENTRY_MODULES)  # roots-train's pretraining (its default) and its finetune subcommand
SWEEP_FILE = "sweep.json"
SCRIPT_FILE = "sweep.slurm"
TASKS_DIR = "tasks"  # tasks/<array index> links to that point's run directory, where SLURM writes the task's log
LOCAL_LOG = "local.out"  # a --local run's output, in its run directory
_RANK_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")  # a launcher's, never a local run's


@dataclass(frozen=True)
class SweepPoint:
    """One combination of grid values, run in DIR/<name>."""

    index: int
    name: str
    values: dict[str, str]  # grid key → value, as given on the command line
    layout: str = ""  # the checked layout on the profile's world size


@dataclass(frozen=True)
class Sweep:
    """A checked grid over one config: its points and the roots-train command each one runs."""

    directory: Path
    config: str
    cluster: str
    command: str  # one of COMMANDS
    grid: dict[str, list[str]]
    fixed: list[str]  # key=value overrides every point shares
    points: list[SweepPoint]

    def run_dir(self, point: SweepPoint) -> Path:
        return self.directory / point.name

    def overrides(self, point: SweepPoint) -> list[str]:
        """The point's overrides: the fixed ones, its grid values and its run directory."""
        return [*self.fixed, *(f"{key}={value}" for key, value in point.values.items()),
                f"run.output_dir={self.run_dir(point)}"]

    @property
    def subcommand(self) -> list[str]:
        """roots-train's subcommand for the points: none for pretraining, else e.g. `finetune`."""
        return [] if self.command == "train" else [self.command]

    def roots_train(self, point: SweepPoint) -> list[str]:
        """The point's command line as a user would type it."""
        return ["roots-train", *self.subcommand, "--config", self.config, *self.overrides(point)]

    def to_json(self) -> dict[str, Any]:
        """What sweep.json holds: the plan, and every point with its run directory and command."""
        points = [{**asdict(p), "run_dir": str(self.run_dir(p)), "command": shlex.join(self.roots_train(p))}
                  for p in self.points]
        return {"config": self.config, "cluster": self.cluster, "command": self.command, "grid": self.grid,
                "fixed": self.fixed, "points": points}


# --------------------------------------------------------------------------- planning and checks


def parse_grid(items: Sequence[str]) -> dict[str, list[str]]:
    """`KEY=V1,V2,...` items as {key: values}, in order; a malformed, empty or repeated entry is a LaunchError."""
    grid: dict[str, list[str]] = {}
    for item in items:
        key, sep, listed = item.partition("=")
        if not sep or not key:
            raise LaunchError(f"--grid {item!r} is invalid: it must be section.key=V1,V2,... "
                              f"(e.g. optimizer.lr=1e-4,3e-4)")
        values = listed.split(",")
        if "" in values:
            raise LaunchError(f"--grid {item!r}: {key} has an empty value: give one or more comma-separated "
                              f"values, e.g. {key}=A,B")
        repeated = next((v for i, v in enumerate(values) if v in values[:i]), None)
        if repeated is not None:
            raise LaunchError(f"--grid {item!r}: the value {repeated!r} is listed twice: list each value once")
        if key in grid:
            raise LaunchError(f"--grid {key} is given twice ({key}={','.join(grid[key])} and {item}): give each "
                              f"key once, with all its values")
        grid[key] = values
    return grid


def plan_sweep(config: str, grid_items: Sequence[str], extra: Sequence[str], profile: ClusterProfile,
               directory: Path, train_command: str) -> Sweep:
    """Every point of the grid, checked as `roots-launch train` checks a job, so a mistake fails before any write."""
    grid = parse_grid(grid_items)
    pairs = parse_overrides(extra)
    for key, value in pairs:
        if key in grid:
            raise LaunchError(f"{key} is both a fixed override ({key}={value}) and a --grid key: give it once")
    if "run.output_dir" in grid or "run.output_dir" in dict(pairs):
        raise LaunchError("run.output_dir is set by the sweep, one directory per point under --sweep-dir: "
                          "remove it from the overrides and the grid")
    fixed = [f"{key}={value}" for key, value in pairs]
    load_config(config, fixed)  # the config file and the fixed overrides, before any grid value
    for key, values in grid.items():
        for value in values:
            try:
                load_config(config, [*fixed, f"{key}={value}"])
            except RootsError as err:
                raise LaunchError(f"--grid {key}={','.join(values)}: {err}") from None
    labels = _labels(list(grid))
    width = max(2, len(str(math.prod(map(len, grid.values())) - 1)))
    combinations = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
    unchecked = Sweep(directory, config, profile.source, train_command, grid, fixed, [
        SweepPoint(index, f"p{index:0{width}d}-" + "-".join(f"{labels[k]}={_safe(v)}" for k, v in values.items()),
                   values) for index, values in enumerate(combinations)])
    points = []
    for point in unchecked.points:
        try:
            layout = check_plan(profile, load_config(config, unchecked.overrides(point)), config, train_command)
        except RootsError as err:
            raise LaunchError(f"grid point {point.name}: {err}") from None
        points.append(replace(point, layout=layout))
    sweep = replace(unchecked, points=points)
    _check_same_sweep(sweep)
    return sweep


def _labels(keys: list[str]) -> dict[str, str]:
    """The name of each grid key in point names: its last part (`lr`), or all of it where two keys share one."""
    leaves = [key.rsplit(".", 1)[-1] for key in keys]
    return {key: leaf if leaves.count(leaf) == 1 else key for key, leaf in zip(keys, leaves)}


def _safe(value: str) -> str:
    """A value as part of a directory name: characters other than letters, digits and . _ + - become `_`."""
    return re.sub(r"[^A-Za-z0-9._+-]", "_", value)


def _check_same_sweep(sweep: Sweep) -> None:
    """Refuse a sweep directory that already holds a different sweep: its points' runs would mix."""
    existing = read_json(sweep.directory / SWEEP_FILE)
    if existing is None:
        return
    before = [point.get("command") for point in existing.get("points", [])]
    now = [point["command"] for point in sweep.to_json()["points"]]
    if before != now:
        differs = next((f"its point {i} runs: {b}" for i, (b, n) in enumerate(zip(before, now)) if b != n),
                       f"{len(before)} points, not {len(now)}")
        raise LaunchError(f"{sweep.directory / SWEEP_FILE} lists another sweep ({differs}): use a new --sweep-dir, "
                          f"or the same config, grid and overrides to continue that one")


def write_sweep(sweep: Sweep, script: str | None = None) -> Path:
    """Write sweep.json and the run directories (and the array script with its tasks/<i> log links); return its path."""
    for point in sweep.points:
        sweep.run_dir(point).mkdir(parents=True, exist_ok=True)
    write_text_atomic(sweep.directory / SWEEP_FILE, json.dumps(sweep.to_json(), indent=1) + "\n")
    if script is None:
        return sweep.directory / SWEEP_FILE
    tasks = sweep.directory / TASKS_DIR
    tasks.mkdir(exist_ok=True)
    for point in sweep.points:
        link = tasks / str(point.index)
        link.unlink(missing_ok=True)
        link.symlink_to(Path("..") / point.name)  # relative: the sweep directory may move
    path = sweep.directory / SCRIPT_FILE
    write_text_atomic(path, script)
    path.chmod(0o755)
    return path


# --------------------------------------------------------------------------- SLURM: one job array


def render_array(sweep: Sweep, profile: ClusterProfile, indices: Sequence[int], max_parallel: int | None,
                 workdir: Path) -> str:
    """`roots-launch train`'s SLURM script as a job array: task i takes point i's overrides, logs into its run dir."""
    job_name = re.sub(r"[^A-Za-z0-9_.-]", "-", f"sweep-{sweep.directory.name}")
    head = ["#!/bin/bash",
            comment(f"Generated by roots-launch sweep from {sweep.config} and {sweep.cluster}: {len(sweep.points)} "
                    f"points ({sweep.directory / SWEEP_FILE}), one array task each."),
            *(comment(f"{p.index}: {p.name}: {p.layout}") for p in sweep.points)]
    lines = slurm_script(profile, ["--config", sweep.config], job_name, workdir, sweep.command,
                         log=str(sweep.directory / TASKS_DIR / "%a" / "slurm-%A_%a.out"),
                         extra_options=[f"--array={_array_spec(indices, max_parallel)}"],
                         set_arguments=_select_point(sweep))
    return "\n".join(head + lines) + "\n"


def _select_point(sweep: Sweep) -> list[str]:
    """Shell lines that set the arguments (the overrides) of the point whose index is SLURM_ARRAY_TASK_ID."""
    lines = [comment("This array task's point: its overrides become the arguments, as for pretrain.slurm.")]
    lines.append('case ${SLURM_ARRAY_TASK_ID:?"this script is a job array: submit it with sbatch"} in')
    lines += [f"  {p.index}) {command('set', '--', *sweep.overrides(p))} ;;" for p in sweep.points]
    lines += [f'  *) echo "sweep: array task $SLURM_ARRAY_TASK_ID is not a point of this sweep '
              f'(0-{len(sweep.points) - 1})" >&2; exit 2 ;;', "esac"]
    return lines


def _array_spec(indices: Sequence[int], max_parallel: int | None) -> str:
    """`--array` for these indices: ranges of consecutive ones (0-3,5), then `%max_parallel` if given."""
    ranges = []
    for _, run in itertools.groupby(enumerate(indices), lambda pair: pair[1] - pair[0]):
        values = [index for _, index in run]
        ranges.append(str(values[0]) if len(values) == 1 else f"{values[0]}-{values[-1]}")
    return ",".join(ranges) + (f"%{max_parallel}" if max_parallel else "")


# --------------------------------------------------------------------------- --local: one point after another


def local_command(sweep: Sweep, profile: ClusterProfile, point: SweepPoint) -> list[str]:
    """The point's roots-train command here: torchrun with the profile's processes per node, or python for one."""
    entry = ["-m", "roots_scale.cli", *sweep.subcommand, "--config", sweep.config, *sweep.overrides(point)]
    if profile.processes_per_node == 1:
        return [profile.interpreter, *entry]
    return [profile.interpreter, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
            str(profile.processes_per_node), "--max-restarts", "0", *entry]


def run_local(sweep: Sweep, profile: ClusterProfile) -> int:
    """Run each unfinished point in turn, recording a failure and going on; 0 once every point has finished."""
    env = {k: v for k, v in os.environ.items() if k not in _RANK_VARIABLES} | profile.env
    unfinished = []
    for point in sweep.points:
        run_dir, where = sweep.run_dir(point), f"point {point.index + 1}/{len(sweep.points)} {point.name}"
        if point_status(run_dir) == "finished":
            print(f"roots-launch sweep: {where}: finished before, skipped", flush=True)
            continue
        argv = local_command(sweep, profile, point)
        print(f"roots-launch sweep: {where}: {shlex.join(argv)}", flush=True)
        (run_dir / LOCAL_EXIT).unlink(missing_ok=True)
        with open(run_dir / LOCAL_LOG, "ab") as log:
            code = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, env=env).returncode
        write_text_atomic(run_dir / LOCAL_EXIT, json.dumps({"exit_code": code, "command": argv}) + "\n")
        status = point_status(run_dir)
        print(f"roots-launch sweep: {where}: {status} (exit code {code}; log {run_dir / LOCAL_LOG})", flush=True)
        if status != "finished":
            unfinished.append(point.name)
    done = len(sweep.points) - len(unfinished)
    print(f"roots-launch sweep: {done} of {len(sweep.points)} points finished"
          + (f"; not finished: {', '.join(unfinished)} (run the same command again to retry them)" if unfinished
             else "") + f". Summary: roots-launch sweep-summary {shlex.quote(str(sweep.directory))}")
    return 1 if unfinished else 0


def load_sweep(directory: Path) -> Sweep:
    """The sweep that DIR/sweep.json describes; run directories are taken under `directory`, wherever it now is."""
    raw = read_json(directory / SWEEP_FILE)
    if raw is None:
        raise LaunchError(f"{directory / SWEEP_FILE} does not exist or is not JSON: {directory} is not a sweep "
                          f"directory (roots-launch sweep writes sweep.json there)")
    try:
        points = [SweepPoint(p["index"], p["name"], p["values"], p["layout"]) for p in raw["points"]]
        return Sweep(directory, raw["config"], raw["cluster"], raw["command"], raw["grid"], raw["fixed"], points)
    except (KeyError, TypeError) as err:
        raise LaunchError(f"{directory / SWEEP_FILE} lacks {err} or is not a sweep.json that roots-launch sweep "
                          f"wrote") from None
