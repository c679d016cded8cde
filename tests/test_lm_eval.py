"""`roots-train lm-eval`: a tiny GPT trained for two steps, exported and evaluated by lm-evaluation-harness on the
task that ships in the package (local files, offline), the results JSON in the run directory agreeing with the
printed table; and its user errors as one line, exit 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hf_models import write_text_store
from roots_scale import cli
from run_helpers import train

TASK = "roots_python_stdlib"
TASK_ROWS = 46  # roots_scale/posttrain/lm_eval_tasks/python_stdlib/test.jsonl
pytestmark = pytest.mark.slow  # one real training run for the module


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny GPT-2 style run trained 2 steps on one process, with a checkpoint at step 2."""
    root = tmp_path_factory.mktemp("lm_eval")
    _, store = write_text_store(root / "data", documents=120)
    train(store, root / "run", 1, "train.iters=2", "train.save_interval=2", "train.eval_interval=null",
          "model.seq_length=128")
    return root / "run"


def table_values(table: str, task: str) -> dict[str, float]:
    """{metric: value} of `task`'s rows in the harness's markdown table (a task's later rows leave its name blank)."""
    values, current = {}, None
    for line in table.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) < 7 or cells[4] in ("Metric", "") or set(cells[4]) <= {"-", ":"}:
            continue
        current = cells[0] or current
        if current == task:
            values[cells[4]] = float(cells[6])
    return values


def test_lm_eval_writes_the_results_the_table_shows_offline(run: Path, tmp_path: Path) -> None:
    offline = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               "HF_HOME": str(tmp_path / "empty_hf_home"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([str(Path(sys.executable).parent / "roots-train"), "lm-eval", str(run), "--tasks", TASK,
                           "--batch-size", "16"], cwd=tmp_path, capture_output=True, text=True, env=offline,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((run / "lm_eval" / f"iter_0000002-{TASK}.json").read_text())
    metrics = results["results"][TASK]
    assert results["n-samples"][TASK]["effective"] == TASK_ROWS
    assert results["roots_scale"]["step"] == 2
    assert (run / "lm_eval" / "hf_iter_0000002" / "model.safetensors").is_file()
    printed = table_values(proc.stdout, TASK)
    assert set(printed) == {"acc", "acc_norm"}, proc.stdout
    for metric, shown in printed.items():
        value = metrics[f"{metric},none"]
        assert isinstance(value, float) and 0.0 <= value <= 1.0
        assert value * TASK_ROWS == pytest.approx(round(value * TASK_ROWS))  # a share of the 46 questions
        assert shown == pytest.approx(value, abs=5e-5)  # the table rounds to 4 decimals


def test_lm_eval_user_errors_are_one_line(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    def error_of(*argv: str) -> str:
        assert cli.main(["lm-eval", *argv]) == 2
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.startswith("roots-train lm-eval: error: ")]
        assert len(lines) == 1 and "Traceback" not in err, err
        return lines[0]

    assert "unknown task 'roots_python_stdlb' (did you mean roots_python_stdlib?); valid tasks are" in error_of(
        str(run), "--tasks", "roots_python_stdlb")
    assert "is not a checkpoint" in error_of(str(tmp_path), "--tasks", TASK)
    other, _ = write_text_store(tmp_path / "other", documents=30)  # another tokenizer: the export refuses it
    assert "is not the one the run trained with" in error_of(str(run), "--tasks", TASK, "--tokenizer", str(other))
    assert "--limit 0 is invalid: it must be at least 1" in error_of(str(run), "--tasks", TASK, "--limit", "0")
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # as if it were not installed: its import fails
    assert error_of(str(run), "--tasks", TASK).endswith(
        "lm-evaluation-harness is not installed: pip install 'roots_scale[eval]'")
