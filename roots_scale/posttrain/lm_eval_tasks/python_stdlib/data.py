"""A task's local data for lm-evaluation-harness (its YAML's `custom_dataset: !function data.load`): every
`<split>.jsonl` beside this file, so the task runs offline from wherever the package is installed."""

from __future__ import annotations

import json
from pathlib import Path

from datasets import Dataset, DatasetDict


def load(**_metadata: object) -> DatasetDict:
    """One split per JSONL file here, named by its stem; the harness passes the task's metadata, unused."""
    return DatasetDict({path.stem: Dataset.from_list([json.loads(line) for line in path.read_text().splitlines()])
                        for path in sorted(Path(__file__).parent.glob("*.jsonl"))})
