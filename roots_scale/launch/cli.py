"""roots-launch: job scripts from a training config and a cluster profile, checked before submission.

`roots-launch train` renders a SLURM batch script, a torchrun script (one per node) or a DeepSpeed-launcher
script (hostfile) after checking the plan against the config; `roots-launch data` renders the roots-data
pipeline as dependent SLURM job arrays. Any user error ends as one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from roots_core.errors import RootsError
from roots_scale.config import load_config
from roots_scale.launch.data_pipeline import data_jobs, expand_extracts, parse_stage_args, render_data_pipeline
from roots_scale.launch.profile import LaunchError, load_profile
from roots_scale.launch.render import LAUNCHERS, render_training


def build_parser() -> argparse.ArgumentParser:
    """`roots-launch train` and `roots-launch data`, with the output options they share."""
    parser = argparse.ArgumentParser(prog="roots-launch", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    train = commands.add_parser("train", help="a pretraining job: SLURM, torchrun or the DeepSpeed launcher",
                                epilog="Overrides: section.key=value, as for roots-train.")
    train.add_argument("--config", required=True, help="training config (YAML)")
    train.add_argument("--launcher", choices=LAUNCHERS, default="slurm")
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
    for sub in (train, data):
        sub.add_argument("--cluster", required=True, metavar="PROFILE", help="configs/clusters/<name>.yaml")
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
    profile = load_profile(args.cluster)
    workdir = Path.cwd()
    if args.command == "train":
        if args.submit and args.launcher != "slurm":
            raise LaunchError(f"--submit needs a scheduler: run the {args.launcher} script with bash where it "
                              f"should start, or use --launcher slurm")
        cfg = load_config(args.config, extra)
        script = render_training(args.launcher, profile, args.config, extra, cfg, workdir)
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


if __name__ == "__main__":
    sys.exit(main())
