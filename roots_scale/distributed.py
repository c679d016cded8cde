"""Rank discovery for every launcher, process-group setup, and the DeepSpeed `mpu` adapter.

One code path for CPU and GPU: the backend comes from DeepSpeed's accelerator (NCCL on GPUs,
gloo on CPU). The process groups belong to megatron-core's `parallel_state`; DeepSpeed sees
them through `MegatronMpu`.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
from dataclasses import dataclass
from datetime import timedelta
from typing import Mapping

import deepspeed
import torch
from deepspeed.accelerator import get_accelerator
from deepspeed.runtime.pipe.topology import PipeModelDataParallelTopology
from megatron.core import parallel_state

from roots_core.errors import RootsError

MEGATRON_ORDER = "tp-cp-ep-dp-pp"
_MPIRUN_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MPI_LOCALNRANKS")  # Open MPI's mpirun, MPICH / Intel MPI  # fastest-varying first: the order of `topology`


class DistributedError(RootsError):
    """The launch environment is inconsistent or a process group could not form."""


@dataclass(frozen=True)
class LaunchEnv:
    """Who this process is in the job, whichever launcher started it."""

    rank: int
    local_rank: int
    world_size: int
    master_addr: str
    master_port: int
    launcher: str  # torchrun | slurm | mpi | single


def discover_launch_env(environ: Mapping[str, str] | None = None) -> LaunchEnv:
    """Find rank, local rank and world size from torchrun/deepspeed, SLURM, MPI, or none.

    torchrun and the `deepspeed` launcher set RANK/WORLD_SIZE; they win even inside a SLURM
    allocation (srun → torchrun). Then mpirun's own variables: inside an allocation mpirun starts
    its daemons with srun, so each process also sees SLURM variables, of a one-task step. MPI is only
    asked when an MPI launcher's variables are present, because importing mpi4py initializes MPI;
    under `srun --mpi=pmix` SLURM's variables are read (the same ranks).
    """
    env = os.environ if environ is None else environ
    if "RANK" in env and "WORLD_SIZE" in env:
        return LaunchEnv(
            rank=_int(env, "RANK"),
            local_rank=_int(env, "LOCAL_RANK", default=0),
            world_size=_int(env, "WORLD_SIZE"),
            master_addr=env.get("MASTER_ADDR", "127.0.0.1"),
            master_port=_int(env, "MASTER_PORT", default=29500),
            launcher="torchrun",
        )
    if any(k in env for k in _MPIRUN_VARIABLES):  # mpirun inside an allocation: SLURM's are those of its daemons
        return _discover_from_mpi(env)
    if "SLURM_PROCID" in env and "SLURM_NTASKS" in env:
        return LaunchEnv(
            rank=_int(env, "SLURM_PROCID"),
            local_rank=_int(env, "SLURM_LOCALID", default=0),
            world_size=_int(env, "SLURM_NTASKS"),
            master_addr=env.get("MASTER_ADDR") or _first_slurm_host(env),
            master_port=_int(env, "MASTER_PORT", default=_port_for_job(env.get("SLURM_JOB_ID", "0"))),
            launcher="slurm",
        )
    if any(k in env for k in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS")):
        return _discover_from_mpi(env)
    return LaunchEnv(0, 0, 1, "127.0.0.1", _int(env, "MASTER_PORT", default=_free_port()), "single")


def _int(env: Mapping[str, str], key: str, default: int | None = None) -> int:
    raw = env.get(key)
    if raw is None:
        if default is None:
            raise DistributedError(f"environment variable {key} is not set")
        return default
    try:
        return int(raw)
    except ValueError:
        raise DistributedError(f"environment variable {key}={raw!r} is not an integer") from None


def _first_slurm_host(env: Mapping[str, str]) -> str:
    nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
    if not nodelist:
        raise DistributedError("SLURM_JOB_NODELIST is not set: cannot find the first node for MASTER_ADDR")
    try:
        out = subprocess.run(["scontrol", "show", "hostnames", nodelist], check=True,
                             capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as err:
        raise DistributedError(f"scontrol show hostnames {nodelist!r} failed ({err}); set MASTER_ADDR") from err
    return out.split()[0]


def _port_for_job(job_id: str) -> int:
    """A port every task of one SLURM job agrees on without talking: derived from the job id."""
    return 20000 + int(hashlib.sha1(job_id.encode()).hexdigest(), 16) % 20000


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _discover_from_mpi(env: Mapping[str, str]) -> LaunchEnv:
    from mpi4py import MPI  # noqa: PLC0415 - importing initializes MPI: only under an MPI launcher

    comm = MPI.COMM_WORLD
    local_rank = comm.Split_type(MPI.COMM_TYPE_SHARED).Get_rank()
    master_addr = comm.bcast(socket.gethostbyname(socket.gethostname()) if comm.Get_rank() == 0 else None)
    master_port = comm.bcast(_int(env, "MASTER_PORT", default=_free_port()) if comm.Get_rank() == 0 else None)
    return LaunchEnv(comm.Get_rank(), local_rank, comm.Get_size(), master_addr, master_port, "mpi")


def init_distributed(launch: LaunchEnv, tensor_parallel: int, pipeline_parallel: int = 1,
                     timeout_s: float = 600) -> None:
    """Form the default process group and megatron-core's tensor/pipeline/data-parallel groups (`topology`'s order);
    a collective of any of them that waits `timeout_s` for a peer fails (`is_collective_failure`)."""
    os.environ.update(RANK=str(launch.rank), LOCAL_RANK=str(launch.local_rank),
                      WORLD_SIZE=str(launch.world_size), MASTER_ADDR=launch.master_addr,
                      MASTER_PORT=str(launch.master_port))
    accelerator = get_accelerator()
    if accelerator.device_name() != "cpu":
        accelerator.set_device(launch.local_rank)
    backend = accelerator.communication_backend_name()
    if not torch.distributed.is_initialized():
        deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False, verbose=False,
                                   timeout=timedelta(seconds=timeout_s))
    if not parallel_state.model_parallel_is_initialized():
        parallel_state.initialize_model_parallel(
            tensor_model_parallel_size=tensor_parallel,
            pipeline_model_parallel_size=pipeline_parallel,
            order=MEGATRON_ORDER,
            distributed_timeout_minutes=timeout_s / 60,  # a timedelta's minutes
            create_gloo_process_groups=backend != "gloo",  # on gloo the main groups already are gloo
        )


def placement(tensor_parallel: int, pipeline_parallel: int) -> dict:
    """Collective: every rank's host, and the ranks and hosts of each tensor-parallel group, for placement.json.

    `tensor_groups_span_nodes` is true when some tensor-parallel group is not inside one node: its every layer
    then crosses the slow inter-node network (the processes per node are not a multiple of parallel.tensor)."""
    hosts: list[str | None] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(hosts, socket.gethostname())
    layout = topology(tensor_parallel, pipeline_parallel, len(hosts))
    groups = layout.get_axis_comm_lists("model") if tensor_parallel > 1 else [[rank] for rank in range(len(hosts))]
    tensor_groups = [{"ranks": ranks, "hosts": sorted({hosts[rank] for rank in ranks})} for ranks in groups]
    return {"hosts": hosts, "nodes": sorted(set(hosts)), "tensor_groups": tensor_groups,
            "tensor_groups_span_nodes": any(len(group["hosts"]) > 1 for group in tensor_groups)}


def is_collective_failure(err: BaseException) -> bool:
    """Whether `err` is a collective that lost a peer: a closed connection (a process or node died) or the
    collective timeout (one hung). torch raises these as RuntimeError from its gloo / NCCL backends."""
    if isinstance(err, torch.distributed.DistError):
        return True
    message = str(err)
    return isinstance(err, RuntimeError) and any(mark in message for mark in _COLLECTIVE_FAILURES)


_COLLECTIVE_FAILURES = ("gloo/transport", "ProcessGroupGloo", "ProcessGroupNCCL", "NCCL error",
                        "Connection reset by peer", "Connection closed by peer", "Timed out waiting")


def topology(tensor_parallel: int, pipeline_parallel: int, world_size: int) -> PipeModelDataParallelTopology:
    """The one rank layout both libraries use: tensor-parallel ranks adjacent (so a TP group stays inside a node
    when TP divides the GPUs per node), then data parallel, then pipeline stages; megatron-core's order
    `MEGATRON_ORDER` is the same. DeepSpeed's pipeline engine builds its own groups from it, megatron-core's
    layers use `parallel_state`'s: `check_topology` proves they hold the same ranks."""
    data = world_size // (tensor_parallel * pipeline_parallel)
    return PipeModelDataParallelTopology(num_pp=pipeline_parallel, num_mp=tensor_parallel, num_dp=data)


def check_topology(layout: PipeModelDataParallelTopology) -> None:
    """DistributedError unless megatron-core's groups of this rank hold the ranks `layout` puts together."""
    rank = torch.distributed.get_rank()
    groups = {"model": parallel_state.get_tensor_model_parallel_group(),
              "data": parallel_state.get_data_parallel_group(),
              "pipe": parallel_state.get_pipeline_model_parallel_group()}
    for axis, group in groups.items():
        expected = next(ranks for ranks in layout.get_axis_comm_lists(axis) if rank in ranks) \
            if layout.get_dim(axis) > 1 else [rank]
        found = sorted(torch.distributed.get_process_group_ranks(group))
        if found != sorted(expected):
            raise DistributedError(f"rank {rank}: megatron-core's {axis}-parallel group holds ranks {found}, DeepSpeed's "
                                   f"topology {expected}; the two libraries disagree on the rank order")


def destroy_distributed() -> None:
    """Tear down the groups so a process can exit (or a test can start another world) cleanly."""
    parallel_state.destroy_model_parallel()
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


class MegatronMpu:
    """DeepSpeed's `mpu` interface over megatron-core's groups (model parallel = tensor × pipeline)."""

    def __init__(self) -> None:
        self._ps = parallel_state

    def get_model_parallel_group(self):
        return self._ps.get_model_parallel_group()

    def get_model_parallel_rank(self) -> int:
        return torch.distributed.get_rank(group=self.get_model_parallel_group())

    def get_model_parallel_world_size(self) -> int:
        return torch.distributed.get_world_size(group=self.get_model_parallel_group())

    def get_tensor_model_parallel_group(self):
        return self._ps.get_tensor_model_parallel_group()

    def get_tensor_model_parallel_rank(self) -> int:
        return self._ps.get_tensor_model_parallel_rank()

    def get_tensor_model_parallel_world_size(self) -> int:
        return self._ps.get_tensor_model_parallel_world_size()

    def get_tensor_model_parallel_src_rank(self) -> int:
        return self._ps.get_tensor_model_parallel_src_rank()

    # DeepSpeed calls tensor parallelism "slice parallel" in places.
    get_slice_parallel_group = get_tensor_model_parallel_group
    get_slice_parallel_rank = get_tensor_model_parallel_rank
    get_slice_parallel_world_size = get_tensor_model_parallel_world_size

    def get_pipeline_model_parallel_group(self):
        return self._ps.get_pipeline_model_parallel_group()

    def get_pipeline_model_parallel_rank(self) -> int:
        return self._ps.get_pipeline_model_parallel_rank()

    def get_pipeline_model_parallel_world_size(self) -> int:
        return self._ps.get_pipeline_model_parallel_world_size()

    get_pipe_parallel_group = get_pipeline_model_parallel_group
    get_pipe_parallel_rank = get_pipeline_model_parallel_rank
    get_pipe_parallel_world_size = get_pipeline_model_parallel_world_size

    def get_data_parallel_group(self):
        return self._ps.get_data_parallel_group()

    def get_data_parallel_rank(self) -> int:
        return self._ps.get_data_parallel_rank()

    def get_data_parallel_world_size(self) -> int:
        return self._ps.get_data_parallel_world_size()

    def get_data_parallel_group_ranks(self) -> list[int]:
        return torch.distributed.get_process_group_ranks(self.get_data_parallel_group())
