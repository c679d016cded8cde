"""Shared fixtures for the data-tools tests: the real sample files, and the demo pipeline built once."""

from __future__ import annotations

from pathlib import Path

import pytest

from data_tools.demo_corpus import build_demo_corpus
from data_tools.extract import extract_files
from data_tools.tokenize_shards import tokenize_shards
from data_tools.tokenizer import train_tokenizer

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURES = REPO_ROOT / ".." / "shared" / "fixtures"


@pytest.fixture(scope="session")
def fixture_path():
    """A function returning the path of a real sample file, skipping the test if it is absent."""

    def locate(name: str) -> Path:
        path = (FIXTURES / name).resolve()
        if not path.is_file():
            pytest.skip(f"sample file {name} not found under {FIXTURES} (the shared fixtures sit beside the repo)")
        return path

    return locate


@pytest.fixture(scope="session")
def demo_corpus(tmp_path_factory) -> dict[str, Path]:
    """The demo corpus, built once per session."""
    return build_demo_corpus(tmp_path_factory.mktemp("demo"))


@pytest.fixture(scope="session")
def docs_dir(demo_corpus, tmp_path_factory) -> Path:
    """Document shards of the demo corpus (WARC and Wikipedia extracted into one directory)."""
    output = tmp_path_factory.mktemp("docs")
    extract_files([demo_corpus["commoncrawl"]], "warc", output)
    extract_files([demo_corpus["wikipedia"]], "wikipedia", output)
    return output


@pytest.fixture(scope="session")
def tokenizer_model(docs_dir, tmp_path_factory) -> Path:
    """A 2000-piece BPE tokenizer trained on the demo shards."""
    return train_tokenizer(docs_dir, tmp_path_factory.mktemp("tokenizer") / "demo", 2000)


@pytest.fixture(scope="session")
def store_dir(docs_dir, tokenizer_model, tmp_path_factory) -> Path:
    """The demo shards tokenized into a token store (one worker)."""
    output = tmp_path_factory.mktemp("store")
    tokenize_shards(docs_dir, tokenizer_model, output, num_workers=1)
    return output
