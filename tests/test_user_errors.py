"""A user's mistake in the data ends as a user error on every rank: exit code 2, one line naming the file at
fault, `exit_status.json` saying so, and no traceback anywhere; a second job on a run directory is refused
without touching it; a crashed run leaves no stale status. Two real gloo ranks each."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from in_process import run_distributed
from roots_scale import pretrain
from roots_scale.training.trainer import Callback
from store_helpers import write_random_store


def train(run_dir: Path, data: Path, *overrides: str) -> list:
    return run_distributed(pretrain.main, 2, ["--config", "configs/tiny_gpt.yaml", f"data.path={data}",
                                             f"run.output_dir={run_dir}", "model.seq_length=32", "train.iters=4",
                                             "data.num_workers=0", *overrides])


def assert_user_error(results: list, run_dir: Path, *fragments: str) -> None:
    for result in results:
        assert result.error is None and result.value == 2, (result.rank, result.value, result.error, result.output)
        assert "Traceback" not in result.output, result.output
        errors = [line for line in result.output.splitlines() if "error:" in line]
        assert len(errors) == 1 and all(fragment in errors[0] for fragment in fragments), (fragments, result.output)
    status = json.loads((run_dir / "exit_status.json").read_text())
    assert status["exit_code"] == 2 and status["reason"] == "error" and not status["requeue"], status


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return write_random_store(tmp_path_factory.mktemp("data") / "store", num_documents=60, max_length=80)


BLENDS = {
    "bad_yaml": ("datasets: [ {name: a, path: STORE", "is not readable YAML"),
    "negative_weight": ("datasets:\n  - {name: a, path: STORE, weight: -1}\n", "'weight' must be a finite number"),
    "missing_store": ("datasets:\n  - {name: a, path: STORE/../nowhere, weight: 1}\n", "nowhere"),
    "empty_list": ("datasets: []\n", "a blend with no datasets"),
}


@pytest.mark.parametrize("case", sorted(BLENDS))
def test_a_malformed_blend_file_is_a_user_error_on_every_rank(tmp_path: Path, store: Path, case: str) -> None:
    text, message = BLENDS[case]
    blend = tmp_path / "blend.yaml"
    blend.write_text(text.replace("STORE", str(store)))
    run_dir = tmp_path / "run"
    assert_user_error(train(run_dir, blend), run_dir, str(blend) if case != "missing_store" else "nowhere", message)


def test_a_store_too_small_for_its_split_is_a_user_error(tmp_path: Path) -> None:
    tiny = write_random_store(tmp_path / "tiny", num_documents=2, max_length=80, files=1)
    run_dir = tmp_path / "run"
    assert_user_error(train(run_dir, tiny, "data.split=98,1,1"), run_dir, "needs at least 3 documents", "has 2")


def test_a_store_without_documents_is_a_user_error(tmp_path: Path) -> None:
    empty = write_random_store(tmp_path / "empty", num_documents=0, files=1)
    run_dir = tmp_path / "run"
    assert_user_error(train(run_dir, empty), run_dir, str(empty))


HOLD_LOCK = ("import sys, time; from roots_core.lock import DirectoryLock; lock = DirectoryLock(sys.argv[1]); "
             "lock.acquire(); print('held', flush=True); time.sleep(600)")


def test_a_second_job_on_a_run_directory_exits_2_naming_the_holder(tmp_path: Path, store: Path) -> None:
    run_dir = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(run_dir)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        ranks = train(run_dir, store)
        for result in ranks:
            assert result.value == 2 and "Traceback" not in result.output, result.output
        assert f"in use by another job (held by host {socket.gethostname()}, pid {holder.pid}" in ranks[0].output
        assert "rank 0 names it" in ranks[1].output
        assert sorted(p.name for p in run_dir.iterdir()) == [".lock"]  # nothing written: no config, no status
    finally:
        holder.kill()
        holder.wait()
    ranks = train(run_dir, store)  # the holder died: its lock went with it
    assert [result.value for result in ranks] == [0, 0], ranks[0].output


class Crash(Callback):
    """A bug (not a user error) in the middle of the run."""

    def on_step_end(self, trainer, step: int, loss: float, record: dict) -> None:
        if step == 2:
            raise RuntimeError("a bug")


def test_a_run_that_crashes_leaves_no_earlier_exit_status(tmp_path: Path, store: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "exit_status.json").write_text('{"reason": "finished", "exit_code": 0}\n')  # an earlier attempt's
    ranks = run_distributed(pretrain.main, 2, ["--config", "configs/tiny_gpt.yaml", f"data.path={store}",
                                               f"run.output_dir={run_dir}", "model.seq_length=32", "train.iters=4",
                                               "data.num_workers=0"], [Crash()])
    assert all("a bug" in (result.error or "") for result in ranks)
    assert not (run_dir / "exit_status.json").exists()
