"""Language identification with py3langid's bundled model (no download), loaded once per process.

The identifier gives normalized probabilities (`norm_probs=True`), so a document's `lang_score` is
comparable with the `lang_id_min` thresholds. Codes are ISO 639 (mostly 639-1, e.g. "en", "zh";
"zxx" means no linguistic content). Newlines are read as spaces, as ROOTS did.

py3langid walks its byte automaton in a Python loop, one byte at a time. Its automaton forgets all
but the last `AUTOMATON_MEMORY` bytes (proven over every state by a test), so the state after each
byte is the state reached from the start by reading only those bytes: `VectorizedIdentifier` reads
every position at once with numpy and scores the feature counts exactly as py3langid does, so its
answers are py3langid's, bit for bit, several times faster.

py3langid's model ships LZMA-compressed and takes about 0.4 s to unpack in every process. The first process
keeps the unpacked arrays in a cache directory (`$ROOTS_CACHE_DIR`, else `$XDG_CACHE_HOME/roots_scale`, else
`~/.cache/roots_scale`), written whole or not at all; later processes map them from there in milliseconds,
sharing one copy in memory.
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import numpy as np
from py3langid.langid import MODEL_DIR, MODEL_FILE, LanguageIdentifier
from py3langid.modelio import load_model

from data_tools.filters.base import CleanDocument

AUTOMATON_MEMORY = 6  # bytes; the model's longest feature prefix (tests prove it for every state)


class VectorizedIdentifier(LanguageIdentifier):
    """py3langid's identifier with its per-byte automaton walk replaced by numpy gathers."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._next_state = np.asarray(self.tk_nextmove, dtype=np.uint32)
        self._row_start = np.asarray(self.tk_row, dtype=np.int64) << 8
        self._feature = np.asarray(self.tk_output, dtype=np.int64)
        self._widen_weights()
        self._first_position = np.zeros(len(self._weights), dtype=np.int64)  # scratch, one slot per feature
        self._rank = np.zeros(len(self._weights), dtype=np.int64)  # scratch, one slot per feature
        # The state after any two bytes read from the start, so the walk begins two bytes in.
        first = self._next_state[self._row_start[0] + np.arange(256)]
        self._after_two = self._next_state[(self._row_start[first][:, None] + np.arange(256)).ravel()]

    def set_languages(self, langs=None) -> None:
        super().set_languages(langs)
        self._widen_weights()

    def _widen_weights(self) -> None:
        # py3langid's scores are float32 sums over float16 weights widened to float32; widening once saves it per call.
        self._weights = np.asarray(self.nb_ptc, dtype=np.float32)

    def states(self, data: bytes) -> np.ndarray:
        """The automaton's state after each byte of `data`, as py3langid's walk from the start reaches it."""
        codes = np.frombuffer(data, dtype=np.uint8)
        head = []
        state = 0
        for code in codes[: AUTOMATON_MEMORY - 1].tolist():
            state = int(self._next_state[self._row_start[state] + code])
            head.append(state)
        if len(codes) < AUTOMATON_MEMORY:
            return np.asarray(head, dtype=np.int64)
        width = len(codes) - AUTOMATON_MEMORY + 1
        wide = codes.astype(np.int64)
        state = self._after_two[(wide[:width] << 8) | wide[1 : width + 1]]
        for offset in range(2, AUTOMATON_MEMORY):
            state = self._next_state[self._row_start[state] + wide[offset : offset + width]]
        return np.concatenate([np.asarray(head, dtype=np.int64), state.astype(np.int64)])

    def _raw_score(self, text: bytes) -> np.ndarray:
        features = self._feature[self.states(text)]
        features = features[features >= 0]
        if not len(features):
            return super()._raw_score(text)
        # py3langid counts with a Counter, so its sum runs over features in order of first occurrence.
        positions = np.arange(len(features))
        self._first_position[features[::-1]] = positions[::-1]  # the last write, the first occurrence, stays
        distinct = features[self._first_position[features] == positions]
        self._rank[distinct] = np.arange(len(distinct))
        counts = np.bincount(self._rank[features], minlength=len(distinct)).astype(np.float32)
        return np.log1p(counts) @ self._weights[distinct] + self.nb_pc


@functools.cache
def language_identifier() -> LanguageIdentifier:
    """The process's identifier (from the unpacked model cache when there is one)."""
    arrays = _cached_model()
    if arrays is None:
        arrays = _unpacked_model()
        _cache_model(arrays)
    return VectorizedIdentifier(arrays["weights"], arrays["priors"], arrays["classes"].tolist(), arrays["next_state"],
                                arrays["output"], norm_probs=True, tk_row=arrays["rows"].tolist())


_MODEL_ARRAYS = ("weights", "priors", "classes", "next_state", "rows", "output")


def _unpacked_model() -> dict[str, np.ndarray]:
    weights, priors, classes, next_state, rows, output = load_model(MODEL_DIR / MODEL_FILE)
    return {"weights": np.asarray(weights, dtype=np.float32), "priors": np.asarray(priors),
            "classes": np.array(classes), "next_state": np.frombuffer(next_state, dtype=np.uint32),
            "rows": np.frombuffer(rows, dtype=np.uint16), "output": np.asarray(output, dtype=np.int64)}


def _model_cache_dir() -> Path:
    root = os.environ.get("ROOTS_CACHE_DIR") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache",
                                                     "roots_scale")
    return Path(root) / f"py3langid-{version('py3langid')}-{(MODEL_DIR / MODEL_FILE).stat().st_size}"


def _cached_model() -> dict[str, np.ndarray] | None:
    try:
        return {name: np.load(_model_cache_dir() / f"{name}.npy", mmap_mode="r") for name in _MODEL_ARRAYS}
    except (OSError, ValueError):
        return None


def _cache_model(arrays: dict[str, np.ndarray]) -> None:
    """Write the unpacked model under a temporary name and rename it into place: a cache is whole or absent.
    A cache that cannot be written (read-only home, full disk) only costs the next process the unpacking."""
    target = _model_cache_dir()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    except OSError:
        return
    try:
        for name in _MODEL_ARRAYS:
            np.save(staging / f"{name}.npy", arrays[name])
        shutil.rmtree(target, ignore_errors=True)  # a damaged cache: processes that mapped it keep their copy
        os.replace(staging, target)  # fails, harmlessly, if another process got there first
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)


def language_codes() -> frozenset[str]:
    """Every code the identifier can report."""
    return frozenset(language_identifier().labels)


SAMPLE_CHARACTERS = 5000  # identification cost grows with length; a few paragraphs decide it


def identification_sample(text: str) -> str:
    """What is identified of `text`: its first SAMPLE_CHARACTERS, newlines read as spaces."""
    return text[:SAMPLE_CHARACTERS].replace("\n", " ")


def identify(text: str) -> tuple[str, float]:
    """The most likely language of `text` (from its first SAMPLE_CHARACTERS) and its probability."""
    lang, score = language_identifier().classify(identification_sample(text))
    return lang, float(score)


@dataclass(frozen=True)
class IdentifyLanguage:
    """Step: set the document's `lang` and `lang_score` (never drops)."""

    name: str = "language_id"

    def __call__(self, doc: CleanDocument) -> CleanDocument:
        lang, score = identify(doc.text)
        return doc.changed(lang=lang, lang_score=score)


@dataclass(frozen=True)
class KeepLanguages:
    """Step: drop documents whose identified language is not one of `languages`."""

    languages: frozenset[str]
    name: str = "language"

    def __call__(self, doc: CleanDocument) -> CleanDocument | None:
        return doc if doc.lang in self.languages else None
