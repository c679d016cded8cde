"""Fine-tuning's data path without training: labelled files in every format read alike, classes and their errors,
the samples each task trains on, the epoch order a resume depends on, and the evaluation shares of each rank."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest

from data_tools.shards import Document, write_shard
from data_tools.tokenizer import train_tokenizer
from roots_core.tokenizer import Tokenizer
from roots_scale.config import FinetuneConfig
from roots_scale.finetune import examples
from roots_scale.finetune.errors import FinetuneError
from roots_scale.finetune.evaluation import Shard
from roots_scale.finetune.records import read_columns

ROWS = {"text": ["a cat sat", "gears turn", "soup is hot"], "label": ["animals", "machines", "food"]}


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory) -> Tokenizer:
    root = tmp_path_factory.mktemp("tok")
    (root / "docs").mkdir()
    texts = [f"a cat sat on the mat {i} gears turn soup is hot 猫狗" for i in range(30)]
    write_shard(root / "docs" / "part.parquet", [Document(f"d{i}", t, "test", None) for i, t in enumerate(texts)])
    return Tokenizer(train_tokenizer(root / "docs", root / "tokenizer", 300))


def test_jsonl_csv_parquet_and_a_saved_dataset_read_alike(tmp_path: Path) -> None:
    rows = [dict(zip(ROWS, row)) for row in zip(*ROWS.values())]
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    pa_csv.write_csv(pa.table(ROWS), tmp_path / "rows.csv")
    pq.write_table(pa.table(ROWS), tmp_path / "rows.parquet")
    datasets.Dataset.from_dict(ROWS).save_to_disk(str(tmp_path / "saved"))
    for name in ("rows.jsonl", "rows.csv", "rows.parquet", "saved"):
        assert read_columns(tmp_path / name).values == ROWS, name
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(ROWS)}).save_to_disk(str(tmp_path / "splits"))
    with pytest.raises(FinetuneError, match="holds the splits train: name one split's directory"):
        read_columns(tmp_path / "splits")
    (tmp_path / "rows.txt").write_text("x")
    with pytest.raises(FinetuneError, match="unknown format '.txt'"):
        read_columns(tmp_path / "rows.txt")


def test_classes_are_ordered_and_an_unknown_one_names_its_row(tmp_path: Path) -> None:
    pa_csv.write_csv(pa.table({"text": ["x"] * 4, "label": [10, 2, 2, 1]}), tmp_path / "ints.csv")
    assert examples.label_names(read_columns(tmp_path / "ints.csv"), "label") == ["1", "2", "10"]
    pa_csv.write_csv(pa.table(ROWS), tmp_path / "valid.csv")
    columns = read_columns(tmp_path / "valid.csv")
    assert examples.label_indices(columns, "label", ["animals", "food", "machines"]).tolist() == [0, 2, 1]
    with pytest.raises(FinetuneError, match=r"valid.csv line 3: label 'machines' is not one of the 2 classes"):
        examples.label_indices(columns, "label", ["animals", "food"])


def test_bert_pairs_gpt_last_token_and_truncation(tokenizer: Tokenizer, tmp_path: Path) -> None:
    special = tokenizer.special_tokens
    pq.write_table(pa.table({"text_a": ["a cat sat " * 20], "text_b": ["soup"], "label": [1]}), tmp_path / "p.parquet")
    columns = read_columns(tmp_path / "p.parquet")
    bert = examples.classification(columns, FinetuneConfig(), ["0", "1"], tokenizer, "bert", 16)
    sample = bert.samples[0]
    ids, types = sample["input_ids"].tolist(), sample["token_type_ids"].tolist()
    b = tokenizer.encode("soup")
    assert bert.truncated == 1 and sample["attention_mask"].sum() == 16 and int(sample["label"]) == 1
    assert ids[0] == special["cls"] and ids[-len(b) - 1:] == [*b, special["sep"]] and ids[-len(b) - 2] == special["sep"]
    assert types == [0] * (16 - len(b) - 1) + [1] * (len(b) + 1)
    gpt = examples.classification(columns, FinetuneConfig(), ["0", "1"], tokenizer, "gpt", 256)
    real = int(gpt.samples[0]["attention_mask"].sum())
    assert gpt.samples[0]["input_ids"][real - 1] == special["eod"] and gpt.truncated == 0
    assert "token_type_ids" not in gpt.samples[0]


def test_seq2seq_loss_falls_on_the_target_and_end_only(tokenizer: Tokenizer, tmp_path: Path) -> None:
    (tmp_path / "mt.jsonl").write_text(json.dumps({"source": "cat", "target": "猫狗"}, ensure_ascii=False) + "\n")
    cfg = FinetuneConfig(task="seq2seq", prompt_template="{source} =")
    encoded = examples.seq2seq(read_columns(tmp_path / "mt.jsonl"), cfg, tokenizer, 32)
    sample = encoded.samples[0]
    target = tokenizer.encode("猫狗") + [tokenizer.special_tokens["eod"]]
    assert encoded.prompts == [tokenizer.encode("cat =")] and encoded.references == ["猫狗"]
    assert sample["labels"][sample["loss_mask"] == 1].tolist() == target
    assert sample["tokens"][:len(encoded.prompts[0])].tolist() == encoded.prompts[0]
    with pytest.raises(FinetuneError, match="must contain {source} exactly once"):
        examples.check_template("no source here")


def test_epochs_are_reshuffled_deterministically_and_ranks_share_evaluation_evenly() -> None:
    samples = [{"x": np.array([i])} for i in range(5)]
    drawn = [int(examples.Shuffled(samples, 15, seed=3)[i]["x"][0]) for i in range(15)]
    assert all(sorted(drawn[e * 5:(e + 1) * 5]) == list(range(5)) for e in range(3))
    assert drawn[:5] != drawn[5:10]
    assert drawn == [int(examples.Shuffled(samples, 15, seed=3)[i]["x"][0]) for i in range(15)]
    shards = [Shard(rank, 3) for rank in range(3)]
    batches = [shard.batches(7, 2) for shard in shards]
    assert {len(b) for b in batches} == {2}  # every rank makes as many forward passes
    owned = [row for shard, rank_batches in zip(shards, batches) for index, batch in enumerate(rank_batches)
             if shard.owned(index, 7, 2) for row in batch]
    assert sorted(owned) == list(range(7))  # every row scored once, filler never
