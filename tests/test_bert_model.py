"""BERT: the same function at every tensor-parallel size, blind to padding, and trainable on real samples."""

from __future__ import annotations

import dataclasses
import socket
import warnings
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from megatron.core import parallel_state

from in_process import run_ok
from roots_scale.models.bert import BERT
from roots_scale.models.layers import padded_vocab_size
from workers.bert_step import CONFIG, VOCAB, make_batch, pad_to
from workers.bert_step import main as bert_step


@pytest.fixture
def single_rank():
    """A one-process gloo world with megatron-core's groups (TP=1), torn down after the test (so that
    `run_ok` can fork fresh ranks from this process)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    parallel_state.initialize_model_parallel(tensor_model_parallel_size=1, create_gloo_process_groups=False)
    yield
    parallel_state.destroy_model_parallel()
    dist.destroy_process_group()


def build(cfg=CONFIG, vocab: int = VOCAB) -> BERT:
    torch.manual_seed(1234)
    return BERT(cfg, vocab_size=vocab, tensor_parallel_size=1)


def test_outputs_without_labels(single_rank) -> None:
    model = build().eval()
    batch = make_batch(12, [12, 7])
    mlm, sop = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    assert mlm.shape == (2, 12, VOCAB) and sop.shape == (2, 2)
    assert model.lm_bias.tensor_model_parallel and model.embedding.weight.tensor_model_parallel
    assert not getattr(model.pooler.weight, "tensor_model_parallel", False)


def test_padding_does_not_change_real_tokens(single_rank) -> None:
    model = build().eval()
    batch = make_batch(12, [12, 9, 5])
    padded = pad_to(batch, CONFIG.seq_length)
    junk = dict(batch, input_ids=torch.where(batch["attention_mask"].bool(), batch["input_ids"], 77))
    with torch.no_grad():
        loss = model(**batch)
        torch.testing.assert_close(model(**padded), loss, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(model(**junk), loss, rtol=1e-6, atol=1e-6)
        mlm, sop = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        mlm_padded, sop_padded = model(padded["input_ids"], padded["attention_mask"], padded["token_type_ids"])
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(mlm_padded[:, :12][real], mlm[real], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sop_padded, sop, rtol=1e-5, atol=1e-5)
    # the mask matters: letting the padding be attended changes the real tokens' outputs
    with torch.no_grad():
        unmasked, _ = model(padded["input_ids"], torch.ones_like(padded["attention_mask"]), padded["token_type_ids"])
    assert not torch.allclose(unmasked[:, :12][real], mlm[real], atol=1e-4)


def test_activation_checkpointing_computes_the_same(single_rank) -> None:
    batch = make_batch(12, [12, 9])
    plain, checkpointed = build(), build(dataclasses.replace(CONFIG, activation_checkpointing=True))
    losses = []
    for model in (plain, checkpointed):
        loss = model(**batch)
        loss.backward()
        losses.append(loss.detach())
    torch.testing.assert_close(losses[1], losses[0])
    for a, b in zip(plain.parameters(), checkpointed.parameters()):
        torch.testing.assert_close(b.grad, a.grad)


def test_adamw_steps_lower_the_loss_on_real_samples(single_rank, tmp_path: Path) -> None:
    from roots_scale.data.bert_dataset import BERTDataset
    from roots_scale.data.loader import collate
    from roots_core.token_store import TokenStore
    from store_helpers import write_random_store

    store = TokenStore(write_random_store(tmp_path / "store"))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*tokenizer model.*")
        dataset = BERTDataset(store, 32, 64, seed=1, sentence_order=True)
    batch = collate([dataset[i] for i in range(8)])
    assert set(batch) == {"input_ids", "labels", "loss_mask", "attention_mask", "token_type_ids",
                          "sentence_order_label"}
    cfg = dataclasses.replace(CONFIG, seq_length=32)
    model = build(cfg, padded_vocab_size(store.vocab_size, cfg.make_vocab_size_divisible_by))
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(6):
        loss = model(**batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0] - 0.5, losses


@pytest.mark.slow
def test_tensor_parallel_matches_single_rank(tmp_path: Path) -> None:
    out = tmp_path / "steps.pt"
    run_ok(bert_step, 2, str(out))  # TP=2, then TP=1 (data-parallel pair) in the same world
    results = torch.load(out)
    one, two = results[1], results[2]
    assert torch.isfinite(one["loss"])
    for result in (one, two):  # padding the batch further changes nothing, at either size
        torch.testing.assert_close(result["padded_loss"], result["loss"], rtol=1e-5, atol=1e-6)
    for key in ("loss", "grad_norm", "embedding_grad", "bias_grad"):
        torch.testing.assert_close(two[key], one[key], rtol=1e-5, atol=1e-6, msg=lambda m, key=key: f"{key}: {m}")
