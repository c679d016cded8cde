"""Weights & Biases beside tensorboard: a real tiny run logged offline under its run directory and read back with
wandb's own reader (`wandb leet inspect --json`), a resume continuing the same wandb run, a failed run marked
failed; and bad `run.wandb` settings as one-line errors, exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from in_process import ROOT
from roots_scale import pretrain
from roots_scale.training.trainer import Callback, TrainingError
from run_helpers import records, train
from store_helpers import write_random_store

WANDB = "run.wandb={project: roots-tests, mode: offline}"


class FailAfter(Callback):
    """A training failure (exit 4) once `step` is logged."""

    def __init__(self, step: int) -> None:
        self.step = step

    def after_step(self, trainer, step: int, stop: str | None) -> None:
        if step == self.step:
            raise TrainingError(f"failing on purpose after step {step}")


def wandb_records(offline_run: Path) -> list[dict]:
    """Every record of an offline run's .wandb transaction log, decoded by wandb itself."""
    log, = offline_run.glob("run-*.wandb")
    proc = subprocess.run([str(Path(sys.executable).parent / "wandb"), "leet", "inspect", "--json", str(log)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


@pytest.mark.slow
def test_offline_wandb_run_holds_the_metrics_and_a_resume_continues_it(tmp_path: Path) -> None:
    store = write_random_store(tmp_path / "store")
    run = tmp_path / "run"
    common = ("train.iters=4", "train.eval_interval=null", WANDB)
    train(store, run, 2, *common, "train.exit_interval=2")  # stops after step 2 with a checkpoint, exit 0
    train(store, run, 2, *common, callbacks=lambda: [FailAfter(3)], expect=4)  # resumes, fails after step 3

    run_id = (run / "wandb" / "run_id").read_text().strip()
    attempts = sorted((run / "wandb").glob("offline-run-*"))  # one per attempt, rank 0's only
    assert len(attempts) == 2 and all(path.name.endswith(f"-{run_id}") for path in attempts), attempts
    logs = [wandb_records(path) for path in attempts]
    history = [r["history"]["item"] for log in logs for r in log if r["type"] == "history"]
    metrics = records(run)
    assert [m["step"] for m in metrics] == [1, 2, 3]
    assert [(h["_step"], h["train/loss"], h["train/lr"]) for h in history] == [
        (m["step"], m["loss"], m["lr"]) for m in metrics]

    for log, exit_code in zip(logs, (0, 1)):  # finished, then failed: each attempt closed its wandb run
        run_record, = (r["run"] for r in log if r["type"] == "run")
        assert run_record["run_id"] == run_id and run_record["project"] == "roots-tests"
        assert run_record["config"]["update"]["train"]["iters"] == 4  # the resolved config
        assert run_record["config"]["update"]["run"]["output_dir"] == str(run)
        assert [r["exit"].get("exit_code", 0) for r in log if r["type"] == "exit"] == [exit_code]


@pytest.mark.parametrize("setting, message", [
    ("{project: p, projct: q}", ("run.wandb: unknown key 'run.wandb.projct'; did you mean 'run.wandb.project'? "
                                 "Valid keys here: project, mode, entity")),
    ("{mode: offline}", "run.wandb.project = None is invalid: it must be a Weights & Biases project name"),
    ("{project: p, mode: sometimes}",
     "run.wandb.mode = 'sometimes' is invalid: it must be one of online, offline, disabled"),
])
def test_bad_wandb_settings_are_one_line(setting: str, message: str, tmp_path: Path,
                                         capsys: pytest.CaptureFixture) -> None:
    assert pretrain.main(["--config", str(ROOT / "configs/tiny_gpt.yaml"), f"data.path={tmp_path}",
                          f"run.output_dir={tmp_path / 'run'}", f"run.wandb={setting}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"roots-train: error: {message}"), err


def test_wandb_not_installed_names_the_extra(tmp_path: Path, capsys: pytest.CaptureFixture,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if it were not installed: its import fails
    assert pretrain.main(["--config", str(ROOT / "configs/tiny_gpt.yaml"), f"data.path={tmp_path}",
                          f"run.output_dir={tmp_path / 'run'}", WANDB]) == 2
    assert capsys.readouterr().err == (
        "roots-train: error: run.wandb is set but wandb is not installed: pip install 'roots_scale[wandb]'\n")
