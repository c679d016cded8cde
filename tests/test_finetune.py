"""`roots-train finetune`: classification (GPT last token, BERT [CLS] pairs) and English → Chinese text-to-text from
pretrained checkpoints, on real DeepSpeed ranks; metrics checked against an independent count, exact resume, the
best checkpoint and early stopping, `roots-train evaluate` on a fine-tuned checkpoint, and bad input."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest
import yaml

from data_tools.shards import Document, write_shard
from data_tools.tokenize_shards import tokenize_shards
from data_tools.tokenizer import train_tokenizer
from distributed_helpers import ROOT
from in_process import pretrain_ranks

pytestmark = pytest.mark.slow

TOPICS = {
    "animals": "cat dog horse bird fish lion tiger rabbit mouse sheep goat duck".split(),
    "machines": "engine motor gear robot pump valve turbine laser drill crane boiler piston".split(),
    "food": "bread cheese apple rice soup butter honey pepper onion noodle salad cookie".split(),
}
FILLER = "the a of and with near under over very small large old new red blue".split()
ENGLISH_TO_CHINESE = {"cat": "猫", "dog": "狗", "horse": "马", "bird": "鸟", "fish": "鱼", "rice": "米饭",
                      "apple": "苹果", "bread": "面包", "red": "红色", "blue": "蓝色", "big": "大",
                      "small": "小"}


def topic_text(rng: random.Random, topic: str) -> str:
    words = [rng.choice(TOPICS[topic]) for _ in range(3)] + [rng.choice(FILLER) for _ in range(rng.randint(3, 6))]
    rng.shuffle(words)
    return " ".join(words)


def translation_pair(rng: random.Random) -> dict[str, str]:
    words = rng.sample(sorted(ENGLISH_TO_CHINESE), rng.randint(2, 3))
    return {"source": " ".join(words), "target": "".join(ENGLISH_TO_CHINESE[word] for word in words)}


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    """A real sentencepiece tokenizer and token store from English and Chinese text, a GPT and a BERT pretrained on
    it for a few steps, and labelled files (train JSONL, valid CSV; BERT pairs in Parquet; translations)."""
    root = tmp_path_factory.mktemp("finetune")
    rng = random.Random(0)
    texts = [topic_text(rng, rng.choice(sorted(TOPICS))) for _ in range(300)]
    texts += [f"{pair['source']} = {pair['target']}" for pair in (translation_pair(rng) for _ in range(100))]
    (root / "docs").mkdir()
    write_shard(root / "docs" / "part.parquet", [Document(f"d{i}", text, "test", None) for i, text in enumerate(texts)])
    tokenizer = train_tokenizer(root / "docs", root / "tokenizer", 600)
    tokenize_shards(root / "docs", tokenizer, root / "store")
    for arch in ("gpt", "bert"):
        pretrain_ranks(1, "--config", f"configs/tiny_{arch}.yaml", f"data.path={root / 'store'}",
                       f"run.output_dir={root / arch}", "train.iters=10", "model.seq_length=32",
                       "run.tensorboard=false", "train.precision=fp32")

    def rows(count: int) -> list[dict]:
        return [{"text": topic_text(rng, topic), "label": topic}
                for topic in (rng.choice(sorted(TOPICS)) for _ in range(count))]

    write_jsonl(root / "train.jsonl", rows(240))
    valid = rows(60)
    pa_csv.write_csv(pa.table({"text": [r["text"] for r in valid], "label": [r["label"] for r in valid]}),
                     root / "valid.csv")

    def pairs(count: int) -> pa.Table:
        firsts, seconds, labels = [], [], []
        for _ in range(count):
            a, b = rng.choice(sorted(TOPICS)), rng.choice(sorted(TOPICS))
            firsts.append(topic_text(rng, a))
            seconds.append(topic_text(rng, b))
            labels.append(int(a == b))
        return pa.table({"text_a": firsts, "text_b": seconds, "label": labels})

    pq.write_table(pairs(160), root / "pairs_train.parquet")
    pq.write_table(pairs(40), root / "pairs_valid.parquet")
    write_jsonl(root / "mt_train.jsonl", [translation_pair(rng) for _ in range(300)])
    write_jsonl(root / "mt_valid.jsonl", [translation_pair(rng) for _ in range(24)])
    return {"root": root, "gpt": root / "gpt", "bert": root / "bert", "tokenizer": tokenizer}


def finetune(world_size: int, run: Path, *overrides: str, expect: int = 0) -> str:
    results = pretrain_ranks(world_size, f"run.output_dir={run}", "run.tensorboard=false", "train.precision=fp32",
                             "train.log_interval=1", "optimizer.warmup_iters=0", "optimizer.weight_decay=0.0",
                             "data.num_workers=0", *overrides, expect=expect, finetune=True)
    return "\n".join(result.output for result in results)


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def evaluations(run: Path) -> list[dict]:
    return [record for record in metrics(run) if "valid_loss" in record]


def classification_args(world: dict[str, Path], **keys: str) -> list[str]:
    root = world["root"]
    settings = {"finetune.task": "classification", "finetune.init": str(world["gpt"]),
                "finetune.train_path": str(root / "train.jsonl"), "finetune.valid_path": str(root / "valid.csv"),
                "train.iters": "60", "train.eval_interval": "20", "train.micro_batch_size": "8",
                "optimizer.lr": "3e-3", "optimizer.min_lr": "3e-4", "train.save_interval": "100", **keys}
    return [f"{key}={value}" for key, value in settings.items()]


def independent_scores(true: list[int], predicted: list[int], classes: int) -> dict[str, float]:
    """Accuracy and macro precision/recall/F1 counted by hand, to check the library's numbers."""
    precision, recall, f1 = [], [], []
    for c in range(classes):
        tp = sum(t == c and p == c for t, p in zip(true, predicted))
        fp = sum(t != c and p == c for t, p in zip(true, predicted))
        fn = sum(t == c and p != c for t, p in zip(true, predicted))
        precision.append(tp / (tp + fp) if tp + fp else 0.0)
        recall.append(tp / (tp + fn) if tp + fn else 0.0)
        f1.append(2 * precision[-1] * recall[-1] / (precision[-1] + recall[-1]) if precision[-1] + recall[-1] else 0.0)
    return {"valid_accuracy": sum(t == p for t, p in zip(true, predicted)) / len(true),
            "valid_precision_macro": sum(precision) / classes, "valid_recall_macro": sum(recall) / classes,
            "valid_f1_macro": sum(f1) / classes}


def test_gpt_classification_with_tensor_parallelism_learns_and_reports_true_metrics(world, tmp_path: Path) -> None:
    run = tmp_path / "gpt_cls"
    finetune(2, run, *classification_args(world), "parallel.tensor=2")
    last = evaluations(run)[-1]
    assert last["step"] == 60
    assert last["valid_accuracy"] >= 0.8  # three balanced classes: the majority baseline is about 0.33
    report = json.loads((run / "evaluations" / "step_0000060.json").read_text())
    labels = yaml.safe_load((run / "config.yaml").read_text())["finetune"]["labels"]
    assert labels == sorted(TOPICS)
    valid = pa_csv.read_csv(world["root"] / "valid.csv").column("label").to_pylist()
    true = [labels.index(label) for label in valid]
    for key, value in independent_scores(true, report["predictions"], len(labels)).items():
        assert last[key] == pytest.approx(value, abs=1e-9), key
    assert [sum(row) for row in report["confusion"]] == [true.count(c) for c in range(len(labels))]

    # roots-train evaluate: the fine-tuned checkpoint on the labelled file gives the run's own numbers
    out = tmp_path / "evaluate.json"
    done = subprocess.run([sys.executable, "-m", "roots_scale.cli", "evaluate", str(run), "--data",
                           str(world["root"] / "valid.csv"), "--json", str(out)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "f1_macro" in done.stdout and "true \\ predicted" in done.stdout
    evaluated = json.loads(out.read_text())
    assert evaluated["metrics"]["accuracy"] == pytest.approx(last["valid_accuracy"], abs=1e-6)
    assert evaluated["metrics"]["f1_macro"] == pytest.approx(last["valid_f1_macro"], abs=1e-6)


def test_bert_pair_classification_from_parquet_on_zero2(world, tmp_path: Path) -> None:
    root = world["root"]
    run = tmp_path / "bert_pairs"
    finetune(2, run, *classification_args(world, **{
        "finetune.init": str(world["bert"]), "finetune.train_path": str(root / "pairs_train.parquet"),
        "finetune.valid_path": str(root / "pairs_valid.parquet"), "finetune.metric": "valid_f1_macro",
        "parallel.zero_stage": "2", "train.iters": "20", "train.eval_interval": "10"}))
    records = evaluations(run)
    assert [r["step"] for r in records] == [10, 20]
    report = json.loads((run / "evaluations" / "step_0000020.json").read_text())
    assert sum(map(sum, report["confusion"])) == 40 and len(report["confusion"]) == 2
    best = json.loads((run / "checkpoints" / "best.json").read_text())
    assert best["metric"] == "valid_f1_macro"
    assert best["value"] == max(r["valid_f1_macro"] for r in records)
    assert (run / "checkpoints" / best["tag"]).is_dir()


def test_english_to_chinese_bleu_rises_with_sacrebleu_zh_tokenizer(world, tmp_path: Path) -> None:
    root = world["root"]
    run = tmp_path / "mt"
    finetune(1, run, "finetune.task=seq2seq", f"finetune.init={world['gpt']}",
             f"finetune.train_path={root / 'mt_train.jsonl'}", f"finetune.valid_path={root / 'mt_valid.jsonl'}",
             "finetune.prompt_template='{source} ='", "finetune.bleu_tokenize=zh",
             "finetune.max_target_tokens=12", "train.iters=300", "train.eval_interval=30", "train.micro_batch_size=8",
             "optimizer.lr=3e-3", "optimizer.min_lr=1e-3", "train.save_interval=1000")
    records = evaluations(run)
    first, last = records[0], records[-1]
    assert [r["step"] for r in records] == list(range(30, 301, 30))
    assert {"valid_bleu", "valid_chrf", "valid_loss"} <= last.keys()
    assert last["valid_bleu"] > first["valid_bleu"] and last["valid_bleu"] > 50
    assert last["valid_chrf"] > first["valid_chrf"] and last["valid_loss"] < first["valid_loss"]
    hypotheses = json.loads((run / "evaluations" / "step_0000300.json").read_text())["hypotheses"]
    references = [json.loads(line)["target"] for line in (root / "mt_valid.jsonl").read_text().splitlines()]
    assert len(hypotheses) == 24 and sum(h == r for h, r in zip(hypotheses, references)) >= 6


def test_resume_is_exact_and_early_stopping_keeps_the_best_checkpoint(world, tmp_path: Path) -> None:
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    twenty = {"train.iters": "20", "train.eval_interval": "10"}
    finetune(2, straight, *classification_args(world, **twenty))
    finetune(2, resumed, *classification_args(world, **twenty, **{"train.exit_interval": "13"}))
    assert metrics(resumed)[-1]["step"] == 13
    finetune(2, resumed, *classification_args(world, **twenty))
    assert [r["step"] for r in metrics(resumed)] == list(range(1, 21))
    for a, b in zip(metrics(straight), metrics(resumed)):  # bit for bit, validation included
        assert (a["loss"], a.get("valid_loss"), a.get("valid_accuracy")) == \
            (b["loss"], b.get("valid_loss"), b.get("valid_accuracy")), a["step"]

    stopped = tmp_path / "stopped"  # a learning rate of 0: nothing improves after the first evaluation
    output = finetune(2, stopped, *classification_args(world, **{
        "train.iters": "50", "train.eval_interval": "5", "finetune.patience": "2", "optimizer.lr": "0",
        "optimizer.min_lr": "0", "finetune.metric": "valid_loss", "checkpoint.keep_last": "1"}))
    assert "stopped early" in output
    assert [r["step"] for r in evaluations(stopped)] == [5, 10, 15]
    assert json.loads((stopped / "exit_status.json").read_text())["reason"] == "early_stopped"
    best = json.loads((stopped / "checkpoints" / "best.json").read_text())
    assert best["tag"] == "iter_0000005"
    assert sorted(p.name for p in (stopped / "checkpoints").glob("iter_*")) == ["iter_0000005", "iter_0000015"]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "roots_scale.cli", "finetune", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_bad_input_is_one_line_and_writes_nothing(world, tmp_path: Path, capsys) -> None:
    from roots_scale.cli import main  # noqa: PLC0415

    root = world["root"]
    bad = tmp_path / "bad"
    bad.mkdir()
    write_jsonl(bad / "nolabel.jsonl", [{"text": "cat dog", "category": "animals"}])
    write_jsonl(bad / "float.jsonl", [{"text": "cat dog", "label": 1.0}, {"text": "gear", "label": 0.5}])
    write_jsonl(bad / "mixed.jsonl", [{"text": "cat dog", "label": "animals"}, {"text": "gear", "label": 0.5}])
    write_jsonl(bad / "unknown.jsonl", [{"text": "cat dog", "label": "animals"}, {"text": "cat", "label": "plants"}])
    (bad / "empty.jsonl").write_text("")
    write_jsonl(bad / "long.jsonl", [{"source": "cat " * 60, "target": "猫"}])
    checked_first = {  # refused before any process group forms
        "nolabel": (["finetune.train_path=" + str(bad / "nolabel.jsonl")], "has no column 'label'"),
        "float": (["finetune.train_path=" + str(bad / "float.jsonl")], "line 1: 'label' is 1.0; a label must be"),
        "mixed": (["finetune.train_path=" + str(bad / "mixed.jsonl")], "changed from string to number in row 1"),
        "empty": (["finetune.train_path=" + str(bad / "empty.jsonl")], "is empty"),
        "arch": (["model.arch=bert"], f"finetune.init {world['gpt']} is a gpt checkpoint"),
        "nocheckpoint": ([f"finetune.init={root}"], "is not a checkpoint"),
        "metric": (["finetune.metric=valid_bleu"], "is not a classification metric"),
    }
    for name, (overrides, message) in checked_first.items():
        run = tmp_path / name
        assert main(["finetune", *classification_args(world), f"run.output_dir={run}", *overrides]) == 2, name
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (name, lines)
        assert not (run / "checkpoints").exists() and not (run / "config.yaml").exists(), name

    for name, overrides, message in [  # found while the run's samples are encoded: the real command line
            ("unknown", ["finetune.valid_path=" + str(bad / "unknown.jsonl")], "line 2: label 'plants' is not one of"),
            ("long", ["finetune.task=seq2seq", "finetune.train_path=" + str(bad / "long.jsonl"),
                      "finetune.valid_path=''"], "line 1: the source is")]:
        run = tmp_path / name
        done = run_cli(*classification_args(world), f"run.output_dir={run}", *overrides)
        assert done.returncode == 2, (name, done.stderr[-2000:])
        lines = [line for line in done.stderr.splitlines() if line.startswith("roots-train")]
        assert len(lines) == 1 and message in lines[0], (name, done.stderr[-2000:])
        assert "Traceback" not in done.stderr, name
        assert not (run / "checkpoints").exists() and not (run / "config.yaml").exists(), name
        assert json.loads((run / "exit_status.json").read_text())["exit_code"] == 2


def test_classification_from_a_hugging_face_export_starts_where_the_checkpoint_does(world, tmp_path: Path) -> None:
    """model.init_from_hf: the exported GPT fine-tunes from the same weights as its roots_scale checkpoint."""
    hf = tmp_path / "hf"
    done = subprocess.run([sys.executable, "-m", "roots_scale.cli", "export-hf", str(world["gpt"]), "--output",
                           str(hf)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    short = {"train.iters": "3", "train.eval_interval": "3"}
    from_checkpoint, from_hf = tmp_path / "from_checkpoint", tmp_path / "from_hf"
    finetune(1, from_checkpoint, *classification_args(world, **short))
    finetune(1, from_hf, "--config", "configs/tiny_gpt.yaml", *classification_args(world, **short, **{
        "finetune.init": "null", "model.init_from_hf": str(hf), "finetune.tokenizer": str(world["tokenizer"]),
        "model.seq_length": "32"}))
    for ours, theirs in zip(metrics(from_checkpoint), metrics(from_hf)):
        assert theirs["loss"] == pytest.approx(ours["loss"], rel=1e-5)
