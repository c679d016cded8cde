"""PII redaction: email addresses, IP addresses and phone numbers become placeholder tokens.

Counted per kind as events (`pii:email`, `pii:ip_address`, `pii:phone`). Patterns are anchored on
token boundaries, so each runs in linear time even on megabyte-long tokens. Decisions:
  * IPv6 candidates must parse (`ipaddress`) and have two non-empty groups ("::" and "::1" stay);
  * a dotted quad is an IPv4 address unless a version context precedes it ("v1.2.3.4",
    "version 1.2.3.4", "release 10.0.0.1") or it continues with more dotted numbers ("1.2.3.4.5");
  * phone numbers are international (+CC, 8–15 digits), a parenthesised area code
    ("(555) 123-4567"), North American ("555-123-4567", "555.123.4567", optional "1-" prefix) or
    French national ("01 23 45 67 89"); bare digit runs, dates and years are left alone.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from data_tools.filters.base import CleanDocument

EMAIL_TOKEN = "<EMAIL>"
IP_ADDRESS_TOKEN = "<IP_ADDRESS>"
PHONE_TOKEN = "<PHONE>"

_EMAIL = re.compile(
    r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63}){0,8}\.[A-Za-z]{2,24}"
    r"(?![A-Za-z0-9-])")
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = re.compile(rf"(?<![\w.]){_OCTET}(?:\.{_OCTET}){{3}}(?![\w]|\.[0-9])")
_VERSION_CONTEXT = re.compile(r"(?i)(?:\bversion|\bver\.?|\brelease|\bbuild|\bv)\s*$")
_IPV6 = re.compile(  # groups ending in ":", then a dotted quad (tried first) or a last group
    r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9]{1,3}(?:\.[0-9]{1,3}){3}|[0-9A-Fa-f]{0,4})(?![\w:])")
_PHONE = re.compile(
    r"(?<![\w+])(?:"
    r"\+[0-9]{1,3}[ .-]?(?:\([0-9]{1,4}\)[ .-]?)?[0-9]{1,4}(?:[ .-]?[0-9]{2,8}){1,4}"  # +44 20 7946 0958
    r"|\([0-9]{2,4}\)[ .-]?[0-9]{3,4}[ .-]?[0-9]{3,4}"  # (555) 123-4567
    r"|(?:1[ .-])?[0-9]{3}([.-])[0-9]{3}\1[0-9]{4}"  # 555-123-4567
    r"|0[1-9]([ .-])[0-9]{2}(?:\2[0-9]{2}){3}"  # 01 23 45 67 89
    r")(?![\w])")


def _ipv4_ok(match: re.Match) -> bool:
    before = match.string[max(0, match.start() - 12):match.start()]
    return not _VERSION_CONTEXT.search(before)


def _ipv6_ok(match: re.Match) -> bool:
    try:
        ipaddress.IPv6Address(match.group())
    except ValueError:
        return False
    return sum(1 for group in match.group().split(":") if group) >= 2


def _phone_ok(match: re.Match) -> bool:
    digits = sum(char.isdigit() for char in match.group())
    return 8 <= digits <= 15 if match.group().startswith("+") else 7 <= digits <= 15


@dataclass(frozen=True)
class _Kind:
    """One kind of PII: its event name, its placeholder, its pattern and a check of each match.

    Every match of `pattern` is at most `max_length` characters long and contains a match of one of `anchors`,
    each a pattern with a literal first character that the regex engine finds far faster than it can try
    `pattern` (which starts with a lookbehind) at every position. So `pattern` only runs near anchors.
    """

    event: str
    token: str
    pattern: re.Pattern
    anchors: tuple[re.Pattern, ...]
    max_length: int
    valid: Callable[[re.Match], bool] | None = None  # None: every match is PII

    def matches(self, text: str) -> Iterator[re.Match]:
        """The matches `pattern.finditer(text)` gives, found by scanning only the stretches around anchors."""
        reach = self.max_length
        windows = sorted((found.start() - reach, found.end() + reach)
                         for anchor in self.anchors for found in anchor.finditer(text))
        position = 0
        for start, end in _merged(windows):
            # Any match holds an anchor, whose window ends by `end`: the bound (one character on, for the
            # lookahead) never cuts a match short.
            position, stop = max(position, start), min(len(text), end + 1)
            while match := self.pattern.search(text, position, stop):
                yield match
                position = match.end()


def _merged(windows: list[tuple[int, int]]) -> Iterator[tuple[int, int]]:
    """Sorted (start, end) windows with every overlapping run of them joined into one."""
    current: tuple[int, int] | None = None
    for start, end in windows:
        if current is not None and start <= current[1]:
            current = (current[0], max(current[1], end))
            continue
        if current is not None:
            yield current
        current = (start, end)
    if current is not None:
        yield current


# IPv6 before IPv4 (an IPv6 address may end in a dotted quad), phones last (IPs look numeric).
_KINDS = (
    _Kind("pii:email", EMAIL_TOKEN, _EMAIL, (re.compile("@"),), 64 + 1 + 9 * 64 + 25),
    _Kind("pii:ip_address", IP_ADDRESS_TOKEN, _IPV6, (re.compile(":[0-9A-Fa-f]{0,4}:"),), 7 * 5 + 15, _ipv6_ok),
    _Kind("pii:ip_address", IP_ADDRESS_TOKEN, _IPV4, (re.compile(r"\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]"),), 15,
          _ipv4_ok),
    _Kind("pii:phone", PHONE_TOKEN, _PHONE, (re.compile(r"\+[0-9]"), re.compile(r"\([0-9]{2,4}\)"),
                                             re.compile(r"-[0-9]{3}-[0-9]{4}"), re.compile(r"\.[0-9]{3}\.[0-9]{4}"),
                                             re.compile("0[1-9][ .-][0-9]{2}")), 52, _phone_ok),
)


def redact_pii(text: str) -> tuple[str, Counter]:
    """`text` with PII replaced by placeholder tokens, and how many of each kind were replaced."""
    counts: Counter = Counter()
    for kind in _KINDS:
        pieces, copied = [], 0
        for match in kind.matches(text):
            if kind.valid is None or kind.valid(match):
                pieces += (text[copied:match.start()], kind.token)
                copied = match.end()
                counts[kind.event] += 1
        if pieces:
            text = "".join(pieces) + text[copied:]
    return text, counts


@dataclass(frozen=True)
class RedactPII:
    """Step: redact emails, IP addresses and phone numbers (never drops)."""

    name: str = "pii"

    def __call__(self, doc: CleanDocument) -> CleanDocument:
        text, counts = redact_pii(doc.text)
        return doc.changed(text=text, events=counts) if counts else doc
