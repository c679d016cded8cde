"""Cluster profiles (configs/clusters/<name>.yaml), typed and checked so that no value can inject shell commands.

Values that go on `#SBATCH` lines, host names and variable names must match strict patterns, and control
characters are refused everywhere; the renderers shell-quote every other value.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from roots_core.errors import RootsError
from roots_scale.config import build_typed, read_yaml_mapping

DIRECTIVE_VALUE = re.compile(r"[A-Za-z0-9_.,:=+@%/-]+")  # what an #SBATCH value may hold: no spaces, quotes or `$`
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_HOST = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]*")
_OPTION = re.compile(r"[a-z][a-z0-9-]*")
_TIME = re.compile(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?")  # SLURM: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S


class LaunchError(RootsError):
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
    intra_node_gbps: float | None = None  # GB/s per GPU inside a node, for `roots-train plan`; None = the GPU's
    inter_node_gbps: float | None = None  # GB/s per GPU across nodes (its share of the network)

    @property
    def processes_per_node(self) -> int:
        """Training processes per node: one per GPU, else procs_per_node, else 1."""
        return self.procs_per_node or self.gpus_per_node or 1

    @property
    def world_size(self) -> int:
        """Training processes in the whole job, the world size the config is validated for."""
        return self.nodes * self.processes_per_node

    @property
    def interpreter(self) -> str:
        """The Python the jobs run: the profile's `python`, else the one running roots-launch."""
        return self.python or sys.executable


def load_profile(path: str | Path) -> ClusterProfile:
    """Read and check a cluster profile; every mistake is a LaunchError naming the file, key and value."""
    path = Path(path)
    if not path.is_file():
        known = sorted(p.name for p in path.parent.glob("*.yaml"))
        hint = f"profiles in {path.parent}: {', '.join(known)}" if known else \
            f"{path.parent} holds no .yaml profiles (the repository's are in configs/clusters)"
        raise LaunchError(f"cluster profile {path} does not exist; {hint}")
    raw = read_yaml_mapping(path, "cluster profile", LaunchError)
    profile = build_typed(ClusterProfile, raw, str(path), LaunchError, source=str(path))
    _check_profile(profile)
    return profile


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
        if f.name != "source" and any(CONTROL_CHARACTERS.search(s) for s in _strings(getattr(p, f.name))):
            raise bad(f.name, getattr(p, f.name), "free of control characters (newlines, tabs, escapes)")
    for key in ("partition", "account", "qos", "data_partition", "time", "data_time"):
        value = getattr(p, key)
        if value is not None and not DIRECTIVE_VALUE.fullmatch(value):
            raise bad(key, value, "letters, digits and . _ - : , = + @ % / only (it goes on an #SBATCH line)")
    for option, value in p.sbatch.items():
        if not _OPTION.fullmatch(option):
            raise bad("sbatch", option, "a long sbatch option name such as 'constraint' or 'reservation'")
        if not DIRECTIVE_VALUE.fullmatch(value):
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
    """A SLURM time limit (minutes, M:S, H:M:S, D-H, D-H:M or D-H:M:S) in seconds, to compare with signal_seconds."""
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
