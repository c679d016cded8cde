"""The data pipeline as SLURM job arrays, checked byte for byte against running each stage once, locally."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from slurm_cluster import SlurmCluster

from data_tools.cli import main as roots_data


def check_data_pipeline_matches_a_local_run(cluster: SlurmCluster, tmp_path: Path,
                                            profile: Path) -> dict[str, list[dict[str, str]]]:
    """roots-launch data on `profile` → extract/clean/dedup(3 phases)/train-tokenizer/tokenize as 2-task arrays
    chained afterok: byte-identical shards, tokenizer and token store to running each stage once, locally.
    Returns each job's task records (`scontrol show job`)."""
    assert roots_data(["demo-corpus", "--output", str(tmp_path / "raw")]) == 0
    wiki, warc = "raw/wikipedia/demowiki-pages-articles.xml.bz2", "raw/commoncrawl/demo.warc.gz"
    local = tmp_path / "local"
    split = ["--shard-size-mb", "0.02"]  # 16 shards from the two inputs, so each array task gets several
    for argv in (["extract", "--format", "wikipedia", *split, "--output", f"{local}/docs", str(tmp_path / wiki)],
                 ["extract", "--format", "warc", *split, "--output", f"{local}/docs", str(tmp_path / warc)],
                 ["clean", "--input", f"{local}/docs", "--output", f"{local}/clean"],
                 ["dedup", "--input", f"{local}/clean", "--output", f"{local}/dedup"],
                 ["train-tokenizer", "--input", f"{local}/dedup", "--output", f"{local}/tokenizer/spm",
                  "--vocab-size", "2000"],
                 ["tokenize", "--input", f"{local}/dedup", "--tokenizer", f"{local}/tokenizer/spm.model",
                  "--output", f"{local}/store"]):
        assert roots_data(argv) == 0, argv

    submitted = cluster.run(
        sys.executable, "-m", "roots_scale.launch.cli", "data", "--cluster", str(profile),
        "--work-dir", "work", "--extract", "wikipedia", wiki, "--extract", "warc", "raw/commoncrawl/*.warc.gz",
        "--vocab-size", "2000", "--array-size", "2", "--stage-args", f"extract={' '.join(split)}", "--submit",
        cwd=tmp_path)
    assert submitted.returncode == 0, submitted.stderr
    jobs = dict(re.findall(r"submitted (\w+): (\d+)", submitted.stdout))
    assert list(jobs) == ["extract_1", "extract_2", "clean", "dedup_signatures", "dedup_cluster", "dedup_filter",
                          "train_tokenizer", "tokenize", "verify"]
    records = {name: cluster.wait(job, timeout=300) for name, job in jobs.items()}
    for name, tasks in records.items():
        assert [t["JobState"] for t in tasks] == ["COMPLETED"] * len(tasks), (name, tasks)
    assert len(records["clean"]) == len(records["tokenize"]) == 2 and len(records["dedup_cluster"]) == 1

    work = tmp_path / "work"
    for stage in ("docs", "clean", "dedup", "store", "tokenizer"):
        names = sorted(p.name for p in (local / stage).iterdir() if p.suffix in (".parquet", ".arrow", ".model"))
        assert names and names == sorted(p.name for p in (work / stage).iterdir()
                                         if p.suffix in (".parquet", ".arrow", ".model")), stage
        for name in names:
            assert (local / stage / name).read_bytes() == (work / stage / name).read_bytes(), f"{stage}/{name}"
    manifests = [json.loads((d / "store" / "manifest.json").read_text()) for d in (local, work)]
    for manifest in manifests:
        manifest["tokenizer"].pop("path")  # where each run's tokenizer lies; its fingerprint must match
    assert manifests[0] == manifests[1]
    assert "OK: 16 files" in next((tmp_path / "logs").glob("roots-data-verify-*.out")).read_text()
    return records
