"""Checkpoints you can trust: SIGKILL at random steps and mid-save, preemption signals, reshaping on
resume, non-finite losses, fingerprints and retention. Real DeepSpeed over gloo: jobs that are killed or
signalled run under real torchrun; the others (and every rerun) on forked ranks (tests/in_process.py)."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from distributed_helpers import ROOT, kill_job, logged_steps, signal_job, torchrun_background, wait_for
from faulty_pretrain import NaNLoss, nan_steps
from roots_scale.checkpoint.consolidated import LayoutFreeReader
from run_helpers import same_weights_and_moments
from in_process import pretrain_ranks
from store_helpers import write_random_store

pytestmark = pytest.mark.slow

PRETRAIN = "roots_scale/pretrain.py"
FAULTY = "tests/workers/faulty_pretrain.py"
CONFIGS = {"gpt": "configs/tiny_gpt.yaml", "bert": "configs/tiny_bert.yaml"}
STEPS = 8


def run_args(arch: str, store: Path, run_dir: Path, *overrides: str) -> list[str]:
    return ["--config", CONFIGS[arch], f"data.path={store}", f"run.output_dir={run_dir}", "model.seq_length=32",
            f"train.iters={STEPS}", "train.save_interval=2", "train.log_interval=1", "data.num_workers=0",
            *overrides]


def losses(run_dir: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def latest(run_dir: Path) -> str:
    return (run_dir / "checkpoints" / "latest").read_text().strip()


def exit_status(run_dir: Path) -> dict:
    return json.loads((run_dir / "exit_status.json").read_text())


def finish(*args: str, nproc: int = 2, nan_at: str | None = None, expect: int = 0) -> str:
    """Train to the end on `nproc` ranks, each exiting `expect`; what the ranks printed. `nan_at`: steps
    whose loss is NaN (see faulty_pretrain.nan_steps)."""
    callbacks = (lambda: [NaNLoss(nan_steps(nan_at))]) if nan_at else None
    results = pretrain_ranks(nproc, *args, callbacks=callbacks, expect=expect)
    return "\n".join(result.output for result in results)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return write_random_store(tmp_path_factory.mktemp("data") / "store", num_documents=200, max_length=120)


@pytest.fixture(scope="module")
def straight_gpt(tmp_path_factory, store: Path) -> list[float]:
    """Losses of an uninterrupted GPT run with the defaults (ZeRO-1): what every interrupted run must reproduce."""
    run = tmp_path_factory.mktemp("straight") / "run"
    finish(*run_args("gpt", store, run))
    return losses(run)


@pytest.mark.parametrize("arch,zero_stage", [("gpt", 1), ("gpt", 3), ("bert", 1), ("bert", 3)])
def test_sigkill_at_a_random_step_then_rerun_is_bitwise_identical(tmp_path: Path, store: Path, arch: str,
                                                                  zero_stage: int, straight_gpt) -> None:
    zero = f"parallel.zero_stage={zero_stage}"
    if (arch, zero_stage) == ("gpt", 1):
        reference = straight_gpt
    else:
        finish(*run_args(arch, store, tmp_path / "straight", zero))
        reference = losses(tmp_path / "straight")

    # A different step per case; 3+ so the step-2 checkpoint exists, and 3 steps of margin before the end.
    kill_after = random.Random(f"{arch}{zero_stage}").randint(3, STEPS - 3)
    killed = tmp_path / "killed"
    log = tmp_path / "killed.log"
    job = torchrun_background(2, PRETRAIN, *run_args(arch, store, killed, zero), log=log)
    wait_for(lambda: logged_steps(killed) >= kill_after, job, log)
    kill_job(job)
    assert logged_steps(killed) < STEPS, "the job finished before it could be killed"

    rerun = finish(*run_args(arch, store, killed, zero))
    assert "resumed from step" in rerun
    assert losses(killed) == reference  # bitwise, from the resumed step on and before it


def test_sigkill_in_the_middle_of_a_save_keeps_the_previous_checkpoint(tmp_path: Path, store: Path,
                                                                        straight_gpt) -> None:
    run = tmp_path / "run"
    log, marker = tmp_path / "job.log", tmp_path / "rank1_saving"
    job = torchrun_background(2, FAULTY, *run_args("gpt", store, run), log=log,
                              env={"FAULT_STALL_SAVE_STEP": "4", "FAULT_MARKER": str(marker)})
    wait_for(marker.exists, job, log)
    time.sleep(0.5)  # rank 0 goes on writing its part of step 4
    kill_job(job)
    assert latest(run) == "iter_0000002"  # the interrupted step-4 save never became latest
    assert not (run / "checkpoints" / "iter_0000004" / "meta.yaml").exists()

    rerun = finish(*run_args("gpt", store, run))
    assert "resumed from step 2" in rerun
    assert latest(run) == f"iter_{STEPS:07d}"
    assert losses(run) == straight_gpt


def test_sigterm_saves_and_exits_with_the_requeue_code_and_rerun_continues(tmp_path: Path, store: Path,
                                                                           straight_gpt) -> None:
    run = tmp_path / "run"
    log = tmp_path / "job.log"
    job = torchrun_background(2, PRETRAIN, *run_args("gpt", store, run), log=log)
    wait_for(lambda: logged_steps(run) >= 3, job, log)
    signal_job(job, signal.SIGTERM)  # what SLURM does at a time limit, to every process of the step
    job.wait(timeout=120)
    status = exit_status(run)
    assert status["reason"] == "preempted" and status["requeue"] and status["exit_code"] == 3, status
    assert latest(run) == f"iter_{status['step']:07d}"  # saved at the step it stopped after, not a step earlier
    assert status["step"] < STEPS

    finish(*run_args("gpt", store, run))
    assert exit_status(run)["reason"] == "finished"
    assert losses(run) == straight_gpt


def test_sigusr1_to_a_plain_python_process_exits_3(tmp_path: Path, store: Path) -> None:
    run = tmp_path / "run"
    log = tmp_path / "job.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(log, "w") as handle:
        job = subprocess.Popen([sys.executable, PRETRAIN, *run_args("gpt", store, run, "train.iters=200")],
                               cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT, env=env)
    wait_for(lambda: logged_steps(run) >= 2, job, log)
    job.send_signal(signal.SIGUSR1)
    assert job.wait(timeout=120) == 3, log.read_text()[-3000:]
    assert exit_status(run)["reason"] == "preempted"
    assert "stopped on a preemption signal after saving" in log.read_text()


def test_reshape_tp2_dp2_checkpoint_onto_other_layouts(tmp_path: Path, store: Path) -> None:
    """Saved at TP=2 × DP=2 (ZeRO-1); resumed at TP=1 × DP=2 (ZeRO-3), TP=2 × DP=1 (ZeRO-0) and TP=2 × DP=2
    (ZeRO-2 and ZeRO-3)."""
    source = tmp_path / "tp2dp2"
    five = ["train.iters=5", "train.save_interval=3", "parallel.tensor=2", "parallel.zero_stage=1",
            "train.micro_batch_size=2"]
    finish(*run_args("gpt", store, source, *five), nproc=4)
    reference = losses(source)[3:5]  # steps 4 and 5 of the uninterrupted run: the weights, then Adam's moments

    convert = subprocess.run([sys.executable, "-m", "roots_scale.cli", "convert-checkpoint", str(source), "--output",
                              str(tmp_path / "full.pt")], cwd=ROOT, capture_output=True, text=True)
    assert convert.returncode == 0, convert.stderr
    full = torch.load(tmp_path / "full.pt", weights_only=True)
    assert full["layers.0.mlp.fc_in.weight"].shape == (4 * 64, 64)  # TP slices merged back into the full weight
    assert full["embedding.weight"].shape[0] % 128 == 0

    # another TP cut (full tensors re-sliced), and the same cut with other ZeRO partitions (ranges copied as is)
    one_replica = ["parallel.tensor=2", "train.micro_batch_size=2", "train.gradient_accumulation_steps=2"]
    for name, nproc, layout in [("tp1dp2_zero3", 2, ["parallel.tensor=1", "parallel.zero_stage=3",
                                                     "train.micro_batch_size=2"]),
                                ("tp2dp1_zero0", 2, ["parallel.zero_stage=0", *one_replica]),
                                ("tp2dp2_zero2", 4, ["parallel.tensor=2", "parallel.zero_stage=2",
                                                     "train.micro_batch_size=2"]),
                                ("tp2dp2_zero3", 4, ["parallel.tensor=2", "parallel.zero_stage=3",
                                                     "train.micro_batch_size=2"])]:
        run = tmp_path / name
        shutil.copytree(source, run)
        (run / "checkpoints" / "latest").write_text("iter_0000003\n")
        for later in (run / "checkpoints").glob("iter_000000[45]"):
            shutil.rmtree(later)
        output = finish(*run_args("gpt", store, run, "train.iters=5", *layout), nproc=nproc)
        assert "layout-free state" in output
        assert losses(run)[3:5] == pytest.approx(reference, rel=1e-5), name


def test_nonfinite_loss_is_skipped_then_repeated_stops_the_run(tmp_path: Path, store: Path) -> None:
    once = tmp_path / "once"
    finish(*run_args("gpt", store, once, "train.save_interval=1", "checkpoint.keep_last=null"), nan_at="3")
    records = [json.loads(line) for line in (once / "metrics.jsonl").read_text().splitlines()]
    assert [r["skipped_steps"] for r in records] == [0, 0, 1, 1, 1, 1, 1, 1]
    folder = once / "checkpoints"
    assert same_weights_and_moments(folder / "iter_0000002", folder / "iter_0000003")  # the NaN step moved nothing
    assert all(r["loss"] == r["loss"] for r in records[3:])  # finite again afterwards

    repeated = tmp_path / "repeated"
    output = finish(*run_args("gpt", store, repeated, "train.max_nonfinite_steps=2"), nan_at="5-", expect=4)
    assert "non-finite for 2 consecutive steps" in output
    status = exit_status(repeated)
    assert status["reason"] == "training_failed" and status["exit_code"] == 4 and not status["requeue"]
    assert latest(repeated) == "iter_0000004"  # the last good checkpoint, untouched
    meta = yaml.safe_load((repeated / "checkpoints/iter_0000004/meta.yaml").read_text())
    assert meta["step"] == 4 and meta["skipped_steps"] == 0


def test_resume_refuses_other_data_unless_allowed(tmp_path: Path, store: Path) -> None:
    run = tmp_path / "run"
    finish(*run_args("gpt", store, run, "train.exit_interval=2"))
    other = write_random_store(tmp_path / "other" / "store", num_documents=200, max_length=120, seed=7)
    refused = finish(*run_args("gpt", other, run), expect=2)
    assert "trained on other data or another tokenizer" in refused
    assert "checkpoint.allow_data_change=true" in refused
    assert "Traceback" not in refused
    assert exit_status(run)["exit_code"] == 2
    allowed = finish(*run_args("gpt", other, run, "checkpoint.allow_data_change=true"))
    assert "resumed from step 2" in allowed


def test_retention_keeps_the_last_k_and_every_mth(tmp_path: Path, store: Path) -> None:
    run = tmp_path / "run"
    finish(*run_args("gpt", store, run, "train.iters=9", "train.save_interval=1", "checkpoint.keep_last=2",
                     "checkpoint.keep_every=4"))
    kept = sorted(p.name for p in (run / "checkpoints").glob("iter_*"))
    assert kept == ["iter_0000004", "iter_0000008", "iter_0000009"]
    assert not list((run / "checkpoints").glob(".deleting-*"))


DAMAGED_LATEST = {  # what happens to `latest` (or the checkpoint it names) -> the note, the step resumed from
    "missing": (lambda d: (d / "latest").unlink(), "latest is missing", 4),
    "random_bytes": (lambda d: (d / "latest").write_bytes(b"\xff\xfe\x00garbage"), "latest is unreadable", 4),
    "names_an_incomplete_folder": (lambda d: (d / "iter_0000004" / "rng_state_rank00001.pt").unlink(),
                                   "names iter_0000004, which is incomplete (missing rng_state_rank00001.pt)", 2),
}


@pytest.mark.parametrize("damage", sorted(DAMAGED_LATEST))
def test_a_damaged_latest_resumes_from_the_newest_complete_checkpoint(tmp_path: Path, store: Path, damage: str,
                                                                     straight_gpt) -> None:
    run = tmp_path / "run"
    finish(*run_args("gpt", store, run, "train.exit_interval=4"))
    harm, note, step = DAMAGED_LATEST[damage]
    harm(run / "checkpoints")
    output = finish(*run_args("gpt", store, run))
    assert note in output and f"resuming from the newest complete checkpoint, iter_{step:07d}" in output, output
    assert f"resumed from step {step}" in output
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    last_loss_per_step = {r["step"]: r["loss"] for r in records}  # steps after the resume point were logged twice
    assert list(last_loss_per_step.values()) == straight_gpt  # and continue exactly as if never interrupted


@pytest.mark.parametrize("change", ["model.num_attention_heads=2", "model.hidden_size=32", "train.seed=7"])
def test_a_changed_model_or_data_order_is_refused_before_anything_is_written(tmp_path: Path, store: Path,
                                                                            change: str) -> None:
    run = tmp_path / "run"
    finish(*run_args("gpt", store, run, "train.exit_interval=2"))
    config_before = (run / "config.yaml").read_text()
    key, value = change.split("=")
    refused = finish(*run_args("gpt", store, run, change), expect=2)
    assert f"differs from checkpoint {run / 'checkpoints' / 'iter_0000002'}'s in what it trains: {key}:" in refused
    assert f"-> {value}" in refused and "checkpoint.allow_config_change=true" in refused
    assert "Traceback" not in refused
    assert (run / "config.yaml").read_text() == config_before  # the rejected config was never written
    if key == "model.num_attention_heads":  # same shapes: continuing is possible, on purpose
        allowed = finish(*run_args("gpt", store, run, change, "checkpoint.allow_config_change=true"))
        assert "resumed from step 2" in allowed


def test_a_longer_run_and_another_schedule_resume_freely(tmp_path: Path, store: Path) -> None:
    run = tmp_path / "run"
    finish(*run_args("gpt", store, run, "train.exit_interval=2"))
    output = finish(*run_args("gpt", store, run, "train.iters=10", "optimizer.lr=1e-4", "train.log_interval=2"))
    assert "resumed from step 2" in output


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


DAMAGE = {  # what is done to a file of the newest checkpoint -> how the error describes it
    "flipped_byte": (_flip_a_byte, r"has sha256 [0-9a-f]{64}, not [0-9a-f]{64}"),
    "truncated": (lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]), r"has \d+ bytes, not \d+"),
    "deleted": (lambda p: p.unlink(), "is missing"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_checkpoint_file_is_named_with_the_checkpoint_to_use_instead(tmp_path: Path, store: Path,
                                                                              damage: str) -> None:
    run = tmp_path / "run"
    finish(*run_args("gpt", store, run, "train.exit_interval=4"))
    newest = run / "checkpoints" / "iter_0000004"
    assert (newest / "checksums.json").is_file()
    harm, description = DAMAGE[damage]
    victim = next(newest.glob("*optim_states.pt"))
    harm(victim)
    output = finish(*run_args("gpt", store, run), expect=2)
    assert re.search(re.escape(f"checkpoint {newest} is damaged: {victim} ") + description, output), output
    assert "The newest older complete checkpoint is iter_0000002" in output and "Traceback" not in output


def test_a_full_disk_fails_the_save_cleanly_and_keeps_latest(tmp_path: Path, store: Path) -> None:
    """The checkpoints folder on a real 6 MB tmpfs: the step-2 checkpoint (about 4 MB) fits, step 4's does not."""
    run = tmp_path / "run"
    checkpoints = run / "checkpoints"
    checkpoints.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(checkpoints)], check=True)
    try:
        for attempt in ("first", "restart on the still-full disk"):
            output = finish(*run_args("gpt", store, run), expect=2)
            assert f"saving checkpoint {checkpoints / 'iter_0000004'} failed: no space left on device" in output, \
                (attempt, output)
            assert "latest still names iter_0000002" in output and "Traceback" not in output
            assert latest(run) == "iter_0000002"
            kept = sorted(p.name for p in checkpoints.iterdir() if p.suffix != ".py")  # DeepSpeed's scripts stay
            assert kept == ["iter_0000002", "latest"]
            assert not [p for p in run.rglob("*") if ".tmp" in p.name]
            assert exit_status(run)["exit_code"] == 2
        assert "step 3/8" in output and "step 1/8" not in output  # the restart resumed from step 2
    finally:
        subprocess.run(["umount", str(checkpoints)], check=True)


@pytest.mark.parametrize("nproc,layout,target", [
    (1, [], (2, ["train.micro_batch_size=2"])),  # ZeRO-0 → DP=2 at ZeRO-1
    (2, ["parallel.pipeline=2"], (1, [])),  # the pipeline engine's ZeRO-1 → one process at ZeRO-0
])
def test_bf16_checkpoints_hold_the_fp32_master_weights_and_reshape(tmp_path: Path, store: Path, nproc: int,
                                                                   layout: list[str], target) -> None:
    """bf16 at ZeRO-0 (DeepSpeed keeps an fp32 master copy per weight) and through the pipeline engine (ZeRO-1):
    the layout-free state is the fp32 master, not the bf16 weight, and resumes on another layout."""
    source = tmp_path / "source"
    bf16 = ["train.precision=bf16", "train.iters=4", "train.save_interval=2", "checkpoint.keep_last=null"]
    finish(*run_args("gpt", store, source, *bf16, *layout), nproc=nproc)
    weights = LayoutFreeReader(source / "checkpoints" / "iter_0000002" / "layout_free").full("layers.0.mlp.fc_in.weight")
    assert weights.dtype == torch.float32 and not torch.equal(weights, weights.bfloat16().float())
    run = tmp_path / "reshaped"
    shutil.copytree(source, run)
    (run / "checkpoints" / "latest").write_text("iter_0000002\n")
    for later in ("iter_0000003", "iter_0000004"):
        shutil.rmtree(run / "checkpoints" / later, ignore_errors=True)
    output = finish(*run_args("gpt", store, run, *bf16, *target[1]), nproc=target[0])
    assert "layout-free state" in output
    assert losses(run)[2] == pytest.approx(losses(source)[2], rel=2e-2)
