"""Memory, communication and time of one layout: the numbers `roots-train plan` prints for it.

Memory per GPU is the fullest pipeline stage's: weights, gradients and optimizer state (fp32 master copy and
Adam's two moments) divided as the ZeRO stage divides them, plus the activations of the micro-batches in
flight (1F1B keeps up to P on the first stage), plus a fixed runtime overhead. Communication is what one GPU
sends per step in ring collectives: data parallel reduces the gradients once per step, tensor parallel
all-reduces activations four times per block per micro-batch (two more when blocks are recomputed), pipeline
stages pass one activation forward and one gradient back per micro-batch, each TP rank 1/T of it. Step time: each of m + P − 1 slots
runs one micro-batch's share of the stage's FLOPs at `efficiency` × peak plus its tensor-parallel and
pipeline transfers; the data-parallel reduction follows the last slot.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from roots_scale.config import Config
from roots_scale.models.layers import padded_vocab_size
from roots_scale.planning.counts import PRECISION_BYTES, activation_bytes, blocks_in_stage, parameter_counts
from roots_scale.planning.devices import Device
from roots_scale.training.flops import model_flops_per_token

GB = 1e9


@dataclass(frozen=True)
class Layout:
    tensor: int
    pipeline: int
    data: int
    zero_stage: int
    micro_batch: int
    accumulation: int  # m: micro-batches per step and replica
    sequence_parallel: bool = False

    @property
    def world(self) -> int:
        return self.tensor * self.pipeline * self.data


@dataclass(frozen=True)
class Plan:
    layout: Layout
    parameters: int
    parameters_per_gpu: int
    memory_gb: dict[str, float]  # weights, gradients, optimizer, activations, overhead
    memory_per_gpu_gb: float
    device_memory_gb: float
    fits: bool
    bubble: float
    communication_gb: dict[str, float]  # per GPU per step: data, tensor, pipeline
    step_seconds: float
    tokens_per_second: float
    tflops_per_gpu: float
    mfu: float

    def to_dict(self) -> dict:
        return asdict(self)


def plan_layout(cfg: Config, layout: Layout, device: Device, gpus_per_node: int, efficiency: float = 0.5,
                overhead_gb: float = 2.0) -> Plan:
    m_cfg, precision = cfg.model, cfg.train.precision
    t, p, d, m, z = layout.tensor, layout.pipeline, layout.data, layout.accumulation, layout.zero_stage
    w = PRECISION_BYTES[precision]
    vocab = padded_vocab_size(m_cfg.vocab_size or 50257, m_cfg.make_vocab_size_divisible_by)
    counts = parameter_counts(m_cfg, vocab)
    per_gpu = counts.per_rank(t, p)
    master = 4 if precision != "fp32" or z >= 1 else 0
    memory = {
        "weights": per_gpu * w / (d if z == 3 else 1),
        "gradients": per_gpu * w / (d if z >= 2 else 1),
        "optimizer": per_gpu * (8 + master) / (d if z >= 1 else 1),
    }
    act = activation_bytes(m_cfg, vocab, layout.micro_batch, t, precision, layout.sequence_parallel)
    blocks = [blocks_in_stage(m_cfg.num_layers, stage, p) for stage in range(p)]
    in_flight = [min(m, p - stage) for stage in range(p)]
    extras = [(act.first_stage_extra if stage == 0 else 0) + (act.last_stage_extra if stage == p - 1 else 0)
              for stage in range(p)]
    memory["activations"] = max(n * (b * act.block + extra) for n, b, extra in zip(in_flight, blocks, extras))
    memory = {key: value / GB for key, value in memory.items()}
    memory["overhead"] = overhead_gb
    total_memory = sum(memory.values())

    tokens = layout.micro_batch * m_cfg.seq_length
    activation = tokens * m_cfg.hidden_size * w
    node_spans = {"data": t * d > gpus_per_node, "pipeline": t * d * p > gpus_per_node and t * d >= gpus_per_node}
    ring = lambda n: 2 * (n - 1) / n  # noqa: E731 - bytes sent per byte reduced, ring all-reduce of n ranks
    tensor_per_micro = (4 + 2 * m_cfg.activation_checkpointing) * blocks[0] + (2 if p == 1 else 1)
    directions = 2 if p > 2 else 1  # a middle stage sends activations forward and gradients back
    zero3 = 1.5 * ring(d) * per_gpu * w if z == 3 else 0  # + parameter all-gathers for forward and backward
    communication = {
        "data": (ring(d) * per_gpu * w + zero3) if d > 1 else 0.0,
        "tensor": m * tensor_per_micro * ring(t) * activation if t > 1 else 0.0,
        # each TP rank sends 1/T of what stages exchange: its sequence slice under SP, else DeepSpeed's
        # partition of the (replicated) activation, which the receiving stage all-gathers over its TP group
        "pipeline": m * directions * activation / t if p > 1 else 0.0,
    }
    if p > 1 and t > 1 and not layout.sequence_parallel:
        communication["tensor"] += m * directions * (t - 1) / t * activation
    bandwidth = {"data": device.inter_node_gbps if node_spans["data"] else device.intra_node_gbps,
                 "tensor": device.intra_node_gbps,
                 "pipeline": device.inter_node_gbps if node_spans["pipeline"] else device.intra_node_gbps}
    flops_per_token = model_flops_per_token(m_cfg, vocab)
    hardware = flops_per_token * (4 / 3 if m_cfg.activation_checkpointing else 1)  # recompute repeats the forward
    slot = (hardware * tokens * blocks[0] / m_cfg.num_layers / t / (device.peak_flops * efficiency)
            + (communication["tensor"] / bandwidth["tensor"] + communication["pipeline"] / bandwidth["pipeline"])
            / m / GB)
    step = (m + p - 1) * slot + communication["data"] / bandwidth["data"] / GB
    tokens_per_second = tokens * m * d / step
    achieved = flops_per_token * tokens_per_second / layout.world
    return Plan(layout, counts.total, per_gpu, memory, total_memory, device.memory_gb,
                total_memory <= device.memory_gb, (p - 1) / (m + p - 1),
                {k: v / GB for k, v in communication.items()}, step, tokens_per_second, achieved / 1e12,
                achieved / device.peak_flops)
