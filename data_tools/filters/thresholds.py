"""Per-language quality thresholds: the YAML file users edit, loaded with strict validation.

The file maps a language code (or `default`) to thresholds; `default` must be complete and a
language inherits every key it does not set from it. Unknown languages, unknown keys, wrong types
and out-of-range values are DataToolsErrors naming the file, the key and what would be valid.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from data_tools.errors import DataToolsError

DEFAULT = "default"
DEFAULT_THRESHOLDS_FILE = Path(__file__).with_name("thresholds.yaml")


@dataclass(frozen=True)
class Thresholds:
    """One language's limits for the ROOTS quality filters."""

    min_words: int
    char_repetition_n: int
    char_repetition_max: float
    word_repetition_n: int
    word_repetition_max: float
    special_characters_max: float
    stopwords_min: float
    flagged_words_max: float
    lang_id_min: float


_KEYS = [f.name for f in fields(Thresholds)]
_COUNTS = {"min_words": 0, "char_repetition_n": 1, "word_repetition_n": 1}  # integer key -> smallest valid value


@dataclass(frozen=True)
class ThresholdTable:
    """Thresholds for every configured language, and the `default` the others fall back to."""

    default: Thresholds
    languages: Mapping[str, Thresholds]

    def for_language(self, lang: str | None) -> Thresholds:
        """The thresholds of `lang`, or `default` when it has none."""
        return self.languages.get(lang, self.default) if lang else self.default


def load_thresholds(path: Path, valid_languages: Collection[str]) -> ThresholdTable:
    """Read and validate the thresholds file at `path`; language keys must be `default` or in `valid_languages`."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DataToolsError(f"thresholds file {path} cannot be read: {exc}") from exc
    except yaml.YAMLError as exc:
        raise DataToolsError(f"thresholds file {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict) or DEFAULT not in data:
        raise DataToolsError(
            f"thresholds file {path} must be a mapping with a `{DEFAULT}` entry and optional per-language "
            f"entries (language code -> thresholds), got {data!r:.200}")
    for lang in data:
        if isinstance(lang, bool):
            raise DataToolsError(
                f"thresholds file {path}: language key {lang!r} is a YAML boolean; quote language codes that "
                "YAML reads as booleans, e.g. 'no' (Norwegian)")
        if lang != DEFAULT and lang not in valid_languages:
            raise DataToolsError(_unknown(path, "language key", lang, [DEFAULT, *sorted(valid_languages)]))
    default = _entry(path, DEFAULT, data[DEFAULT], {})
    base = {key: getattr(default, key) for key in _KEYS}
    languages = {lang: _entry(path, lang, values, base) for lang, values in data.items() if lang != DEFAULT}
    return ThresholdTable(default, languages)


def _entry(path: Path, lang: str, values: Any, base: dict[str, Any]) -> Thresholds:
    """Validate one language's entry and complete it from `base` (`default`'s base is empty: it must be complete)."""
    if not isinstance(values, dict):
        raise DataToolsError(
            f"thresholds file {path}: `{lang}` must map threshold names to numbers, got {values!r}; "
            f"valid names: {', '.join(_KEYS)}")
    merged = dict(base)
    for key, value in values.items():
        if key not in _KEYS:
            raise DataToolsError(_unknown(path, f"threshold key in `{lang}`", key, _KEYS))
        merged[key] = _checked(path, lang, key, value)
    missing = [key for key in _KEYS if key not in merged]
    if missing:
        raise DataToolsError(
            f"thresholds file {path}: `{lang}` lacks {', '.join(missing)}; `{DEFAULT}` must set every key")
    return Thresholds(**merged)


def _checked(path: Path, lang: str, key: str, value: Any) -> int | float:
    """`value` if it is valid for `key`: a whole number ≥ the minimum for counts, a number in [0, 1] for ratios."""
    where = f"thresholds file {path}: `{lang}.{key}` is {value!r}"
    if key in _COUNTS:
        if isinstance(value, bool) or not isinstance(value, int) or value < _COUNTS[key]:
            raise DataToolsError(f"{where}; it must be a whole number ≥ {_COUNTS[key]}")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise DataToolsError(f"{where}; it must be a number between 0 and 1")
    return float(value)


def _unknown(path: Path, what: str, key: Any, valid: list[str]) -> str:
    """The message for an unknown key: which, where, the closest valid spelling and every valid one."""
    close = difflib.get_close_matches(str(key), valid, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"thresholds file {path}: unknown {what} {key!r}{hint}; valid: {', '.join(valid)}"
