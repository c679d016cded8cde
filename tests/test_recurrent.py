"""Recurrent language models (model.arch rnn / lstm / gru): the model against plain torch, FLOPs by hand, `roots-train`
on 2 gloo ranks with ZeRO-1 (the loss falls), exact resume, resuming on another ZeRO stage and DP size, the
post-training tools on a recurrent checkpoint, and the one-line refusals of what cannot work."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from hf_models import write_text_store
from in_process import ROOT, pretrain_ranks

from roots_core.token_store import TokenStore
from roots_scale import cli, pretrain
from roots_scale.config import ModelConfig
from roots_scale.data.gpt_dataset import GPTDataset
from roots_scale.models import build_model
from roots_scale.models.recurrent import RecurrentLM
from roots_scale.posttrain.load import load_checkpoint_model, single_process_world
from roots_scale.training.flops import matmul_params, model_flops_per_token

CONFIG = ROOT / "configs" / "tiny_gpt.yaml"
STEPS = 8
ARCHS = ("rnn", "lstm", "gru")
# ZeRO-3 keeps parameters under 100k elements whole on every rank; partition all of this tiny model's instead
ZERO3_PARTITION_ALL = "deepspeed.zero_optimization.stage3_param_persistence_threshold=0"


def config(arch: str, **fields) -> ModelConfig:
    return ModelConfig(arch=arch, num_layers=2, hidden_size=32, seq_length=16, **fields)


def run_args(arch: str, store: Path, run_dir: Path, *overrides: str) -> list[str]:
    return ["--config", str(CONFIG), f"data.path={store}", f"run.output_dir={run_dir}", f"model.arch={arch}",
            "model.seq_length=32", f"train.iters={STEPS}", "train.save_interval=4", "train.log_interval=1",
            "train.eval_interval=4", "train.eval_iters=2", "optimizer.lr=5e-3", "optimizer.warmup_iters=0",
            "train.peak_tflops=1", "run.tensorboard=false", "data.num_workers=0", *overrides]


def train(*args: str, nproc: int = 2) -> str:
    """`roots-train` on `nproc` forked gloo ranks, every rank exiting 0; what they printed."""
    return "\n".join(result.output for result in pretrain_ranks(nproc, *args))


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def losses(run_dir: Path) -> list[float]:
    return [record["loss"] for record in records(run_dir)]


# --------------------------------------------------------------------------- the model, one process


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("tied", [True, False])
def test_forward_gives_logits_and_the_loss_of_plain_cross_entropy(arch: str, tied: bool) -> None:
    model = build_model(config(arch, tie_embeddings=tied, dropout=0.1), 40, seed=3).eval()
    assert isinstance(model, RecurrentLM) and isinstance(model.rnn, {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM,
                                                                      "gru": torch.nn.GRU}[arch])
    assert model.rnn.num_layers == 2 and model.rnn.hidden_size == 32
    generator = torch.Generator().manual_seed(0)
    tokens, labels = (torch.randint(0, 40, (3, 16), generator=generator) for _ in range(2))
    mask = (torch.rand(3, 16, generator=generator) > 0.3).float()
    logits = model(tokens)
    assert logits.shape == (3, 16, 40)
    expected = F.cross_entropy(logits.reshape(-1, 40), labels.reshape(-1))
    assert torch.allclose(model(tokens, labels), expected, rtol=1e-6)
    per_token = F.cross_entropy(logits.reshape(-1, 40), labels.reshape(-1), reduction="none")
    masked = (per_token * mask.reshape(-1)).sum() / mask.sum()
    assert torch.allclose(model(tokens, labels, mask), masked, rtol=1e-6)
    assert not torch.allclose(masked, expected)  # the mask weights the loss

    model.train()  # dropout on embeddings, between layers and on the outputs: two passes differ
    assert not torch.equal(model(tokens), model(tokens))


def test_tied_output_layer_is_the_embedding_tensor_and_init_follows_the_seed() -> None:
    tied = build_model(config("lstm"), 40, seed=3)
    untied = build_model(config("lstm", tie_embeddings=False), 40, seed=3)
    names = [name for name, _ in tied.named_parameters()]
    assert tied.output is None and not any("output" in name for name in names)
    assert sum(p.numel() for p in untied.parameters()) - sum(p.numel() for p in tied.parameters()) == 40 * 32

    tokens = torch.tensor([[7, 8, 9]])
    tied(tokens, torch.tensor([[30, 31, 32]])).backward()
    grad = tied.embedding.weight.grad
    assert grad[30:33].abs().sum() > 0  # rows only the labels touch: their gradient comes through the output layer
    with torch.no_grad():
        tied.embedding.weight[30] = 0.0
    assert torch.all(tied(tokens)[..., 30] == 0)  # the output layer reads the very tensor that was changed

    first, second = (build_model(config("lstm"), 40, seed=5).state_dict() for _ in range(2))
    other = build_model(config("lstm"), 40, seed=6).state_dict()
    assert all(torch.equal(first[name], second[name]) for name in first)
    assert not any(torch.equal(first[name], other[name]) for name in first)


def test_activation_checkpointing_gives_the_same_loss_and_gradients() -> None:
    """The recomputed stack replays the dropout masks of the forward pass."""
    generator = torch.Generator().manual_seed(1)
    tokens, labels = (torch.randint(0, 40, (2, 16), generator=generator) for _ in range(2))
    results = []
    for recompute in (False, True):
        model = build_model(config("gru", dropout=0.2, activation_checkpointing=recompute), 40, seed=3).train()
        torch.manual_seed(7)
        loss = model(tokens, labels)
        loss.backward()
        results.append((loss.detach(), [p.grad for p in model.parameters()]))
    (plain_loss, plain_grads), (loss, grads) = results
    assert torch.equal(loss, plain_loss)
    assert all(torch.allclose(a, b, rtol=1e-5, atol=1e-7) for a, b in zip(grads, plain_grads))


@pytest.mark.parametrize("arch,gates", [("rnn", 1), ("lstm", 4), ("gru", 3)])
def test_flops_count_the_recurrent_matmuls(arch: str, gates: int) -> None:
    cfg = ModelConfig(arch=arch, num_layers=2, hidden_size=256, seq_length=64)
    # Per layer W_ih and W_hh, each gates·256 × 256; two layers; LM head 256 · 2048 = 524,288.
    assert matmul_params(cfg, 2048) == 2 * gates * 2 * 256 * 256 + 524_288
    assert model_flops_per_token(cfg, 2048) == 6 * matmul_params(cfg, 2048)  # no attention term, whatever seq
    if arch == "lstm":
        assert model_flops_per_token(cfg, 2048) == 9_437_184  # the module docstring's example
    model = build_model(cfg, 2048)
    matrices = sum(p.numel() for name, p in model.named_parameters() if p.dim() == 2)  # W_ih, W_hh, tied head
    assert matmul_params(cfg, 2048) == matrices


# --------------------------------------------------------------------------- training on 2 ranks


@pytest.fixture(scope="module")
def text(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real-text token store (sentencepiece tokenizer trained on it), so generate can decode."""
    return write_text_store(tmp_path_factory.mktemp("text"), documents=160)[1]


@pytest.fixture(scope="module")
def lstm_run(tmp_path_factory: pytest.TempPathFactory, text: Path) -> Path:
    """An LSTM trained 8 steps on 2 ranks, ZeRO-1, checkpoints at steps 4 and 8."""
    run = tmp_path_factory.mktemp("lstm") / "run"
    train(*run_args("lstm", text, run))
    return run


@pytest.fixture(scope="module")
def gru_run(tmp_path_factory: pytest.TempPathFactory, text: Path) -> Path:
    """A GRU with dropout trained 8 steps uninterrupted on 2 ranks, ZeRO-1: what a resumed run must reproduce."""
    run = tmp_path_factory.mktemp("gru") / "run"
    train(*run_args("gru", text, run, "model.dropout=0.1"))
    return run


@pytest.mark.slow
def test_lstm_and_gru_train_on_two_ranks_with_zero1(lstm_run: Path, gru_run: Path) -> None:
    for run in (lstm_run, gru_run):
        logged = records(run)
        assert [r["step"] for r in logged] == list(range(1, STEPS + 1))
        assert np.mean(losses(run)[-2:]) < losses(run)[0] - 0.3, losses(run)
        assert logged[7]["valid_loss"] < logged[3]["valid_loss"]
        assert all(r["tflops_per_device"] > 0 and r["mfu"] > 0 for r in logged[1:])  # FLOPs of the recurrent model
        meta = yaml.safe_load((run / "checkpoints" / "iter_0000008" / "meta.yaml").read_text())
        assert meta["layout"]["data"] == 2 and meta["layout"]["zero_stage"] == 1
    assert yaml.safe_load((gru_run / "config.yaml").read_text())["model"]["arch"] == "gru"


@pytest.mark.slow
def test_exit_interval_stop_then_rerun_gives_the_uninterrupted_losses_bitwise(tmp_path: Path, text: Path,
                                                                               gru_run: Path) -> None:
    run = tmp_path / "run"
    args = run_args("gru", text, run, "model.dropout=0.1", "train.exit_interval=4")
    assert "stopped at train.exit_interval" in train(*args)
    assert len(losses(run)) == 4
    assert "resumed from step 4" in train(*args)
    assert losses(run) == losses(gru_run)  # bitwise, dropout masks included


@pytest.mark.slow
@pytest.mark.parametrize("name,nproc,layout", [("dp2_zero2", 2, ["parallel.zero_stage=2"]),
                                               ("dp2_zero3", 2, ["parallel.zero_stage=3", ZERO3_PARTITION_ALL]),
                                               ("dp1", 1, ["train.gradient_accumulation_steps=2"])])
def test_resume_on_another_zero_stage_or_dp_size_continues_with_the_same_losses(
        tmp_path: Path, text: Path, lstm_run: Path, name: str, nproc: int, layout: list[str]) -> None:
    run = tmp_path / name
    shutil.copytree(lstm_run, run)
    (run / "checkpoints" / "latest").write_text("iter_0000004\n")
    shutil.rmtree(run / "checkpoints" / "iter_0000008")
    output = train(*run_args("lstm", text, run, *layout), nproc=nproc)
    assert "layout-free state" in output
    assert losses(run)[4:] == pytest.approx(losses(lstm_run)[4:], rel=1e-5), name


# --------------------------------------------------------------------------- post-training on the checkpoint


@pytest.mark.slow
def test_generate_continues_greedily_with_the_checkpoint(lstm_run: Path, capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["generate", str(lstm_run), "--prompt", "The model", "--max-new-tokens", "6", "--json"]) == 0
    generated = json.loads(capsys.readouterr().out)
    assert generated["step"] == STEPS and generated["prompt_ids"]
    with single_process_world(), torch.no_grad():
        model, state = load_checkpoint_model(lstm_run)
        ids, expected = list(generated["prompt_ids"]), []
        for _ in range(6):  # greedy by hand over the tokenizer's 300 ids (the rest are padding rows)
            token = int(model(torch.tensor([ids]))[0, -1, :300].argmax())
            ids.append(token)
            expected.append(token)
            if token == 2:  # end of document
                break
    assert isinstance(model, RecurrentLM) and state.config.model.arch == "lstm"
    assert generated["completion_ids"] == expected


@pytest.mark.slow
def test_evaluate_reports_the_cross_entropy_of_the_checkpoint(lstm_run: Path, text: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture) -> None:
    report = tmp_path / "eval.json"
    assert cli.main(["evaluate", str(lstm_run), "--split", "all", "--max-samples", "12", "--json", str(report)]) == 0
    assert "perplexity" in capsys.readouterr().out
    result = json.loads(report.read_text())["overall"]
    assert result["samples"] == 12 and result["tokens"] == 12 * 32

    windows = GPTDataset(TokenStore(text), 32, 12, seed=1234, max_epochs=1)
    tokens = torch.from_numpy(np.stack([windows[i] for i in range(12)]))
    with single_process_world(), torch.no_grad():
        model, _ = load_checkpoint_model(lstm_run)
        logits = model(tokens[:, :-1])
    expected = F.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten())
    assert result["loss"] == pytest.approx(float(expected), abs=1e-5)


@pytest.mark.slow
def test_convert_checkpoint_writes_a_state_dict_of_the_model(lstm_run: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture) -> None:
    output = tmp_path / "lstm.pt"
    assert cli.main(["convert-checkpoint", str(lstm_run), "--output", str(output)]) == 0
    assert "from step 8" in capsys.readouterr().out
    params = torch.load(output, weights_only=True)
    cfg = yaml.safe_load((lstm_run / "config.yaml").read_text())["model"]
    model = RecurrentLM(ModelConfig(**cfg), params["embedding.weight"].shape[0]).eval()
    model.load_state_dict(params)  # strict: exactly the model's parameters
    tokens = torch.randint(6, 300, (2, 32), generator=torch.Generator().manual_seed(0))
    with single_process_world(), torch.no_grad():
        loaded, _ = load_checkpoint_model(lstm_run)
        assert torch.equal(model(tokens), loaded(tokens))


# --------------------------------------------------------------------------- refusals


def one_line_error(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("override,named", [
    ("parallel.tensor=2", "parallel.tensor = 2 is invalid: it must be 1 for model.arch=gru"),
    ("parallel.pipeline=2", "parallel.pipeline = 2 is invalid: it must be 1 for model.arch=gru"),
    ("parallel.sequence_parallel=true", "parallel.sequence_parallel = True is invalid: it must be false"),
    ("model.init_from_hf=hf/some_model", "model.init_from_hf = 'hf/some_model' is invalid: it must be null"),
])
def test_training_refuses_what_a_recurrent_model_cannot_run(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                           override: str, named: str) -> None:
    code = pretrain.main(["--config", str(CONFIG), "model.arch=gru", f"data.path={tmp_path}",
                          f"run.output_dir={tmp_path / 'run'}", override])
    assert code == 2
    assert named in one_line_error(capsys)


def test_plan_refuses_a_recurrent_model(capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["plan", "--config", str(CONFIG), "model.arch=lstm"]) == 2
    assert "model.arch=lstm is invalid here: the planner models transformers" in one_line_error(capsys)


@pytest.mark.slow
def test_export_hf_refuses_a_recurrent_checkpoint(lstm_run: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["export-hf", str(lstm_run), "--output", str(tmp_path / "hf")]) == 2
    assert "no transformers architecture" in one_line_error(capsys)
    assert not (tmp_path / "hf").exists()
