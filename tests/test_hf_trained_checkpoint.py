"""A tiny Llama-style GPT trained at TP=2 by `roots-train`, then exported, generated from and evaluated.

The export loads offline in transformers and gives our logits; its greedy continuation is the one
`roots-train generate` prints; `roots-train evaluate` reports the loss transformers computes on the same samples.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from distributed_helpers import ROOT, torchrun
from hf_models import write_text_store
from roots_scale import cli

LLAMA = ["model.position_embedding=rope", "model.normalization=rmsnorm", "model.activation=swiglu",
         "model.num_kv_heads=2", "model.bias=false", "model.tie_embeddings=false", "model.seq_length=32"]
PROMPT = "The model"
pytestmark = pytest.mark.slow  # one real training run for the module
HF_GREEDY = """
import json, sys
from transformers import AutoModelForCausalLM, AutoTokenizer
tokenizer = AutoTokenizer.from_pretrained(sys.argv[1])
model = AutoModelForCausalLM.from_pretrained(sys.argv[1]).eval()
prompt = tokenizer(sys.argv[2], return_tensors="pt")
out = model.generate(**prompt, max_new_tokens=12, do_sample=False)[0].tolist()
print(json.dumps({"prompt_ids": prompt["input_ids"][0].tolist(), "completion_ids": out[prompt["input_ids"].shape[1]:]}))
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A run trained 2 steps at TP=2 on a blend of two stores (one tokenizer), and its export."""
    root = tmp_path_factory.mktemp("trained")
    spm_model, first = write_text_store(root / "first", documents=160)
    _, second = write_text_store(root / "second", documents=120, seed=1, tokenizer=spm_model)
    blend = root / "blend.yaml"
    blend.write_text(f"datasets:\n  - {{name: first, path: {first}, weight: 0.6}}\n"
                     f"  - {{name: second, path: {second}, weight: 0.4}}\n")
    run = root / "run"
    proc = torchrun(2, "roots_scale/pretrain.py", "--config", "configs/tiny_gpt.yaml", f"data.path={blend}",
                    f"run.output_dir={run}", "train.iters=2", "train.save_interval=2", "optimizer.warmup_iters=0",
                    "parallel.tensor=2", "run.tensorboard=false", *LLAMA)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert cli.main(["export-hf", str(run), "--output", str(root / "hf")]) == 0
    return {"run": run, "hf": root / "hf", "blend": blend, "first": first, "spm": spm_model}


def test_export_loads_offline_and_continues_like_roots_train_generate(trained: dict[str, Path]) -> None:
    offline = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    ours = subprocess.Popen([str(Path(sys.executable).parent / "roots-train"), "generate", str(trained["run"]),
                             "--prompt", PROMPT, "--max-new-tokens", "12", "--json"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=offline)
    theirs = subprocess.run([sys.executable, "-c", HF_GREEDY, str(trained["hf"]), PROMPT], capture_output=True,
                            text=True, env=offline, timeout=300)
    out, err = ours.communicate(timeout=300)
    assert ours.returncode == 0, err[-3000:]
    assert theirs.returncode == 0, theirs.stderr[-3000:]
    generated, reference = json.loads(out), json.loads(theirs.stdout.splitlines()[-1])
    assert generated["step"] == 2
    assert generated["prompt_ids"] == reference["prompt_ids"]
    assert len(generated["completion_ids"]) == 12
    assert generated["completion_ids"] == reference["completion_ids"]


def test_export_gives_the_checkpoint_logits(trained: dict[str, Path]) -> None:
    from transformers import AutoModelForCausalLM

    from roots_scale.posttrain.load import load_checkpoint_model, single_process_world

    ids = torch.randint(6, 300, (2, 32), generator=torch.Generator().manual_seed(3))
    with single_process_world(), torch.no_grad():
        model, state = load_checkpoint_model(trained["run"])
        ours = model(ids)
    assert state.config.parallel.tensor == 2
    theirs = AutoModelForCausalLM.from_pretrained(trained["hf"], local_files_only=True).eval()(ids).logits
    assert (ours - theirs).abs().max() <= 1e-4


def test_evaluate_reports_per_dataset_the_loss_transformers_computes(trained: dict[str, Path], tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture) -> None:
    from transformers import AutoModelForCausalLM

    from roots_scale.data.gpt_dataset import GPTDataset
    from roots_core.token_store import TokenStore

    report = tmp_path / "eval.json"
    assert cli.main(["evaluate", str(trained["run"]), "--split", "all", "--max-samples", "24", "--json", str(report)]) == 0
    table = capsys.readouterr().out
    assert "first" in table and "second" in table and "perplexity" in table
    result = json.loads(report.read_text())
    assert [d["name"] for d in result["datasets"]] == ["first", "second"]
    first, second = result["datasets"]
    assert first["samples"] == 24 and first["tokens"] == 24 * 32
    assert first["perplexity"] == pytest.approx(np.exp(first["loss"]))
    assert result["overall"]["loss"] == pytest.approx((first["loss"] + second["loss"]) / 2)

    store = TokenStore(trained["first"])  # the same 24 windows through transformers
    windows = GPTDataset(store, 32, 24, seed=1234, max_epochs=1)
    tokens = torch.from_numpy(np.stack([windows[i] for i in range(24)]))
    hf = AutoModelForCausalLM.from_pretrained(trained["hf"], local_files_only=True).eval()
    with torch.no_grad():
        logits = hf(tokens[:, :-1]).logits
    expected = torch.nn.functional.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten())
    assert float(expected) == pytest.approx(first["loss"], abs=1e-4)


def test_cli_errors_are_named(trained: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["export-hf", str(trained["run"]), "--output", str(trained["hf"])]) == 2
    assert "is not empty; export into a new directory" in capsys.readouterr().err
    other, _ = write_text_store(tmp_path / "other", documents=30)  # a different tokenizer
    assert cli.main(["export-hf", str(trained["run"]), "--output", str(tmp_path / "x"), "--tokenizer", str(other)]) == 2
    assert "is not the one the run trained with" in capsys.readouterr().err
    _, foreign = write_text_store(tmp_path / "foreign", documents=30, tokenizer=other)
    assert cli.main(["evaluate", str(trained["run"]), "--data", str(foreign)]) == 2
    assert "not the tokenizer the checkpoint was trained with" in capsys.readouterr().err
    assert cli.main(["evaluate", str(tmp_path), "--data", str(foreign)]) == 2
    assert "is not a checkpoint" in capsys.readouterr().err


def test_a_run_initialized_from_the_export_starts_from_the_same_model(trained: dict[str, Path],
                                                                      tmp_path: Path) -> None:
    """`model.init_from_hf` at TP=1 from a TP=2 run's export; one step at lr 0 changes nothing, so both evaluate alike."""
    run = tmp_path / "continued"
    proc = torchrun(1, "roots_scale/pretrain.py", "--config", "configs/tiny_gpt.yaml", f"data.path={trained['blend']}",
                    f"run.output_dir={run}", f"model.init_from_hf={trained['hf']}", "train.iters=1",
                    "optimizer.lr=0", "optimizer.min_lr=0", "optimizer.warmup_iters=0", "run.tensorboard=false",
                    *LLAMA)
    assert proc.returncode == 0, proc.stderr[-3000:]
    reports = {}
    for name, checkpoint in {"source": trained["run"], "continued": run}.items():
        reports[name] = tmp_path / f"{name}.json"
        assert cli.main(["evaluate", str(checkpoint), "--max-samples", "8", "--json", str(reports[name])]) == 0
    source, continued = (json.loads(reports[n].read_text())["overall"]["loss"] for n in ("source", "continued"))
    assert continued == pytest.approx(source, rel=1e-5)
