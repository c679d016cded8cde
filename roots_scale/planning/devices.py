"""Accelerators the planner knows: memory, dense peak FLOP/s (training/flops.py's table) and typical link speeds."""

from __future__ import annotations

from dataclasses import dataclass

from roots_scale.planning.errors import PlanError
from roots_scale.training.flops import peak_flops


@dataclass(frozen=True)
class Device:
    name: str
    memory_gb: float
    peak_flops: float  # dense, at the run's precision
    intra_node_gbps: float  # GB/s one GPU moves to its node's peers (NVLink/xGMI)
    inter_node_gbps: float  # GB/s one GPU moves across nodes (its share of the node's network)


# name: (memory GB, intra-node GB/s, inter-node GB/s per GPU); the first name containing the asked one wins
DEVICES: dict[str, tuple[float, float, float]] = {
    "H100": (80, 450, 50),  # SXM: NVLink 4, 400 Gb/s InfiniBand per GPU
    "H200": (141, 450, 50),
    "B200": (180, 900, 50),
    "A100-80GB": (80, 300, 25),  # NVLink 3, 200 Gb/s per GPU
    "A100-40GB": (40, 300, 25),
    "L40S": (48, 32, 12.5),  # PCIe 4
    "MI300X": (192, 448, 50),
}


def device(name: str, precision: str, memory_gb: float | None = None, peak_tflops: float | None = None) -> Device:
    """The device `name` (e.g. H100, H200, A100-80GB); `memory_gb` / `peak_tflops` override the table and are
    required for a device it lacks."""
    match = next((key for key in DEVICES if name.lower() in key.lower()), None)
    memory, intra, inter = DEVICES[match] if match else (None, 450.0, 50.0)
    peak = peak_tflops * 1e12 if peak_tflops else peak_flops(match or name, precision)
    memory = memory_gb or memory
    if memory is None or peak is None:
        raise PlanError(f"--gpu {name!r} is not in the planner's table ({', '.join(DEVICES)}): give its memory and "
                        f"peak with --gpu-memory-gb and --peak-tflops")
    return Device(match or name, float(memory), float(peak), intra, inter)
