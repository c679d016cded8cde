"""`roots-train generate`'s token choice (greedy, temperature, top-k, top-p), stopping, context window, padding rows."""

from __future__ import annotations

from types import SimpleNamespace

import torch
from torch import nn

from roots_scale.posttrain.generate import generate, next_token

LOGITS = torch.log(torch.tensor([0.05, 0.6, 0.3, 0.03, 0.02]))


def draws(n: int = 400, **kwargs) -> set[int]:
    generator = torch.Generator().manual_seed(0)
    return {next_token(LOGITS, generator=generator, **kwargs) for _ in range(n)}


def test_greedy_and_filters() -> None:
    assert draws(temperature=0.0, top_k=None, top_p=None) == {1}
    assert draws(temperature=1.0, top_k=1, top_p=None) == {1}
    assert draws(temperature=1.0, top_k=2, top_p=None) == {1, 2}
    assert draws(temperature=1.0, top_k=None, top_p=0.5) == {1}  # the top token alone reaches p
    assert draws(temperature=1.0, top_k=None, top_p=0.8) == {1, 2}
    assert draws(temperature=1.0, top_k=None, top_p=None) == {0, 1, 2, 3, 4}
    assert draws(temperature=0.05, top_k=None, top_p=None) == {1}  # a low temperature sharpens to the mode


def test_sampling_is_seeded() -> None:
    def sample(seed: int) -> list[int]:
        generator = torch.Generator().manual_seed(seed)
        return [next_token(LOGITS, 1.0, None, None, generator) for _ in range(30)]

    assert sample(3) == sample(3)
    assert sample(3) != sample(4)


class Scripted(nn.Module):
    """A stand-in GPT: logits favour the id at position len(context) of `script`; records context lengths."""

    def __init__(self, script: list[int], vocab_rows: int, seq_length: int) -> None:
        super().__init__()
        self.cfg = SimpleNamespace(seq_length=seq_length)
        self.anchor = nn.Parameter(torch.zeros(1))
        self.script, self.vocab_rows, self.lengths = script, vocab_rows, []

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        self.lengths.append(tokens.shape[1])
        logits = torch.zeros(1, tokens.shape[1], self.vocab_rows)
        logits[0, -1, self.vocab_rows - 1] = 9.0  # a padding row: never produced
        logits[0, -1, self.script[len(self.lengths) - 1]] = 5.0
        return logits


def test_generate_stops_after_end_of_document_and_keeps_the_context_window() -> None:
    model = Scripted([7, 8, 9, 2, 7], vocab_rows=16, seq_length=4)
    assert generate(model, [10, 11, 12], max_new_tokens=10, vocab_size=12, stop_id=2) == [7, 8, 9, 2]
    assert model.lengths == [3, 4, 4, 4]
    empty = Scripted([7, 8], vocab_rows=16, seq_length=4)
    assert generate(empty, [], max_new_tokens=2, vocab_size=12, stop_id=2) == [7, 8]
    assert empty.lengths == [1, 2]  # an empty prompt starts after an end-of-document token
