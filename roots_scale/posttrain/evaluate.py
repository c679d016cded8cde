"""`roots-train evaluate CHECKPOINT --data STORE_OR_BLEND`: loss and perplexity, per dataset of a blend.

One process, the checkpoint's full weights in a TP=1 model (CPU or the first GPU). The samples are the
training ones for that split: GPT windows (the recurrent models' too) of `seq_length + 1` tokens over documents
joined by end-of-document, every window of one pass over the split (or a seeded subset of `--max-samples`); BERT
samples masked as in training, the loss taken at the masked positions (MLM; perplexity = exp of it).
Prints a table and, with `--json FILE`, writes the same numbers as JSON.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from roots_core.token_store import TokenStoreError, TokenStore, read_manifest
from roots_scale.config import Config
from roots_scale.data.bert_dataset import BERTDataset
from roots_scale.data.blending import is_blend_file, load_blend
from roots_scale.data.builder import store_paths
from roots_scale.data.errors import DatasetError
from roots_scale.data.gpt_dataset import GPTDataset
from roots_scale.data.loader import collate
from roots_scale.data.splits import split_documents
from roots_scale.checkpoint.consolidated import FullState
from roots_scale.finetune.errors import FinetuneError
from roots_scale.finetune.report import evaluate_labelled, format_report
from roots_scale.posttrain.load import load_checkpoint_model, single_process_world


@dataclass
class Result:
    """The loss of one dataset (or all together): mean token cross-entropy over `tokens` predicted tokens."""

    name: str
    samples: int
    tokens: int
    loss: float

    @property
    def perplexity(self) -> float:
        return math.exp(min(self.loss, 700.0))

    def as_dict(self) -> dict:
        return {**asdict(self), "perplexity": self.perplexity}


def _dataset(cfg: Config, store, documents: np.ndarray, max_samples: int):
    """The evaluation samples of `documents`: one pass of GPT windows (capped), or `max_samples` BERT samples."""
    seq, seed = cfg.model.seq_length, cfg.train.seed
    if cfg.model.arch == "bert":
        return BERTDataset(store, seq, max_samples, seed, documents=documents)
    tokens = int(store.document_lengths[documents].sum()) + len(documents)  # every document ends with eod
    windows = min(max_samples, (tokens - 1) // seq)
    if windows < 1:
        raise DatasetError(f"{store.directory}: the split has {tokens} tokens, fewer than one window of {seq + 1}")
    return GPTDataset(store, seq, windows, seed, max_epochs=1, documents=documents)


def _batch_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[float, int]:
    """(summed token loss, predicted tokens) of one collated batch."""
    if "tokens" in batch:
        return float(model(batch["tokens"], batch["labels"])) * batch["labels"].numel(), batch["labels"].numel()
    count = int(((batch["labels"] >= 0) & (batch["loss_mask"] > 0)).sum())
    loss = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"], batch["labels"],
                 batch["loss_mask"])
    return float(loss) * count, count


@torch.no_grad()
def evaluate_store(model: nn.Module, cfg: Config, name: str, path: Path, split: str, max_samples: int,
                   batch_size: int) -> Result:
    """The loss of the model on one token store's `split` ('all' = every document)."""
    store = TokenStore(path)
    documents = (np.arange(len(store)) if split == "all" else split_documents(len(store), cfg.data.split)[split])
    dataset = _dataset(cfg, store, documents, max_samples)
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for start in range(0, len(dataset), batch_size):
        batch = collate([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
        loss, tokens = _batch_loss(model, {key: value.to(device) for key, value in batch.items()})
        total, count = total + loss, count + tokens
    return Result(name, len(dataset), count, total / max(count, 1))


def evaluate(model: nn.Module, cfg: Config, data: str, split: str, max_samples: int, batch_size: int) -> list[Result]:
    """One Result per dataset of `data` (a store, or each store of a blend), then the token-weighted total."""
    if is_blend_file(data):
        stores = [(entry.name, entry.path) for entry in load_blend(data).datasets]
    else:
        stores = [(Path(data).name, Path(data))]
    results = [evaluate_store(model, cfg, name, path, split, max_samples, batch_size) for name, path in stores]
    tokens = sum(r.tokens for r in results)
    overall = sum(r.loss * r.tokens for r in results) / max(tokens, 1)
    return [*results, Result("all", sum(r.samples for r in results), tokens, overall)]


def _check_vocabulary(cfg: Config, data: str, rows: int) -> None:
    """DatasetError unless every store of `data` was made with the run's tokenizer (if the run's store is readable)."""
    try:
        trained = read_manifest(store_paths(cfg.data.path)[0])["tokenizer"]["fingerprint"]
    except TokenStoreError:  # the run's store is gone: check the vocabulary size only
        trained = None
    for path in store_paths(data):
        manifest = read_manifest(path)
        if manifest["vocab_size"] > rows or trained not in (None, manifest["tokenizer"]["fingerprint"]):
            raise DatasetError(f"{path} was tokenized with {manifest['tokenizer']['path']} "
                               f"({manifest['vocab_size']} ids), not the tokenizer the checkpoint was trained with")


def format_table(results: list[Result], unit: str) -> str:
    """The results as an aligned text table."""
    width, count = max(len("dataset"), *(len(r.name) for r in results)), max(12, len(unit))
    lines = [f"{'dataset':<{width}}  {'samples':>8}  {unit:>{count}}  {'loss':>8}  {'perplexity':>12}"]
    lines += [f"{r.name:<{width}}  {r.samples:>8,}  {r.tokens:>{count},}  {r.loss:>8.4f}  {r.perplexity:>12.3f}"
              for r in results]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """The `roots-train evaluate` command."""
    parser = argparse.ArgumentParser(prog="roots-train evaluate",
                                     description="Loss and perplexity of a checkpoint on a token store or blend.")
    parser.add_argument("checkpoint", help="run directory, its checkpoints/ folder, or one iter_NNNNNNN folder")
    parser.add_argument("--data", help="token store or blend file (default: the run's data.path); for a fine-tuned "
                                       "checkpoint, a labelled file (default: its finetune.valid_path)")
    parser.add_argument("--split", choices=("train", "valid", "test", "all"), default="valid",
                        help="documents to evaluate, split by the run's data.split (default: valid)")
    parser.add_argument("--max-samples", type=int, default=1000, help="samples per dataset, at most")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    if args.max_samples < 1 or args.batch_size < 1:
        parser.error("--max-samples and --batch-size must be at least 1")
    with single_process_world():
        model, state = load_checkpoint_model(args.checkpoint)
        if state.config.finetune.task is not None:
            return _evaluate_finetuned(args, model.to(args.device), state)
        data = args.data or state.config.data.path
        _check_vocabulary(state.config, data, state.params["embedding.weight"].shape[0])
        results = evaluate(model.to(args.device), state.config, data, args.split, args.max_samples,
                           args.batch_size)
    unit = "masked tokens" if state.config.model.arch == "bert" else "tokens"
    print(f"{args.checkpoint} (step {state.step}), {args.split} split of {data}:")
    print(format_table(results, unit))
    if args.json is not None:
        report = {"checkpoint": str(args.checkpoint), "step": state.step, "data": str(data), "split": args.split,
                  "arch": state.config.model.arch, "datasets": [r.as_dict() for r in results[:-1]],
                  "overall": results[-1].as_dict()}
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


def _evaluate_finetuned(args: argparse.Namespace, model: nn.Module, state: FullState) -> int:
    """A fine-tuned checkpoint: its task's metrics on the labelled file `--data` (default: the run's valid_path)."""
    cfg = state.config
    data = args.data or cfg.finetune.valid_path
    if not data:
        raise FinetuneError(f"{args.checkpoint} is a {cfg.finetune.task} fine-tune: pass --data LABELLED_FILE")
    evaluation = evaluate_labelled(model, cfg, data, args.batch_size, args.device)
    print(f"{args.checkpoint} (step {state.step}), {cfg.finetune.task} on {data}:")
    print(format_report(evaluation, cfg))
    if args.json is not None:
        report = {"checkpoint": str(args.checkpoint), "step": state.step, "data": str(data),
                  "task": cfg.finetune.task, "labels": cfg.finetune.labels, "metrics": evaluation.metrics,
                  **evaluation.details}
        args.json.write_text(json.dumps(report, ensure_ascii=False, indent=1) + "\n")
    return 0
