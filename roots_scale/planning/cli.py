"""`roots-train plan`: does a layout fit, how fast will it be, and which layout of a cluster is best.

    roots-train plan --config configs/gpt_13b.yaml --nodes 2 --gpus-per-node 8 --gpu H100 [--search] [--json]

Needs no data and no processes: the config's model, batch and parallel settings (overrides as for training)
and the cluster's shape. `--cluster PROFILE` takes nodes, GPUs per node and link speeds from a cluster
profile; --gpu-memory-gb / --peak-tflops / --intra-node-gbps / --inter-node-gbps override the device table.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import itertools
import json
from collections.abc import Sequence

from roots_core.errors import RootsError
from roots_scale.config import Config, load_config, validate
from roots_scale.launch.profile import load_profile
from roots_scale.models.recurrent import is_recurrent
from roots_scale.planning.costs import Layout, Plan, plan_layout
from roots_scale.planning.devices import Device, device
from roots_scale.planning.errors import PlanError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="roots-train plan", description=__doc__.split("\n\n")[0],
                                     epilog="Overrides: section.key=value, as for training.")
    parser.add_argument("--config", required=True, help="training config (YAML); data.path may be absent")
    parser.add_argument("--cluster", metavar="PROFILE", help="a cluster profile: nodes, GPUs per node, link speeds")
    parser.add_argument("--nodes", type=int, help="nodes (default: the profile's, else 1)")
    parser.add_argument("--gpus-per-node", type=int, help="GPUs per node (default: the profile's, else 8)")
    parser.add_argument("--gpu", default="H100", help="device name: H100, H200, B200, A100-80GB, A100-40GB, L40S, "
                                                      "MI300X, or any with --gpu-memory-gb and --peak-tflops")
    parser.add_argument("--gpu-memory-gb", type=float, help="override the device's memory")
    parser.add_argument("--peak-tflops", type=float, help="override the device's dense peak at the run's precision")
    parser.add_argument("--intra-node-gbps", type=float, help="GB/s per GPU inside a node (NVLink)")
    parser.add_argument("--inter-node-gbps", type=float, help="GB/s per GPU across nodes (network)")
    parser.add_argument("--efficiency", type=float, default=0.5,
                        help="share of peak the matrix multiplies reach (default 0.5)")
    parser.add_argument("--search", action="store_true", help="rank every valid layout of the cluster")
    parser.add_argument("--top", type=int, default=10, help="layouts --search prints (default 10)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args, overrides = build_parser().parse_known_args(argv)
    cfg = load_config(args.config, overrides)
    if is_recurrent(cfg.model):
        raise PlanError(f"model.arch={cfg.model.arch} is invalid here: the planner models transformers (model.arch "
                        f"gpt or bert); a recurrent model trains with data parallelism and ZeRO 0-3 only, measure it "
                        f"with benchmarks/recurrent_vs_transformer.py")
    nodes, per_node, gpu = _cluster(args, cfg)
    world = nodes * per_node
    if args.search:
        plans = search(cfg, world, per_node, gpu, args.efficiency)
        if not plans:
            raise PlanError(f"no layout of {cfg.model.num_layers} layers and {cfg.model.num_attention_heads} heads "
                            f"runs the global batch on {nodes} × {per_node} GPUs")
        if args.json:
            print(json.dumps([plan.to_dict() for plan in plans[:args.top]], indent=2))
        else:
            print(_search_table(plans[:args.top], nodes, per_node, gpu))
        return 0
    plan = plan_layout(cfg, _layout(cfg, world), gpu, per_node, args.efficiency)
    print(json.dumps(plan.to_dict(), indent=2) if args.json else _plan_table(plan, nodes, per_node, gpu))
    return 0


def _cluster(args: argparse.Namespace, cfg: Config) -> tuple[int, int, Device]:
    profile = load_profile(args.cluster) if args.cluster else None
    nodes = args.nodes or (profile.nodes if profile else 1)
    per_node = args.gpus_per_node or (profile.gpus_per_node if profile else 8)
    if nodes < 1 or per_node < 1:
        raise PlanError(f"--nodes {nodes} × --gpus-per-node {per_node}: both must be at least 1")
    gpu = device(args.gpu, cfg.train.precision, args.gpu_memory_gb, args.peak_tflops)
    intra = args.intra_node_gbps or (profile.intra_node_gbps if profile else None) or gpu.intra_node_gbps
    inter = args.inter_node_gbps or (profile.inter_node_gbps if profile else None) or gpu.inter_node_gbps
    return nodes, per_node, dataclasses.replace(gpu, intra_node_gbps=intra, inter_node_gbps=inter)


def _layout(cfg: Config, world: int) -> Layout:
    """The config's own layout on `world` GPUs (checked as training would check it, data aside)."""
    batch = validate(cfg, world, check_data=False)
    return Layout(cfg.parallel.tensor, cfg.parallel.pipeline, batch.data_parallel_size, cfg.parallel.zero_stage,
                  batch.micro_batch_size, batch.gradient_accumulation_steps, cfg.parallel.sequence_parallel)


def search(cfg: Config, world: int, per_node: int, gpu: Device, efficiency: float) -> list[Plan]:
    """Every valid tensor × pipeline × data layout (TP inside a node, with and without sequence parallelism, the
    config's global batch kept, micro-batch 1-8, ZeRO 1-3 where the pipeline allows; stages balanced by
    parameters where P does not divide the layers), the ones that fit first, fastest first."""
    global_batch = cfg.train.global_batch_size
    if global_batch is None:  # micro-batch × accumulation × the data-parallel size of the config's own layout
        global_batch = validate(copy.deepcopy(cfg), world, check_data=False).global_batch_size
    plans = []
    tensors = [t for t in range(1, per_node + 1) if per_node % t == 0]
    for tensor, pipeline, zero, micro, sequence in itertools.product(
            tensors, range(1, cfg.model.num_layers + 1), (1, 2, 3), (1, 2, 4, 8), (False, True)):
        if world % (tensor * pipeline) or (pipeline > 1 and zero != 1) or (sequence and tensor == 1):
            continue
        candidate = copy.deepcopy(cfg)
        partition = "uniform" if cfg.model.num_layers % pipeline == 0 else "parameters"
        candidate.parallel = dataclasses.replace(cfg.parallel, tensor=tensor, pipeline=pipeline, zero_stage=zero,
                                                 pipeline_partition=partition, sequence_parallel=sequence)
        candidate.train.micro_batch_size = micro
        candidate.train.global_batch_size = global_batch
        candidate.train.gradient_accumulation_steps = None
        try:
            layout = _layout(candidate, world)
        except RootsError:
            continue
        plans.append(plan_layout(candidate, layout, gpu, per_node, efficiency))
    return sorted(plans, key=lambda plan: (not plan.fits, plan.step_seconds))


def _describe(layout: Layout) -> str:
    return (f"TP {layout.tensor}{'+SP' if layout.sequence_parallel else ''} × PP {layout.pipeline} × DP "
            f"{layout.data}, ZeRO-{layout.zero_stage}, micro-batch {layout.micro_batch} × {layout.accumulation}")


def _plan_table(plan: Plan, nodes: int, per_node: int, gpu: Device) -> str:
    memory = "\n".join(f"  {key:<12}{value:>10.2f} GB" for key, value in plan.memory_gb.items())
    comm = ", ".join(f"{key} {value:.2f} GB" for key, value in plan.communication_gb.items())
    verdict = "fits" if plan.fits else "DOES NOT FIT"
    return (f"{_describe(plan.layout)} on {nodes} × {per_node} {gpu.name} ({gpu.memory_gb:g} GB, "
            f"{gpu.peak_flops / 1e12:g} TFLOP/s peak)\n"
            f"parameters {plan.parameters:,} ({plan.parameters_per_gpu:,} on the fullest GPU)\n"
            f"memory per GPU:\n{memory}\n  {'total':<12}{plan.memory_per_gpu_gb:>10.2f} GB  {verdict}\n"
            f"pipeline bubble {plan.bubble:.1%}; sent per GPU per step: {comm}\n"
            f"estimated step {plan.step_seconds:.2f} s, {plan.tokens_per_second:,.0f} tokens/s, "
            f"{plan.tflops_per_gpu:.0f} TFLOP/s per GPU, MFU {plan.mfu:.1%}")


def _search_table(plans: list[Plan], nodes: int, per_node: int, gpu: Device) -> str:
    head = f"layouts on {nodes} × {per_node} {gpu.name}, fastest that fit first\n"
    rows = [f"{'layout':<52}{'GB/GPU':>8}{'fits':>6}{'bubble':>8}{'step s':>9}{'MFU':>7}"]
    rows += [f"{_describe(p.layout):<52}{p.memory_per_gpu_gb:>8.1f}{'yes' if p.fits else 'no':>6}{p.bubble:>8.1%}"
             f"{p.step_seconds:>9.2f}{p.mfu:>7.1%}" for p in plans]
    return head + "\n".join(rows)
