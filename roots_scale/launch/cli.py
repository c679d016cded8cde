"""roots-launch: job scripts from a training config and a cluster profile, checked before submission.

`roots-launch train` renders a SLURM batch script, a torchrun script (one per node) or a DeepSpeed-launcher
script (hostfile) after checking the plan against the config; `roots-launch data` renders the roots-data
pipeline as dependent SLURM job arrays; `roots-launch sweep` runs a grid of overrides as one SLURM job array (or
locally, one point after another) and `roots-launch sweep-summary` ranks its points. Any user error ends as one
line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from roots_core.errors import RootsError
from roots_scale.config import load_config
from roots_scale.launch.data_pipeline import data_jobs, expand_extracts, parse_stage_args, render_data_pipeline
from roots_scale.launch.profile import ClusterProfile, LaunchError, load_profile
from roots_scale.launch.render import LAUNCHERS, render_training
from roots_scale.launch.sweep import (COMMANDS, load_sweep, local_command, plan_sweep, render_array, run_local,
                                      write_sweep)
from roots_scale.launch.sweep_summary import default_mode, format_table, point_status, summarize


def build_parser() -> argparse.ArgumentParser:
    """`roots-launch train`, `data`, `sweep` and `sweep-summary`, with the options they share."""
    parser = argparse.ArgumentParser(prog="roots-launch", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    train = commands.add_parser("train", help="a training (or fine-tuning) job: SLURM, torchrun or DeepSpeed",
                                epilog="Overrides: section.key=value, as for roots-train.")
    train.add_argument("--config", required=True, help="training config (YAML)")
    train.add_argument("--launcher", choices=LAUNCHERS, default="slurm")
    train.add_argument("--command", dest="train_command", choices=COMMANDS, default="train",
                       help="what the job runs: roots-train (pretraining, the default) or roots-train finetune")
    data = commands.add_parser("data", help="the roots-data pipeline as dependent SLURM job arrays")
    data.add_argument("--work-dir", required=True, metavar="DIR", help="docs/, clean/, dedup/, store/ go here")
    data.add_argument("--extract", action="append", nargs="+", required=True, metavar="FORMAT INPUT",
                      help="an input format and its files (repeat per format), e.g. --extract warc raw/*.warc.gz")
    tokenizer = data.add_mutually_exclusive_group(required=True)
    tokenizer.add_argument("--tokenizer", metavar="MODEL", help="an existing sentencepiece model")
    tokenizer.add_argument("--vocab-size", type=int, metavar="N", help="train a tokenizer of this size first")
    data.add_argument("--array-size", type=int, default=8, metavar="N", help="array tasks per stage (default 8)")
    data.add_argument("--stage-args", action="append", default=[], metavar="STAGE=ARGS",
                      help="extra arguments for one stage, e.g. clean='--languages en,fr'")
    sweep = commands.add_parser("sweep", help="a grid of overrides: one SLURM job array, or --local one point "
                                "after another", epilog="Fixed overrides for every point: section.key=value, as "
                                "for roots-train, after the other options.")
    sweep.add_argument("--config", required=True, help="training config (YAML)")
    sweep.add_argument("--grid", action="extend", nargs="+", required=True, metavar="KEY=V1,V2",
                       help="a key and its values, e.g. optimizer.lr=1e-4,3e-4; one point per combination")
    sweep.add_argument("--sweep-dir", type=Path, required=True, metavar="DIR",
                       help="sweep.json and one run directory per point go here")
    sweep.add_argument("--command", dest="train_command", choices=COMMANDS, default="train",
                       help="what each point runs: roots-train (pretraining, the default) or roots-train finetune")
    sweep.add_argument("--local", action="store_true", help="run the points here, one after another")
    sweep.add_argument("--max-parallel", type=int, metavar="N", help="SLURM: at most N points at a time")
    summary = commands.add_parser("sweep-summary", help="a sweep's points ranked by a metric")
    summary.add_argument("sweep_dir", type=Path, metavar="DIR", help="the --sweep-dir of roots-launch sweep")
    summary.add_argument("--metric", default="valid_loss", help="a key of metrics.jsonl (default valid_loss)")
    summary.add_argument("--mode", choices=("min", "max"),
                         help="best is the lowest or highest value (default max for accuracy, precision, recall, "
                              "f1, bleu, chrf; else min)")
    summary.add_argument("--json", action="store_true", help="print the rows as JSON")
    for sub in (train, data, sweep):
        sub.add_argument("--cluster", required=True, metavar="PROFILE", help="configs/clusters/<name>.yaml")
        if sub is not sweep:  # a sweep writes its script into its directory
            sub.add_argument("--output", type=Path, metavar="FILE", help="where to write the script")
        mode = sub.add_mutually_exclusive_group()
        mode.add_argument("--dry-run", action="store_true", help="print the script; write and submit nothing")
        mode.add_argument("--submit", action="store_true", help="write the script, then submit it")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Render, write and optionally submit a job script; a user error is one line on stderr and exit code 2."""
    args, extra = build_parser().parse_known_args(argv)
    try:
        return _run(args, extra)
    except RootsError as err:
        print(f"roots-launch {args.command}: error: {err}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace, extra: list[str]) -> int:
    """The work of `main` for one parsed command: render, then print, write or submit."""
    if args.command == "sweep-summary":
        return _sweep_summary(args, extra)
    profile = load_profile(args.cluster)
    workdir = Path.cwd()
    if args.command == "sweep":
        return _sweep(args, extra, profile, workdir)
    if args.command == "train":
        if args.submit and args.launcher != "slurm":
            raise LaunchError(f"--submit needs a scheduler: run the {args.launcher} script with bash where it "
                              f"should start, or use --launcher slurm")
        cfg = load_config(args.config, extra)
        script = render_training(args.launcher, profile, args.config, extra, cfg, workdir, args.train_command)
        output = args.output or Path(cfg.run.output_dir) / "launch" / f"{args.launcher}.sh"
        runner = "sbatch" if args.launcher == "slurm" else "bash"
        writes_logs = args.launcher == "slurm"
    else:
        if extra:
            raise LaunchError(f"unrecognized arguments: {' '.join(extra)}")
        if args.tokenizer is not None and not Path(args.tokenizer).is_file():
            raise LaunchError(f"--tokenizer {args.tokenizer} does not exist")
        jobs = data_jobs(args.work_dir, expand_extracts(args.extract), args.tokenizer, args.vocab_size,
                         args.array_size, parse_stage_args(args.stage_args), profile.data_cpus_per_task)
        script = render_data_pipeline(profile, jobs, workdir)
        output = args.output or Path(args.work_dir) / "data_pipeline.sh"
        runner, writes_logs = "bash", True
    if args.dry_run:
        print(script, end="")
        return 0
    output.parent.mkdir(parents=True, exist_ok=True)
    if writes_logs:  # SLURM does not create a log file's directory: a job without one fails silently
        (workdir / profile.log_dir).mkdir(parents=True, exist_ok=True)
    output.write_text(script)
    output.chmod(0o755)
    if not args.submit:
        print(f"roots-launch: wrote {output}; run it with: {runner} {shlex.quote(str(output))}")
        return 0
    return subprocess.run([runner, str(output)]).returncode


def _sweep(args: argparse.Namespace, extra: list[str], profile: ClusterProfile, workdir: Path) -> int:
    """Check every point, then print, write, submit (one job array) or run them here (--local)."""
    if args.max_parallel is not None and (args.local or args.max_parallel < 1):
        raise LaunchError(f"--max-parallel {args.max_parallel} is invalid: it must be at least 1, and it limits a "
                          f"SLURM job array (--local runs one point at a time)")
    if args.local and args.submit:
        raise LaunchError("--local runs the points on this machine and --submit sends them to SLURM: give one")
    if args.local and profile.nodes > 1:
        raise LaunchError(f"--local runs the points on this machine: {profile.source} has {profile.nodes} nodes; "
                          f"use a one-node profile (e.g. configs/clusters/local_cpu.yaml) or submit to SLURM")
    if args.submit and shutil.which("sbatch") is None:
        raise LaunchError("--submit needs SLURM's sbatch on PATH; without --submit the script is written for you to "
                          "submit where sbatch runs")
    sweep = plan_sweep(args.config, args.grid, extra, profile, args.sweep_dir.absolute(), args.train_command)
    if args.local:
        if args.dry_run:
            for point in sweep.points:
                skip = "  # finished" if point_status(sweep.run_dir(point)) == "finished" else ""
                print(shlex.join(local_command(sweep, profile, point)) + skip)
            return 0
        write_sweep(sweep)
        return run_local(sweep, profile)
    pending = [p.index for p in sweep.points if point_status(sweep.run_dir(p)) != "finished"]
    if not pending:
        print(f"roots-launch sweep: every point of {sweep.directory} has finished; nothing to submit")
        return 0
    script = render_array(sweep, profile, pending, args.max_parallel, workdir)
    if args.dry_run:
        print(script, end="")
        return 0
    path = write_sweep(sweep, script)
    if not args.submit:
        print(f"roots-launch sweep: wrote {path} ({len(pending)} of {len(sweep.points)} points); submit it with: "
              f"sbatch {shlex.quote(str(path))}")
        return 0
    submitted = subprocess.run(["sbatch", "--parsable", str(path)], capture_output=True, text=True)
    if submitted.returncode != 0:
        print(f"roots-launch sweep: sbatch {path} failed: {submitted.stderr.strip()}", file=sys.stderr)
        return submitted.returncode
    job = submitted.stdout.strip().split(";")[0]  # --parsable prints id[;cluster]
    print(f"roots-launch sweep: submitted array job {job} ({len(pending)} of {len(sweep.points)} points), each "
          f"point's log in its run directory; summary: roots-launch sweep-summary {shlex.quote(str(sweep.directory))}")
    return 0


def _sweep_summary(args: argparse.Namespace, extra: list[str]) -> int:
    """Print a sweep's points ranked by the metric, as a table or JSON."""
    if extra:
        raise LaunchError(f"unrecognized arguments: {' '.join(extra)}")
    sweep = load_sweep(args.sweep_dir)
    mode = args.mode or default_mode(args.metric)
    rows = summarize(sweep, args.metric, mode)
    print(json.dumps(rows, indent=1) if args.json else format_table(sweep, rows, args.metric, mode).rstrip("\n"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
