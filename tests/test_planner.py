"""`roots-train plan` against reality: its parameter counts equal the built model's (whole, per TP rank, per
pipeline stage), its activation bytes what autograd saves on CPU, its optimizer state what the engine holds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from in_process import run_ok
from roots_scale import cli
from roots_scale.config import ModelConfig, load_config, validate
from roots_scale.planning.counts import activation_bytes, parameter_counts
from roots_scale.planning.measure import saved_activation_bytes

ROOT = Path(__file__).resolve().parents[1]
VOCAB = 512
STYLES = {
    "gpt2": {},
    "llama": dict(position_embedding="rope", normalization="rmsnorm", activation="swiglu", num_kv_heads=2,
                  bias=False, tie_embeddings=False),
}


def model_config(style: str, **extra) -> ModelConfig:
    return ModelConfig(num_layers=4, hidden_size=128, num_attention_heads=4, seq_length=64, dropout=0.0,
                       **STYLES[style], **extra)


def _measure(style: str, recompute: bool, tensor_parallel: int, sequence_parallel: bool) -> tuple[int, int, int]:
    from roots_scale.distributed import discover_launch_env, init_distributed
    from roots_scale.models import build_model

    init_distributed(discover_launch_env(), tensor_parallel)
    cfg = model_config(style, activation_checkpointing=recompute)
    model = build_model(cfg, VOCAB, tensor_parallel, sequence_parallel=sequence_parallel).train()
    torch.distributed.barrier()
    generator = torch.Generator().manual_seed(0)
    tokens, labels = (torch.randint(0, VOCAB, (2, 64), generator=generator) for _ in range(2))
    saved = saved_activation_bytes(model, tokens, labels)
    return sum(p.numel() for p in model.parameters()), saved, torch.distributed.get_rank()


@pytest.mark.parametrize("tensor_parallel,sequence_parallel", [(1, False), (2, False), (2, True)])
@pytest.mark.parametrize("recompute", [False, True])
@pytest.mark.parametrize("style", sorted(STYLES))
def test_parameters_are_exact_and_activations_are_what_autograd_saves(style: str, recompute: bool,
                                                                      tensor_parallel: int,
                                                                      sequence_parallel: bool) -> None:
    cfg = model_config(style, activation_checkpointing=recompute)
    counts = parameter_counts(cfg, VOCAB)
    act = activation_bytes(cfg, VOCAB, 2, tensor_parallel, "fp32", sequence_parallel)
    predicted = cfg.num_layers * act.block + act.first_stage_extra + act.last_stage_extra
    for result in run_ok(_measure, tensor_parallel, style, recompute, tensor_parallel, sequence_parallel):
        params, saved, _ = result.value
        assert params == counts.stage(0, 1).per_rank(tensor_parallel)
        assert predicted == pytest.approx(saved, rel=0.10), f"rank {result.rank}"
    if tensor_parallel == 1:
        assert counts.total == params


def _stage_parameters(style: str) -> tuple[int, int, int]:
    from megatron.core import parallel_state

    from roots_scale.distributed import discover_launch_env, init_distributed, topology
    from roots_scale.models.pipeline import build_pipeline_gpt

    init_distributed(discover_launch_env(), 2, 2)
    module = build_pipeline_gpt(model_config(style), VOCAB, 2, topology(2, 2, 4), seed=0)
    torch.distributed.barrier()  # rank 0 hosts the rendezvous store: nobody leaves while others still form groups
    return (sum(p.numel() for p in module.parameters()), parallel_state.get_pipeline_model_parallel_rank(),
            parallel_state.get_tensor_model_parallel_rank())


@pytest.mark.slow
@pytest.mark.parametrize("style", sorted(STYLES))
def test_parameters_per_pipeline_stage_and_tensor_rank_are_exact(style: str) -> None:
    counts = parameter_counts(model_config(style), VOCAB)
    for result in run_ok(_stage_parameters, 4, style):
        params, stage, _ = result.value
        assert params == counts.stage(stage, 2).per_rank(2), f"stage {stage}"


def _optimizer_bytes() -> tuple[int, int]:
    from roots_scale.config import validate
    from roots_scale.distributed import discover_launch_env, init_distributed
    from roots_scale.run import build_engine

    cfg = load_config(ROOT / "configs/tiny_gpt.yaml", [f"data.path={ROOT}", "train.precision=fp32"])
    plan = validate(cfg, 2)
    init_distributed(discover_launch_env(), 1)
    _, engine = build_engine(cfg, plan, VOCAB)
    optimizer = engine.optimizer
    masters = sum(t.numel() * t.element_size() for t in optimizer.single_partition_of_fp32_groups)
    from roots_scale.checkpoint.deepspeed_state import link_optimizer_states, base_optimizer

    link_optimizer_states(engine)
    moments = sum(v.numel() * v.element_size() for state in base_optimizer(engine).state.values()
                  for k, v in state.items() if k != "step")
    return masters + moments, sum(p.numel() for p in engine.module.parameters())


def test_optimizer_state_bytes_are_what_zero1_holds(capsys: pytest.CaptureFixture) -> None:
    """ZeRO-1 over 2 ranks: an fp32 master partition and Adam's two moments, half of the model each."""
    results = run_ok(_optimizer_bytes, 2)
    assert cli.main(["plan", "--config", "configs/tiny_gpt.yaml", "--nodes", "1", "--gpus-per-node", "2",
                     "--gpu", "H100", "train.precision=fp32", "model.vocab_size=512", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["parameters"] == results[0].value[1]
    for result in results:
        assert plan["memory_gb"]["optimizer"] * 1e9 == pytest.approx(result.value[0], rel=0.01)


def test_plan_needs_no_data_and_prints_json_the_checks_read(capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["plan", "--config", "configs/gpt_13b.yaml", "--nodes", "2", "--gpus-per-node", "8",
                     "--gpu", "H100", "data.path=/nonexistent", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["parameters"] == parameter_counts(load_config(ROOT / "configs/gpt_13b.yaml").model, 50304).total
    assert plan["fits"] and 10 < plan["memory_per_gpu_gb"] < 80
    assert plan["layout"] == {"tensor": 4, "pipeline": 2, "data": 2, "zero_stage": 1, "micro_batch": 1,
                              "accumulation": 256, "sequence_parallel": False}
    assert plan["bubble"] == pytest.approx(1 / 257)


def test_search_ranks_fitting_layouts_first(capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["plan", "--config", "configs/gpt_13b.yaml", "--nodes", "2", "--gpus-per-node", "8",
                     "--gpu", "A100-40GB", "--search", "--json", "--top", "1000"]) == 0
    plans = json.loads(capsys.readouterr().out)
    fits = [plan["fits"] for plan in plans]
    assert fits[0] and fits == sorted(fits, reverse=True)
    fitting = [plan["step_seconds"] for plan in plans if plan["fits"]]
    assert fitting == sorted(fitting)
    assert all(plan["layout"]["tensor"] <= 8 for plan in plans)
    assert not plans[-1]["fits"]  # plain data parallelism: 13B of bf16 weights and gradients on every GPU


def test_an_unknown_device_is_one_line(capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["plan", "--config", "configs/tiny_gpt.yaml", "--gpu", "TPUv9"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--gpu-memory-gb and --peak-tflops" in err


@pytest.mark.parametrize("preset,nodes,parameters", [
    ("bloom_176b", 48, 176_276_602_880),  # BLOOM's 176,247,271,424 + learned positions - embedding LayerNorm
    ("llama_70b", 16, 68_976_648_192),  # Llama-2-70B's published count
    ("gpt3_175b", 48, 174_604_836_864),  # GPT-3 "175B": 96 × 12h² + biases, norms, positions, vocabulary 50304
])
def test_scale_presets_validate_and_fit_their_documented_cluster(preset: str, nodes: int, parameters: int,
                                                                 capsys: pytest.CaptureFixture) -> None:
    cfg = load_config(ROOT / "configs" / f"{preset}.yaml")
    validate(cfg, nodes * 8, check_data=False)
    assert cli.main(["plan", "--config", f"configs/{preset}.yaml", "--nodes", str(nodes), "--gpus-per-node", "8",
                     "--gpu", "H100", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["parameters"] == parameters
    assert plan["fits"] and plan["memory_per_gpu_gb"] <= 80


class CommunicationCounter:
    """Bytes this rank sends per step in collectives and point-to-point transfers, by the parallel dimension of
    the group (ring algorithms: an all-reduce of B bytes over n ranks sends 2(n-1)/n·B, an all-gather or
    reduce-scatter (n-1)/n of the full buffer, a send its tensor). Counted by wrapping torch.distributed's
    functions, which DeepSpeed and megatron-core look up at each call."""

    # name: (position and keyword of the tensor whose size counts, position of `group`, bytes sent per byte)
    CALLS = {
        "all_reduce": ((0, "tensor"), 2, lambda n: 2 * (n - 1) / n),
        "all_gather_into_tensor": ((0, "output_tensor"), 2, lambda n: (n - 1) / n),
        "reduce_scatter_tensor": ((1, "input"), 3, lambda n: (n - 1) / n),
        "broadcast": ((0, "tensor"), 2, lambda n: 1.0),
        "send": ((0, "tensor"), 2, None),
        "isend": ((0, "tensor"), 2, None),
    }

    def __init__(self) -> None:
        self.sent = {"data": 0.0, "tensor": 0.0, "pipeline": 0.0, "other": 0.0}
        self.counting = False

    def install(self) -> None:
        import torch.distributed as dist
        from megatron.core import parallel_state

        self.kinds = {self._ranks(parallel_state.get_tensor_model_parallel_group()): "tensor",
                      self._ranks(parallel_state.get_data_parallel_group()): "data"}
        for name, spec in self.CALLS.items():
            setattr(dist, name, self._wrap(getattr(dist, name), *spec))

    @staticmethod
    def _ranks(group) -> frozenset[int]:
        import torch.distributed as dist

        return frozenset(dist.get_process_group_ranks(group) if group is not None else range(dist.get_world_size()))

    def _wrap(self, function, tensor_at: tuple[int, str], group_at: int, ring):
        import torch.distributed as dist

        def counted(*args, **kwargs):
            if self.counting:
                position, keyword = tensor_at
                tensor = kwargs[keyword] if keyword in kwargs else args[position]
                group = kwargs.get("group", args[group_at] if len(args) > group_at else None)
                nbytes = tensor.numel() * tensor.element_size()
                if ring is None:
                    self.sent["pipeline"] += nbytes
                else:
                    self.sent[self.kinds.get(self._ranks(group), "other")] += ring(dist.get_world_size(group)) * nbytes
            return function(*args, **kwargs)

        return counted


def _counting_callbacks(output: Path):
    from roots_scale.training.trainer import Callback

    class Count(Callback):
        def __init__(self) -> None:
            self.counter = CommunicationCounter()

        def on_fit_start(self, trainer) -> None:
            self.counter.install()

        def on_step_start(self, trainer, step: int) -> None:
            self.counter.counting = step in (2, 3)  # after DeepSpeed's first-step setup

        def on_fit_end(self, trainer, result) -> None:
            import torch.distributed as dist

            path = output / f"rank{dist.get_rank()}.json"
            path.write_text(json.dumps({k: v / 2 for k, v in self.counter.sent.items()}))

    return [Count()]


@pytest.mark.slow
def test_communication_volume_is_what_a_gloo_run_sends(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """TP 2 × PP 2 × DP 2 on 8 processes (ZeRO-1, fp32): bytes per GPU per step, by dimension, within 10 %."""
    from in_process import pretrain_ranks
    from store_helpers import write_random_store

    store = write_random_store(tmp_path / "store", num_documents=120, max_length=120)
    counts = tmp_path / "counts"
    counts.mkdir()
    layout = ["parallel.tensor=2", "parallel.pipeline=2", "model.num_layers=4", "model.seq_length=32",
              "train.micro_batch_size=2", "train.gradient_accumulation_steps=3", "train.precision=fp32",
              "model.vocab_size=512", "train.iters=4", "optimizer.warmup_iters=1", "train.save_interval=100"]
    pretrain_ranks(8, "--config", "configs/tiny_gpt.yaml", f"data.path={store}", f"run.output_dir={tmp_path / 'run'}",
                   *layout, callbacks=lambda: _counting_callbacks(counts))
    sent = [json.loads((counts / f"rank{rank}.json").read_text()) for rank in range(8)]
    assert cli.main(["plan", "--config", "configs/tiny_gpt.yaml", "--nodes", "1", "--gpus-per-node", "8",
                     *layout, "--json"]) == 0
    planned = json.loads(capsys.readouterr().out)["communication_gb"]
    for kind in ("data", "tensor", "pipeline"):
        measured = max(rank[kind] for rank in sent) / 1e9
        assert planned[kind] == pytest.approx(measured, rel=0.10), (kind, sent)
