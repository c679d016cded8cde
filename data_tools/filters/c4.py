"""C4's line filters (Raffel et al. 2020) as a line-level edit, then a sentence-count filter.

A line is removed, for the first reason that applies (counted as `c4_lines:<reason>` events):
`javascript` (mentions it), `lorem_ipsum`, `curly_brace` (C4 dropped whole pages for these two;
here only the line goes), `few_words` (fewer than 3 words), `no_terminal_punctuation` (does not end
in . ! ? " or their Unicode forms). Blank lines stay as paragraph breaks. The document is dropped
(reason `c4_lines`) when fewer than 5 sentences remain, a sentence being a run of terminal
punctuation followed by a space or the end of a line. Meant for languages written with spaces.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

from data_tools.filters.base import CleanDocument

MIN_WORDS_PER_LINE = 3
MIN_SENTENCES = 5
TERMINAL_PUNCTUATION = (".", "!", "?", '"', "…", "”", "。", "！", "？")
_SENTENCE_END = re.compile(r"[.!?…。！？]+[\"'”’»)\]]*(?=\s|$)")
_BLANK_LINES = re.compile("\n{3,}")


def line_removal_reason(line: str) -> str | None:
    """Why C4 would remove `line`, or None to keep it (blank lines are kept)."""
    if not line.strip():
        return None
    lowered = line.lower()
    if "javascript" in lowered:
        return "javascript"
    if "lorem ipsum" in lowered:
        return "lorem_ipsum"
    if "{" in line or "}" in line:
        return "curly_brace"
    if len(line.split()) < MIN_WORDS_PER_LINE:
        return "few_words"
    if not line.rstrip().endswith(TERMINAL_PUNCTUATION):
        return "no_terminal_punctuation"
    return None


@dataclass(frozen=True)
class C4Lines:
    """Step: remove the lines C4 removes; drop the document if fewer than MIN_SENTENCES sentences remain."""

    name: str = "c4_lines"

    def __call__(self, doc: CleanDocument) -> CleanDocument | None:
        kept: list[str] = []
        removed: Counter = Counter()
        for line in doc.text.split("\n"):
            reason = line_removal_reason(line)
            if reason is None:
                kept.append(line)
            else:
                removed[f"c4_lines:{reason}"] += 1
        text = _BLANK_LINES.sub("\n\n", "\n".join(kept)).strip()
        if len(_SENTENCE_END.findall(text)) < MIN_SENTENCES:
            return None
        return doc.changed(text=text, events=removed)
