"""roots-launch: job scripts from a training config and a cluster profile, checked before submission.

`roots-launch train` renders a SLURM batch script (which runs launch/pretrain.slurm), a torchrun
script (one per node, c10d rendezvous) or a DeepSpeed-launcher script (hostfile), after checking the
plan (nodes × processes per node) against the config. `roots-launch data` renders the roots-data
pipeline as dependent SLURM job arrays. Profiles are YAML files in configs/clusters/.

A profile cannot inject shell commands: values that go on `#SBATCH` lines, host names and variable
names must match strict patterns, every other value is shell-quoted, and control characters are
refused everywhere.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import glob
import re
import shlex
import subprocess
import sys
import types
import typing
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from roots_scale.config import Config, ConfigError, load_config, validate

REPO = Path(__file__).resolve().parents[1]
PRETRAIN_SLURM = REPO / "launch" / "pretrain.slurm"
DATA_STAGE_SLURM = REPO / "launch" / "data_pipeline.slurm"
LAUNCHERS = ("slurm", "torchrun", "deepspeed")
DATA_STAGES = ("extract", "clean", "dedup", "train-tokenizer", "tokenize")

_DIRECTIVE = re.compile(r"[A-Za-z0-9_.,:=+@%/-]+")  # what an #SBATCH value may hold: no spaces, quotes or `$`
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_HOST = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]*")
_OPTION = re.compile(r"[a-z][a-z0-9-]*")
_TIME = re.compile(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?")  # SLURM: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S
_DEEPSPEED_EXPORT = re.compile(r"[\w@%+=:,./ -]*")  # values DeepSpeed's pdsh exports carry without expansion
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_FREE_PORT = """$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("", 0)); print(s.getsockname()[1])')"""


class LaunchError(ValueError):
    """A profile, plan or request that cannot make a working job; the message names the value and what would work."""


@dataclass(frozen=True)
class ClusterProfile:
    """One cluster's shape and job environment, as read from configs/clusters/<name>.yaml."""

    source: str  # the profile file, for messages
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    nodes: int = 1
    gpus_per_node: int = 0  # 0 = CPU-only nodes (gloo)
    procs_per_node: int | None = None  # training processes per node; None = gpus_per_node, or 1 without GPUs
    cpus_per_node: int | None = None  # None = do not ask for a CPU count
    time: str = "24:00:00"
    signal_seconds: int = 300  # SIGUSR1 this long before the time limit: save, then requeue
    exclusive: bool = True  # whole nodes for training jobs
    modules: list[str] = field(default_factory=list)  # `module load` in the job
    env: dict[str, str] = field(default_factory=dict)  # exported in the job
    container_image: str | None = None  # pyxis/enroot: srun --container-image
    container_mounts: list[str] = field(default_factory=list)
    hosts: list[str] = field(default_factory=list)  # torchrun / deepspeed launchers without a scheduler
    rendezvous_port: int = 29500  # multi-node torchrun / deepspeed
    python: str | None = None  # interpreter on the nodes; None = the one running roots-launch
    log_dir: str = "logs"  # job logs, relative to the directory roots-launch runs in
    sbatch: dict[str, str] = field(default_factory=dict)  # extra #SBATCH options, e.g. {constraint: h100}
    data_partition: str | None = None  # roots-data jobs; None = partition
    data_time: str | None = None  # None = time
    data_cpus_per_task: int = 1

    @property
    def processes_per_node(self) -> int:
        return self.procs_per_node or self.gpus_per_node or 1

    @property
    def world_size(self) -> int:
        return self.nodes * self.processes_per_node

    @property
    def interpreter(self) -> str:
        return self.python or sys.executable


class Raw(str):
    """A shell expression written by the generator itself (e.g. "$PYTHON"): the one thing left unquoted."""


# --------------------------------------------------------------------------- profiles


def load_profile(path: str | Path) -> ClusterProfile:
    """Read and check a cluster profile; every mistake is a LaunchError naming the file, key and value."""
    path = Path(path)
    if not path.is_file():
        known = sorted(p.name for p in (REPO / "configs" / "clusters").glob("*.yaml"))
        raise LaunchError(f"cluster profile {path} does not exist; profiles in configs/clusters: {', '.join(known)}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise LaunchError(f"{path} is not valid YAML: {err}") from err
    if not isinstance(raw, dict):
        raise LaunchError(f"{path} must hold a mapping of keys, got {type(raw).__name__}")
    hints = typing.get_type_hints(ClusterProfile)
    names = [f.name for f in dataclasses.fields(ClusterProfile) if f.name != "source"]
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1, cutoff=0.6)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise LaunchError(f"{path}: unknown key '{key}'{hint} (valid keys: {', '.join(names)})")
        values[key] = _typed(value, hints[key], f"{path}: '{key}' = {value!r}")
    profile = ClusterProfile(source=str(path), **values)
    _check_profile(profile)
    return profile


def _typed(value: Any, hint: Any, where: str) -> Any:
    """`value` if it has the annotated type; numbers in string lists and maps become strings."""
    optional = typing.get_origin(hint) in (typing.Union, types.UnionType)
    kind = next(a for a in typing.get_args(hint) if a is not type(None)) if optional else hint
    if value is None:
        if optional:
            return None
        raise LaunchError(f"{where}: a value is required")
    if kind is bool and isinstance(value, bool):
        return value
    if kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind is str and isinstance(value, str):
        return value
    if kind is str and isinstance(value, int) and not isinstance(value, bool):
        raise LaunchError(f"{where}: expected a string; quote it (YAML reads an unquoted 24:00:00 as a number)")
    if typing.get_origin(kind) is list and isinstance(value, list) and all(map(_scalar, value)):
        return [str(v) for v in value]
    if typing.get_origin(kind) is dict and isinstance(value, dict) \
            and all(isinstance(k, str) and _scalar(v) for k, v in value.items()):
        return {k: str(v) for k, v in value.items()}
    expected = {bool: "true or false", int: "an integer", str: "a string"}.get(
        kind, "a list of strings" if typing.get_origin(kind) is list else "a mapping of names to strings or numbers")
    raise LaunchError(f"{where}: expected {expected}")


def _scalar(value: Any) -> bool:
    return isinstance(value, (str, int, float)) and not isinstance(value, bool)


def _strings(value: Any) -> Iterator[str]:
    """Every string in a profile value: itself, a list's items, a mapping's keys and values."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        yield from value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from (key, item)


def _check_profile(p: ClusterProfile) -> None:
    """Everything about a profile that can be checked without the training config."""

    def bad(key: str, value: Any, valid: str) -> LaunchError:
        return LaunchError(f"{p.source}: '{key}' = {value!r} is invalid: it must be {valid}")

    for f in dataclasses.fields(p):
        if f.name != "source" and any(_CONTROL.search(s) for s in _strings(getattr(p, f.name))):
            raise bad(f.name, getattr(p, f.name), "free of control characters (newlines, tabs, escapes)")
    for key in ("partition", "account", "qos", "data_partition", "time", "data_time"):
        value = getattr(p, key)
        if value is not None and not _DIRECTIVE.fullmatch(value):
            raise bad(key, value, "letters, digits and . _ - : , = + @ % / only (it goes on an #SBATCH line)")
    for option, value in p.sbatch.items():
        if not _OPTION.fullmatch(option):
            raise bad("sbatch", option, "a long sbatch option name such as 'constraint' or 'reservation'")
        if not _DIRECTIVE.fullmatch(value):
            raise bad(f"sbatch.{option}", value, "letters, digits and . _ - : , = + @ % / only")
    for name in p.env:
        if not _ENV_NAME.fullmatch(name):
            raise bad("env", name, "environment variable names (letters, digits, _; not starting with a digit)")
    for host in p.hosts:
        if not _HOST.fullmatch(host):
            raise bad("hosts", host, "host names (letters, digits, . and -)")
    for key in ("container_image", "container_mounts"):
        if any(re.search(r"[\s,]", s) for s in _strings(getattr(p, key))):
            raise bad(key, getattr(p, key), "free of spaces and commas (srun joins mounts with commas)")
    for key in ("nodes", "data_cpus_per_task"):
        if getattr(p, key) < 1:
            raise bad(key, getattr(p, key), "at least 1")
    if p.gpus_per_node < 0:
        raise bad("gpus_per_node", p.gpus_per_node, "0 (CPU-only nodes) or more")
    if p.procs_per_node is not None and p.procs_per_node < 1:
        raise bad("procs_per_node", p.procs_per_node, "at least 1, or null")
    if p.procs_per_node is not None and p.gpus_per_node and p.procs_per_node != p.gpus_per_node:
        raise bad("procs_per_node", p.procs_per_node,
                  f"null or equal to gpus_per_node ({p.gpus_per_node}): one training process per GPU")
    if p.cpus_per_node is not None and p.cpus_per_node < p.processes_per_node:
        raise bad("cpus_per_node", p.cpus_per_node, f"at least the processes per node ({p.processes_per_node})")
    if not 0 <= p.signal_seconds < time_seconds(p.time, p.source, "time"):
        raise bad("signal_seconds", p.signal_seconds, f"0 or more and shorter than the time limit ({p.time})")
    if p.data_time is not None:
        time_seconds(p.data_time, p.source, "data_time")
    if not 1 <= p.rendezvous_port <= 65535:
        raise bad("rendezvous_port", p.rendezvous_port, "a TCP port, 1-65535")
    if p.hosts and len(p.hosts) != p.nodes:
        raise bad("hosts", p.hosts, f"empty or one host per node ({p.nodes} nodes)")


def time_seconds(value: str, source: str, key: str) -> int:
    """A SLURM time limit (minutes, M:S, H:M:S, D-H, D-H:M or D-H:M:S) in seconds."""
    match = _TIME.fullmatch(value)
    if not match:
        raise LaunchError(f"{source}: '{key}' = {value!r} is invalid: it must be a SLURM time limit such as "
                          f"'90' (minutes), '4:00:00' or '2-00:00:00'")
    days, a, b, c = (int(g) if g is not None else None for g in match.groups())
    if days is not None:
        return ((days * 24 + a) * 60 + (b or 0)) * 60 + (c or 0)
    if c is not None:
        return (a * 60 + b) * 60 + c
    return a * 60 + (b or 0)


# --------------------------------------------------------------------------- training jobs


def check_plan(profile: ClusterProfile, cfg: Config, config_path: str) -> str:
    """Validate `cfg` on the profile's world size; return a one-line description of the layout."""
    world, per_node, tensor = profile.world_size, profile.processes_per_node, cfg.parallel.tensor
    where = f"{config_path} on {profile.source} ({profile.nodes} node(s) × {per_node} process(es) = {world})"
    if tensor >= 1 and per_node % tensor:
        valid = ", ".join(str(d) for d in range(1, per_node + 1) if per_node % d == 0)
        raise LaunchError(f"{where}: parallel.tensor = {tensor} is invalid: a tensor-parallel group must fit in "
                          f"one node ({per_node} processes): valid values are {valid}")
    try:
        plan = validate(cfg, world)
    except ConfigError as err:
        raise LaunchError(f"{where}: {err}") from None
    return (f"{profile.nodes} node(s) × {per_node} = {world} processes = tensor {tensor} × data "
            f"{plan.data_parallel_size}; global batch {plan.global_batch_size} = micro {plan.micro_batch_size} × "
            f"accumulation {plan.gradient_accumulation_steps} × data {plan.data_parallel_size}")


def render_training(launcher: str, profile: ClusterProfile, config_path: str, overrides: Sequence[str],
                    cfg: Config, workdir: Path) -> str:
    """The launch script for `launcher` (slurm, torchrun or deepspeed), after checking the plan."""
    if launcher not in _RENDERERS:
        raise LaunchError(f"launcher {launcher!r} is unknown: valid launchers are {', '.join(LAUNCHERS)}")
    if launcher != "slurm" and profile.container_image:
        raise LaunchError(f"{profile.source}: container_image is applied through srun; the {launcher} launcher "
                          f"runs on the hosts directly (use --launcher slurm, or drop container_image)")
    layout = check_plan(profile, cfg, config_path)
    per_node = profile.processes_per_node
    head = ["#!/bin/bash", _comment(f"Generated by roots-launch from {config_path} and {profile.source}."),
            _comment(f"Layout: {layout}.")]
    if profile.nodes > 1:
        head.append(_comment(f"Ranks 0-{per_node - 1} run on the first node, {per_node}-{2 * per_node - 1} on the "
                             f"second, and so on; tensor-parallel groups are consecutive ranks, so each stays in a node."))
    job_name = re.sub(r"[^A-Za-z0-9_.-]", "-", cfg.run.name) or "roots-pretrain"
    body = _RENDERERS[launcher](profile, ["--config", config_path, *overrides], job_name, workdir)
    return "\n".join(head + body) + "\n"


def _slurm_script(p: ClusterProfile, train_args: list[str], job_name: str, workdir: Path) -> list[str]:
    """#SBATCH lines for the whole allocation, then launch/pretrain.slurm (one task per process, requeue)."""
    if not PRETRAIN_SLURM.is_file():
        raise LaunchError(f"{PRETRAIN_SLURM} is missing: roots-launch needs a checkout of the repository")
    per_node = p.processes_per_node
    options = [f"--job-name={job_name}", *_scheduler_options(p, p.partition, p.time), f"--nodes={p.nodes}",
               f"--ntasks-per-node={per_node}"]
    options += [f"--gpus-per-node={p.gpus_per_node}"] if p.gpus_per_node else []
    options += [f"--cpus-per-task={p.cpus_per_node // per_node}"] if p.cpus_per_node else []
    options += ["--exclusive", "--mem=0"] if p.exclusive else []
    options += [f"--signal=USR1@{p.signal_seconds}", "--requeue", "--open-mode=append",
                f"--output={workdir / p.log_dir / '%x-%j.out'}"]
    srun = [f"--container-image={p.container_image}", f"--container-workdir={workdir}"] if p.container_image else []
    srun += [f"--container-mounts={','.join(p.container_mounts)}"] if p.container_mounts else []
    lines = [_comment("Submit: sbatch <this file>. On SIGUSR1 (signal_seconds before the time limit) or a preemption "
                      "the run saves a checkpoint and the job requeues itself until the run finishes."),
             *(_directive(option) for option in options), *_prelude(p, workdir), f"export PROCS_PER_NODE={per_node}"]
    lines += [f"export SRUN_ARGS={shlex.quote(' '.join(srun))}"] if srun else []
    _, config, *overrides = train_args  # the config goes by name, so no path can pass for an override
    return lines + [f"export CONFIG={shlex.quote(config)}", _command(Raw("exec"), "bash", str(PRETRAIN_SLURM),
                                                                     *overrides)]


def _torchrun_script(p: ClusterProfile, train_args: list[str], job_name: str, workdir: Path) -> list[str]:
    """torchrun on each node; several nodes meet at a c10d rendezvous on the first."""
    if p.nodes == 1:
        lines = [_comment("Run: bash <this file>"), *_prelude(p, workdir)]
        rendezvous: list[str] = ["--standalone"]
    else:
        lines = [_comment(f"Run this same file once on each of the {p.nodes} nodes (e.g. pdsh -w "
                          f"{','.join(p.hosts) or 'HOST1,HOST2,...'} bash <this file>); the processes meet at a "
                          f"c10d rendezvous on the first node, port {p.rendezvous_port}."), *_prelude(p, workdir)]
        lines.append(f': "${{MASTER_ADDR:={p.hosts[0]}}}"' if p.hosts else
                     ': "${MASTER_ADDR:?set MASTER_ADDR to the first node, or list hosts: in the profile}"')
        rendezvous = ["--nnodes", str(p.nodes), "--rdzv-backend", "c10d",
                      "--rdzv-endpoint", Raw(f'"$MASTER_ADDR":{p.rendezvous_port}'), "--rdzv-id", job_name]
    return lines + [_command(Raw("exec"), Raw('"$PYTHON"'), "-m", "torch.distributed.run", *rendezvous,
                             "--nproc-per-node", str(p.processes_per_node), "--max-restarts", "0",
                             "-m", "roots_scale.pretrain", *train_args)]


def _deepspeed_script(p: ClusterProfile, train_args: list[str], job_name: str, workdir: Path) -> list[str]:
    """The DeepSpeed launcher with a hostfile: local processes on one node, pdsh to the others."""
    if p.nodes > 1 and not p.hosts:
        raise LaunchError(f"{p.source}: the deepspeed launcher on {p.nodes} nodes needs 'hosts:' (one host name "
                          f"per node) for its hostfile")
    hosts = p.hosts or ["localhost"]
    lines = [_comment(f"Run on {hosts[0]}: bash <this file>"
                      + ("; DeepSpeed starts the other nodes' processes with pdsh." if p.nodes > 1 else "")),
             *_prelude(p, workdir), 'DS_DIR=$(mktemp -d)', """trap 'rm -rf "$DS_DIR"' EXIT""",
             _command("printf", f"%s slots={p.processes_per_node}\\n", *hosts) + ' > "$DS_DIR/hostfile"']
    if p.nodes > 1 and p.env:  # pdsh starts remote processes with only the variables listed in DS_ENV_FILE
        for key, value in p.env.items():
            if not _DEEPSPEED_EXPORT.fullmatch(value):
                raise LaunchError(f"{p.source}: env {key} = {value!r} cannot pass through DeepSpeed's pdsh exports "
                                  f"unexpanded: use letters, digits, spaces and _ @ % + = : , . / - only")
        lines += [_command("printf", "%s\\n", *(f"{k}={v}" for k, v in p.env.items())) + ' > "$DS_DIR/env"',
                  'export DS_ENV_FILE="$DS_DIR/env"']
    port: str = str(p.rendezvous_port) if p.nodes > 1 else Raw(_FREE_PORT)
    return lines + [_command(Raw('"$PYTHON"'), "-m", "deepspeed.launcher.runner", "--hostfile",
                             Raw('"$DS_DIR/hostfile"'), "--num_nodes", str(p.nodes), "--num_gpus",
                             str(p.processes_per_node), "--master_addr", hosts[0], "--master_port", port,
                             *(["--no_ssh_check"] if p.nodes == 1 else []), "--module", "roots_scale.pretrain",
                             *train_args)]


_RENDERERS = {"slurm": _slurm_script, "torchrun": _torchrun_script, "deepspeed": _deepspeed_script}


def _prelude(p: ClusterProfile, workdir: Path) -> list[str]:
    """Strict mode, modules, the profile's environment, the interpreter and the working directory."""
    lines = ["set -euo pipefail"]
    lines += [_command("module", "load", *p.modules)] if p.modules else []
    lines += [f"export {key}={shlex.quote(value)}" for key, value in p.env.items()]
    if p.cpus_per_node and "OMP_NUM_THREADS" not in p.env:
        threads = max(1, p.cpus_per_node // p.processes_per_node)
        lines.append(f'export OMP_NUM_THREADS="${{OMP_NUM_THREADS:-{threads}}}"')
    return lines + [f"export PYTHON={shlex.quote(p.interpreter)}", _command("cd", str(workdir))]


def _scheduler_options(p: ClusterProfile, partition: str | None, time: str | None) -> list[str]:
    """Options every job of this profile gets: where it runs, who pays, how long, and the extras."""
    options = [f"--partition={partition}"] if partition else []
    options += [f"--account={p.account}"] if p.account else []
    options += [f"--qos={p.qos}"] if p.qos else []
    options += [f"--time={time}"] if time else []
    return options + [f"--{key}={value}" for key, value in p.sbatch.items()]


def _directive(option: str) -> str:
    """One `#SBATCH` line; sbatch reads these itself, unquoted, so the value must be plain."""
    key, _, value = option.partition("=")
    if value and not _DIRECTIVE.fullmatch(value):
        raise LaunchError(f"#SBATCH {key} = {value!r} cannot be written safely: it must be letters, digits and "
                          f". _ - : , = + @ % / only (run roots-launch from a directory whose path has no spaces)")
    return f"#SBATCH {option}"


def _command(*words: str) -> str:
    """A shell command line: every word quoted except the generator's own `Raw` expressions."""
    return " ".join(word if isinstance(word, Raw) else shlex.quote(word) for word in words)


def _comment(text: str) -> str:
    return "# " + _CONTROL.sub("?", text)


# --------------------------------------------------------------------------- data pipeline


@dataclass(frozen=True)
class DataJob:
    """One sbatch submission of the pipeline: a roots-data command, as a job array or a single job."""

    var: str  # shell variable that holds the job id
    args: list[str]  # roots-data arguments
    array: int  # number of slices; 0 = one job, not an array
    after: list[str] = field(default_factory=list)  # vars of the jobs it waits for (afterok)


def data_jobs(work_dir: str, extracts: Sequence[Sequence[str]], tokenizer: str | None, vocab_size: int | None,
              array_size: int, stage_args: dict[str, list[str]], workers: int) -> list[DataJob]:
    """extract (one array per input format) → clean → dedup signatures → cluster → filter → [train-tokenizer]
    → tokenize → verify, each waiting for the jobs before it."""
    if array_size < 1:
        raise LaunchError(f"--array-size {array_size} is invalid: it must be at least 1")
    docs, clean, dedup, store = (str(Path(work_dir) / d) for d in ("docs", "clean", "dedup", "store"))
    parallel = ["--num-workers", str(workers)]
    jobs = [DataJob(f"extract_{i}", ["extract", "--format", fmt, "--output", docs, *parallel,
                                     *stage_args.get("extract", []), *inputs], min(array_size, len(inputs)))
            for i, (fmt, *inputs) in enumerate(extracts, start=1)]
    dedup_args = ["dedup", "--input", clean, "--output", dedup, *parallel, *stage_args.get("dedup", [])]
    jobs += [
        DataJob("clean", ["clean", "--input", docs, "--output", clean, *parallel, *stage_args.get("clean", [])],
                array_size, [job.var for job in jobs]),
        DataJob("dedup_signatures", [*dedup_args, "--phase", "signatures"], array_size, ["clean"]),
        DataJob("dedup_cluster", [*dedup_args, "--phase", "cluster"], 0, ["dedup_signatures"]),
        DataJob("dedup_filter", [*dedup_args, "--phase", "filter"], array_size, ["dedup_cluster"]),
    ]
    if tokenizer is None:
        prefix = str(Path(work_dir) / "tokenizer" / "spm")
        jobs.append(DataJob("train_tokenizer", ["train-tokenizer", "--input", dedup, "--output", prefix,
                                                "--vocab-size", str(vocab_size), *stage_args.get("train-tokenizer", [])],
                            0, ["dedup_filter"]))
        tokenizer = f"{prefix}.model"
    return jobs + [
        DataJob("tokenize", ["tokenize", "--input", dedup, "--output", store, "--tokenizer", tokenizer, *parallel,
                             *stage_args.get("tokenize", [])], array_size, [jobs[-1].var]),
        DataJob("verify", ["verify", store], 0, ["tokenize"]),
    ]


def render_data_pipeline(p: ClusterProfile, jobs: Sequence[DataJob], workdir: Path) -> str:
    """A script that submits `jobs` with sbatch, each after the ones it waits for (afterok), printing the ids."""
    if not DATA_STAGE_SLURM.is_file():
        raise LaunchError(f"{DATA_STAGE_SLURM} is missing: roots-launch needs a checkout of the repository")
    sbatch = ["sbatch", "--parsable", "--kill-on-invalid-dep=yes", "--export=ALL",  # the jobs need $PYTHON, env
              *_scheduler_options(p, p.data_partition or p.partition, p.data_time or p.time),
              f"--cpus-per-task={p.data_cpus_per_task}"]
    lines = ["#!/bin/bash",
             _comment(f"Generated by roots-launch data from {p.source}: submits the roots-data stages as SLURM jobs,"),
             _comment("each after the one before succeeds (afterok); the tasks of a job array each take one slice of "
                      "the shards (--shard-index/--num-shards). Run: bash <this file>"),
             *_prelude(p, workdir), _command("mkdir", "-p", p.log_dir),
             f"SBATCH=({_command(*sbatch)})", f"STAGE={shlex.quote(str(DATA_STAGE_SLURM))}",
             'submit() { local id; id=$("${SBATCH[@]}" "$@"); echo "${id%%;*}"; }  # --parsable prints id[;cluster]']
    stage = Raw('"$STAGE"')
    for job in jobs:
        phase = f"-{job.args[job.args.index('--phase') + 1]}" if "--phase" in job.args else ""
        options = [f"--job-name=roots-data-{job.args[0]}{phase}"]
        options += [f"--array=0-{job.array - 1}", f"--output={p.log_dir}/%x-%A_%a.out"] if job.array else \
            [f"--output={p.log_dir}/%x-%j.out"]
        options += [Raw('"--dependency=afterok:' + ":".join(f"${var}" for var in job.after) + '"')] if job.after else []
        lines += [f"{job.var}=$(submit {_command(*options, stage, *job.args)})",
                  f'echo "submitted {job.var}: ${job.var}"']
    return "\n".join(lines) + "\n"


def _extracts(groups: Sequence[Sequence[str]]) -> list[list[str]]:
    """[format, file, ...] per --extract; quoted glob patterns are expanded; an input matching nothing is an error."""
    extracts = []
    for fmt, *patterns in groups:
        if not patterns:
            raise LaunchError(f"--extract {fmt}: give the format, then at least one input file")
        files: list[str] = []
        for pattern in patterns:
            matches = [pattern] if Path(pattern).exists() else sorted(glob.glob(pattern))
            if not matches:
                raise LaunchError(f"--extract {fmt}: input {pattern!r} does not exist and matches no file")
            files += matches
        extracts.append([fmt, *files])
    return extracts


def _stage_args(items: Sequence[str]) -> dict[str, list[str]]:
    """--stage-args STAGE='ARGS' items as argument lists per stage."""
    parsed: dict[str, list[str]] = {}
    for item in items:
        stage, sep, args = item.partition("=")
        if not sep or stage not in DATA_STAGES:
            raise LaunchError(f"--stage-args {item!r} is invalid: it must be STAGE='ARGS' with STAGE one of "
                              f"{', '.join(DATA_STAGES)}, e.g. clean='--languages en,fr --gopher'")
        try:
            parsed.setdefault(stage, []).extend(shlex.split(args))
        except ValueError as err:
            raise LaunchError(f"--stage-args {item!r}: {err}") from None
    return parsed


# --------------------------------------------------------------------------- command line


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
    """Render, write and optionally submit a job script; 2 on a LaunchError."""
    args, extra = build_parser().parse_known_args(argv)
    try:
        return _run(args, extra)
    except LaunchError as err:
        print(f"roots-launch: error: {err}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace, extra: list[str]) -> int:
    profile = load_profile(args.cluster)
    workdir = Path.cwd()
    if args.command == "train":
        if args.submit and args.launcher != "slurm":
            raise LaunchError(f"--submit needs a scheduler: run the {args.launcher} script with bash where it "
                              f"should start, or use --launcher slurm")
        try:
            cfg = load_config(args.config, extra)
        except ConfigError as err:
            raise LaunchError(str(err)) from None
        script = render_training(args.launcher, profile, args.config, extra, cfg, workdir)
        output = args.output or Path(cfg.run.output_dir) / "launch" / f"{args.launcher}.sh"
        runner = "sbatch" if args.launcher == "slurm" else "bash"
        writes_logs = args.launcher == "slurm"
    else:
        if extra:
            raise LaunchError(f"unrecognized arguments: {' '.join(extra)}")
        if args.tokenizer is not None and not Path(args.tokenizer).is_file():
            raise LaunchError(f"--tokenizer {args.tokenizer} does not exist")
        jobs = data_jobs(args.work_dir, _extracts(args.extract), args.tokenizer, args.vocab_size, args.array_size,
                         _stage_args(args.stage_args), profile.data_cpus_per_task)
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
