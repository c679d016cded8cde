"""The cleaning steps one by one: normalization, words, ROOTS/Gopher/C4 filters, thresholds, PII, composition."""

from __future__ import annotations

import dataclasses
import functools
import math
import random
import re
import sys
import unicodedata
from collections import Counter
from pathlib import Path

import pytest

from data_tools.clean import CleanOptions, build_steps, default_thresholds
from data_tools.errors import DataToolsError
from data_tools.filters import pii
from data_tools.filters.base import Check, CleanDocument, apply_steps
from data_tools.filters.c4 import C4Lines
from data_tools.filters.gopher import (
    duplicate_ngram_chars,
    gopher_filters,
    top_ngram_chars,
)
from data_tools.filters.langid import IdentifyLanguage, language_codes
from data_tools.filters.lexicons import stopwords
from data_tools.filters.ngrams import char_ids, ngram_hashes
from data_tools.filters.normalize import normalize_text
from data_tools.filters.pii import redact_pii
from data_tools.filters.quality import (
    PAIR_JOINERS,
    char_repetition_ratio,
    lexicon_ratio,
    roots_filters,
    word_repetition_ratio,
)
from data_tools.filters.thresholds import (
    DEFAULT_THRESHOLDS_FILE,
    Thresholds,
    ThresholdTable,
    load_thresholds,
)
from data_tools.filters.words import (
    hash_words,
    joined_hashes,
    special_character_ratio,
    split_words,
    string_hash,
)

CLEAN_EN = (
    "The old harbour town grew up around a small fishing port at the mouth of the river. For most of its "
    "history the people who lived there made their living from the sea, and the narrow streets that climb "
    "the hill behind the quay still follow the paths they used to carry their catch to the market. In the "
    "nineteenth century a railway reached the town, and with it came visitors from the cities inland, who "
    "built large houses along the cliffs and turned the beach into a place for holidays rather than work."
)
CLEAN_FR = (
    "La vieille ville s'est développée autour d'un petit port de pêche à l'embouchure du fleuve. Pendant la "
    "plus grande partie de son histoire, les habitants vivaient de la mer, et les rues étroites qui montent "
    "sur la colline derrière le quai suivent encore les chemins qu'ils empruntaient pour porter leur pêche "
    "au marché."
)
PERMISSIVE = Thresholds(min_words=0, char_repetition_n=10, char_repetition_max=1.0, word_repetition_n=5,
                        word_repetition_max=1.0, special_characters_max=1.0, stopwords_min=0.0,
                        flagged_words_max=1.0, lang_id_min=0.0)


@pytest.fixture(scope="module")
def roots():
    """The shipped thresholds."""
    return default_thresholds()


def doc(text: str, lang: str | None = "en", lang_score: float = 1.0) -> CleanDocument:
    return CleanDocument("id", text, "test", None, lang, lang_score)


def only(**limits) -> ThresholdTable:
    """A table that lets everything through except the given limits."""
    return ThresholdTable(dataclasses.replace(PERMISSIVE, **limits), {})


def drop_reason(document: CleanDocument, table: ThresholdTable) -> str | None:
    return apply_steps(document, roots_filters(table))[1]


# --- normalization and words ------------------------------------------------------------------

def test_normalization_canonicalizes_unicode_and_whitespace():
    raw = "\ufeff  Cafe\u0301\u00a0\u00a0au\tlait\u200b \r\nsecond\u2028line \x00\n\n\n\n  third  "
    assert normalize_text(raw) == "Café au lait\nsecond\nline\n\nthird"
    assert normalize_text(" \n\t\u3000 ") == ""


def test_words_are_lowercased_stripped_and_cjk_characters():
    assert split_words("Hello, World! (42) «quoted» e-mail 2019 ...") == ["hello", "world", "quoted", "e-mail"]
    assert split_words("馬克·吐溫 said 你好。") == ["馬", "克", "吐", "溫", "said", "你", "好"]
    assert split_words("हिन्दी भाषा") == ["हिन्दी", "भाषा"]  # combining marks are part of words


def test_special_character_ratio_counts_everything_but_letters_and_marks():
    assert special_character_ratio("ab!!") == 0.5
    assert special_character_ratio("a 1😀") == 0.75
    assert special_character_ratio("हिन्दी") == 0.0
    assert special_character_ratio("") == 0.0



def _normalize_rule_by_rule(text: str) -> str:
    """The normalization rules of `filters.normalize`'s docstring, one regex pass each."""
    text = re.sub("[\x00-\x08\x0e-\x1f\x7f-\x84\x86-\x9f\u00ad\u200b\u2060\ufeff]+", "",
                  re.sub("\r\n?|[\x0b\x0c\x85\u2028\u2029]", "\n", text))
    text = unicodedata.normalize("NFC", text)
    text = re.sub(" ?\n ?", "\n", re.sub(r"[^\S\n]+", " ", text))
    return re.sub("\n{3,}", "\n\n", text).strip()


@functools.cache
def _special_code_points() -> list[bool]:
    return [unicodedata.category(char)[0] not in "LM" for char in map(chr, range(sys.maxunicode + 1))]


def _words_piece_by_piece(text: str) -> list[str]:
    """ROOTS' words: whitespace pieces (CJK characters alone), lowercased, letters and marks kept at both ends."""
    special = _special_code_points()
    words = []
    for piece in re.findall(r"[\u3040-\u30ff\u4e00-\u9fff]|[^\s\u3040-\u30ff\u4e00-\u9fff]+", text.lower()):
        kept = [i for i, char in enumerate(piece) if not special[ord(char)]]
        if kept:
            words.append(piece[kept[0]:kept[-1] + 1])
    return words


def test_normalization_skipping_absent_rules_equals_every_rule_applied():
    """normalize_text runs a rule only where it would change something; that must never change the result."""
    alphabet = ([chr(code) for code in range(0x3001) if chr(code).isspace() or unicodedata.category(chr(code))[0]
                 in "CZ"] + list("ab\u0301e\u00e9\u2000\u2001\ufeff\u200b\u00ad\r\n  \n\n"))
    rng = random.Random(0)
    for _ in range(20_000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
        assert normalize_text(text) == _normalize_rule_by_rule(text), repr(text)


def test_long_documents_hash_their_words_like_short_ones():
    text = "alpha beta, gamma! " * 20_000  # words far into a long document hash as they do at its start
    hashed = hash_words(text)
    assert len(hashed.hashes) == 60_000 and len(set(hashed.hashes.tolist())) == 3
    assert hashed.hashes[-1] == string_hash("gamma")


def test_words_and_special_characters_equal_a_character_by_character_reading():
    rng = random.Random(1)
    alphabet = list("aZé\u0301ß ,.!-'\"«»()\t\n0123€😀_\u00a0\u2003ΣςİIК\u0915\u093f語か・")
    for _ in range(5_000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        words = split_words(text)
        assert words == _words_piece_by_piece(text), repr(text)
        hashed = hash_words(text)  # what the filters measure: the same words, one number each
        assert hashed.hashes.tolist() == [string_hash(word) for word in words], repr(text)
        assert hashed.lengths.tolist() == [len(word) for word in words]
        for joiner in ("", " "):
            assert joined_hashes(hashed, joiner).tolist() == [string_hash(a + joiner + b)
                                                              for a, b in zip(words, words[1:])]
        specials = sum(unicodedata.category(char)[0] not in "LM" for char in text)
        assert special_character_ratio(text) == (specials / len(text) if text else 0.0)


# --- ROOTS measures --------------------------------------------------------------------------

def test_repetition_measures_equal_counting_the_ngrams_as_strings():
    """Rolled n-gram hashes and run counting give ROOTS' ratios as counting the n-grams themselves does."""
    rng = random.Random(4)
    for _ in range(3_000):
        text = "".join(rng.choice("ab cé語😀") for _ in range(rng.randint(0, 60)))
        n = rng.randint(1, 12)
        counts = Counter(text[i:i + n] for i in range(len(text) - n + 1))
        repeated = sorted((c for c in counts.values() if c > 1), reverse=True)
        top = min(math.isqrt(len(counts)), len(repeated))
        expected = sum(repeated[:top]) / sum(counts.values()) if counts else 0.0
        assert char_repetition_ratio(text, n) == pytest.approx(expected), (text, n)
        assert ngram_hashes(char_ids(text), n).tolist() == [string_hash(text[i:i + n])
                                                            for i in range(len(text) - n + 1)]
        words = split_words(text)
        grams = Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
        expected = sum(c for c in grams.values() if c > 1) / sum(grams.values()) if grams else 0.0
        assert word_repetition_ratio(hash_words(text), n) == pytest.approx(expected), (text, n)


def test_repetition_measures_match_hand_computed_values():
    assert char_repetition_ratio("aaaa", 2) == 1.0  # one 2-gram, three times
    assert char_repetition_ratio("abcabc", 3) == pytest.approx(2 / 4)  # abc ×2 of 4 3-grams; top sqrt(3)→1
    assert char_repetition_ratio("abcdefghijklmnop", 10) == 0.0  # nothing repeats
    assert char_repetition_ratio("short", 10) == 0.0
    assert word_repetition_ratio(hash_words("a b c d e a b c d e"), 5) == pytest.approx(2 / 6)
    assert word_repetition_ratio(hash_words("one two three"), 5) == 0.0
    assert lexicon_ratio(hash_words("The cat, the mat."), frozenset({"the"})) == 0.5
    assert lexicon_ratio(hash_words("我们好"), frozenset({"我们"}), joiner="") == pytest.approx(1 / 3)
    assert lexicon_ratio(hash_words("xin chào bạn"), frozenset({"xin chào"}), joiner=" ") == pytest.approx(1 / 3)
    assert lexicon_ratio(hash_words("?!"), frozenset({"the"})) == 0.0


def test_a_clean_english_paragraph_passes_every_roots_filter(roots):
    document, reason = apply_steps(doc(CLEAN_EN), [IdentifyLanguage(), *roots_filters(roots)])
    assert reason is None and document.lang == "en" and document.lang_score >= 0.8


@pytest.mark.parametrize("text, limits, reason", [
    ("too few words here", {"min_words": 5}, "min_words"),
    ("buy now! " * 40, {"char_repetition_max": 0.2}, "char_repetition"),
    ("a b c d e " * 10, {"word_repetition_max": 0.3}, "word_repetition"),
    ("$$ ## @@ !! %% ^^ && ** word ++ == ~~ || << >> ?? // 12 34 56 78 90", {"special_characters_max": 0.4},
     "special_characters"),
    ("apple banana cherry grape lemon mango orange peach pear plum", {"stopwords_min": 0.3}, "stopwords"),
    ("this is porn and more porn with xxx", {"flagged_words_max": 0.01}, "flagged_words"),
])
def test_each_roots_filter_drops_what_it_targets(text, limits, reason):
    assert drop_reason(doc(text), only(**limits)) == reason
    assert drop_reason(doc(CLEAN_EN), only(**limits)) is None  # and lets a clean paragraph through


def test_a_repetitive_page_fails_char_repetition_first_with_roots_thresholds(roots):
    assert drop_reason(doc("Buy cheap watches now! Best prices online. " * 20), roots) == "char_repetition"


def test_lang_id_score_uses_the_languages_threshold(roots):
    assert drop_reason(doc(CLEAN_EN, lang_score=0.75), roots) == "lang_id_score"  # en needs 0.80
    assert drop_reason(doc(CLEAN_EN, lang="xx", lang_score=0.75), only(lang_id_min=0.7)) is None


def test_languages_without_word_lists_skip_those_filters_and_say_so():
    document, reason = apply_steps(doc("слово " * 3, lang="ru"), roots_filters(only(flagged_words_max=0.0)))
    assert reason is None and document.events == {"skipped:flagged_words": 1}
    document, reason = apply_steps(doc("word", lang="zxx"), roots_filters(only(stopwords_min=0.5)))
    assert reason is None and document.events == {"skipped:stopwords": 1, "skipped:flagged_words": 1}


# --- thresholds -----------------------------------------------------------------------------

def test_thresholds_follow_the_language_with_fallback_to_default(roots):
    assert roots.for_language("en").min_words == 20 and roots.for_language("en").char_repetition_max == 0.106
    assert roots.for_language("fr").flagged_words_max == 0.008
    assert roots.for_language("es").stopwords_min == 0.4
    assert roots.for_language("zh").char_repetition_n == 3 and roots.for_language("zh").lang_id_min == 0.85
    assert roots.for_language("de") == roots.default == roots.for_language(None)
    assert roots.default.min_words == 10 and roots.default.lang_id_min == 0.7
    assert roots.for_language("eu").char_repetition_max == roots.default.char_repetition_max  # inherited
    # 15 words: enough for French (13), too few for English (20).
    fifteen = " ".join(["mot"] * 15)
    min_words = roots_filters(roots)[:1]
    assert apply_steps(doc(fifteen, lang="fr"), min_words)[1] is None
    assert apply_steps(doc(fifteen, lang="en"), min_words)[1] == "min_words"


def write_yaml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "thresholds.yaml"
    path.write_text(text)
    return path


DEFAULT_BLOCK = DEFAULT_THRESHOLDS_FILE.read_text().split("\nar:")[0]


@pytest.mark.parametrize("extra, expected", [
    ("xq: {min_words: 3}\n", ["unknown language key 'xq'", "valid: default, ace, af, am"]),
    ("eng: {min_words: 3}\n", ["'eng'", "did you mean 'en'"]),
    ("en: {min_word: 3}\n", ["unknown threshold key in `en` 'min_word'", "did you mean 'min_words'",
                             "lang_id_min"]),
    ("en: {min_words: lots}\n", ["`en.min_words` is 'lots'", "whole number"]),
    ("en: {min_words: 2.5}\n", ["`en.min_words` is 2.5"]),
    ("en: {stopwords_min: true}\n", ["`en.stopwords_min` is True", "between 0 and 1"]),
    ("en: {special_characters_max: 1.5}\n", ["`en.special_characters_max` is 1.5"]),
    ("en: [1, 2]\n", ["`en` must map threshold names to numbers"]),
    ("no: {min_words: 3}\n", ["YAML boolean", "'no'"]),
])
def test_invalid_thresholds_name_the_file_the_key_and_what_is_valid(tmp_path, extra, expected):
    path = write_yaml(tmp_path, DEFAULT_BLOCK + "\n" + extra)
    with pytest.raises(DataToolsError) as error:
        load_thresholds(path, language_codes())
    assert str(path) in str(error.value)
    for fragment in expected:
        assert fragment in str(error.value)


def test_thresholds_file_structure_errors(tmp_path):
    for text, fragment in [("en: {min_words: 3}\n", "`default` entry"), ("[1, 2]\n", "`default` entry"),
                           ("default: {min_words: 3}\n", "`default` lacks char_repetition_n"),
                           ("default: {min_words: [\n", "not valid YAML")]:
        with pytest.raises(DataToolsError, match="thresholds file") as error:
            load_thresholds(write_yaml(tmp_path, text), language_codes())
        assert fragment in str(error.value)
    with pytest.raises(DataToolsError, match="cannot be read"):
        load_thresholds(tmp_path / "missing.yaml", language_codes())


def test_a_user_thresholds_file_overrides_and_inherits(tmp_path):
    table = load_thresholds(write_yaml(tmp_path, DEFAULT_BLOCK + "\n'no': {min_words: 3}\nde: {lang_id_min: 1}\n"),
                            language_codes())
    assert table.for_language("no").min_words == 3 and table.for_language("de").lang_id_min == 1.0
    assert table.for_language("de").min_words == 10 and table.for_language("en") == table.default


# --- Gopher and C4 --------------------------------------------------------------------------

def test_gopher_counts_and_filters():
    words = "a b c d e a b c d e".split()
    assert top_ngram_chars(words, 2) == 2 * 2  # "a b" twice, two characters each
    assert duplicate_ngram_chars(words, 5) == 5  # "abcde" repeats once
    assert duplicate_ngram_chars(words, 6) == 0
    steps = gopher_filters()
    assert apply_steps(doc(CLEAN_EN), steps)[1] is None
    repeated_lines = "\n".join([CLEAN_EN[:80]] * 3 + ["A different closing line to end the page."])
    assert apply_steps(doc(repeated_lines), steps)[1] == "gopher_lines"
    repeated_paragraphs = "\n\n".join([CLEAN_EN] * 2)
    assert apply_steps(doc(repeated_paragraphs), steps)[1] == "gopher_paragraphs"
    assert apply_steps(doc(" ".join(["spam eggs"] * 40)), steps)[1] == "gopher_top_ngrams"


def test_c4_removes_lines_and_drops_pages_with_too_few_sentences():
    sentences = "\n".join(f"This is sentence number {n} of the page." for n in range(5))
    text = (f"Menu\n{sentences}\nPlease enable JavaScript to view the comments.\nLorem ipsum dolor sit amet.\n"
            "function() { return 1; }.\nthis line has no final punctuation")
    kept = C4Lines()(doc(text))
    assert kept is not None and kept.text == sentences
    assert kept.events == {"c4_lines:few_words": 1, "c4_lines:javascript": 1, "c4_lines:lorem_ipsum": 1,
                           "c4_lines:curly_brace": 1, "c4_lines:no_terminal_punctuation": 1}
    assert C4Lines()(doc("One sentence here. Two sentences here. Three of them.")) is None


# --- PII ------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, redacted, kind", [
    ("write to john.doe+news@example.co.uk today", "write to <EMAIL> today", "pii:email"),
    ("the server at 192.168.0.1, not 10.0.0.255.", "the server at <IP_ADDRESS>, not <IP_ADDRESS>.", "pii:ip_address"),
    ("host 2001:db8::ff00:42:8329 is up", "host <IP_ADDRESS> is up", "pii:ip_address"),
    ("mapped ::ffff:192.0.2.1 here", "mapped <IP_ADDRESS> here", "pii:ip_address"),
    ("link-local fe80::1.", "link-local <IP_ADDRESS>.", "pii:ip_address"),
    ("call +1 (555) 123-4567 now", "call <PHONE> now", "pii:phone"),
    ("London +44 20 7946 0958.", "London <PHONE>.", "pii:phone"),
    ("Paris +33 1 23 45 67 89", "Paris <PHONE>", "pii:phone"),
    ("Berlin +49 30 1234567", "Berlin <PHONE>", "pii:phone"),
    ("office (555) 123-4567 or 555.123.4567", "office <PHONE> or <PHONE>", "pii:phone"),
    ("toll free 1-800-555-1234", "toll free <PHONE>", "pii:phone"),
    ("appelez le 01 23 45 67 89", "appelez le <PHONE>", "pii:phone"),
])
def test_pii_is_redacted_and_counted(text, redacted, kind):
    result, counts = redact_pii(text)
    assert result == redacted and set(counts) == {kind} and counts[kind] == redacted.count("<")


@pytest.mark.parametrize("text", [
    "version 1.2.3.4 and v1.2.3.4 and release 10.0.0.1",  # decided: version strings are not IPs
    "build 1.2.3.4.5 of the tool",
    "ratio 999.1.1.1 is not an address",
    "at 12:30:45 we used std::vector and :: in C++",
    "the years 2019-2020, the date 2024-05-12 or 12.05.2024",
    "ISBN 978-3-16-148410-0, pi is 3.14159, 1,234,567 people, +5 points",
    "an @handle and user@localhost",
])
def test_pii_leaves_look_alikes_alone(text):
    assert redact_pii(text) == (text, {})


# --- composition ----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class NoShouting:
    """A user step in a few lines: drop documents written in capitals."""

    name: str = "shouting"

    def __call__(self, document: CleanDocument) -> CleanDocument | None:
        return None if document.text.isupper() else document


@dataclasses.dataclass(frozen=True)
class Signature:
    """A user modifier: append a line and count it."""

    name: str = "signature"

    def __call__(self, document: CleanDocument) -> CleanDocument:
        return document.changed(text=document.text + "\n-- cleaned", events={"signature:added": 1})


def test_user_steps_compose_with_the_built_in_ones(roots):
    no_links = Check("no_links", lambda d: "http" not in d.text)  # a filter in one line
    options = CleanOptions(thresholds=roots, extra_steps=(NoShouting(), no_links, Signature()))
    steps = build_steps(options)
    assert [step.name for step in steps][-4:] == ["shouting", "no_links", "signature", "pii"]
    assert apply_steps(doc(CLEAN_EN.upper()), steps)[1] == "shouting"
    assert apply_steps(doc(CLEAN_EN + " See http://example.org for more."), steps)[1] == "no_links"
    kept, reason = apply_steps(doc(CLEAN_EN + " Mail harbour@example.org for details."), steps)
    assert reason is None and kept.text.endswith("Mail <EMAIL> for details.\n-- cleaned")
    assert kept.events == {"signature:added": 1, "pii:email": 1}
    french, reason = apply_steps(doc(CLEAN_FR, lang=None), steps)
    assert reason is None and french.lang == "fr"


def test_pii_scanned_near_anchors_equals_each_pattern_run_over_the_whole_text():
    """Each kind's pattern runs only near its anchors: on text made of PII's own characters, with stretches
    longer than any match between them, results equal a substitution over the whole text."""
    for kind in pii._KINDS:
        assert kind.max_length >= re._parser.parse(kind.pattern.pattern).getwidth()[1]
    rng = random.Random(2)
    pieces = ["1", "2", "55", "555", "1234", "0", "01", ".", "-", " ", ":", "::", "+", "(", ")", "a", "f", "@",
              "x.org", "v", "version ", "\n", "a" * 700, " " * 60, "7" * 30, "b." * 40]
    redacted = Counter()
    for _ in range(20_000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 40)))
        expected = text
        for kind in pii._KINDS:
            expected = kind.pattern.sub(lambda m, kind=kind: m.group() if kind.valid and not kind.valid(m)
                                        else kind.token, expected)
        result, counts = redact_pii(text)
        assert result == expected, repr(text)
        redacted.update(counts)
    assert min(redacted.values()) > 20 and len(redacted) == 3, redacted  # every kind was exercised


@pytest.mark.parametrize("lang", ["en", "fr", "zh"])
def test_lexicon_ratio_counts_what_a_set_of_the_words_counts(lang):
    lexicon = stopwords(lang)
    rng = random.Random(3)
    vocabulary = sorted(lexicon) + ["harbour", "rivière", "港口", "x", "étoile", "42"]
    text = " ".join(rng.choice(vocabulary) for _ in range(2_000))
    words = split_words(text)
    joiner = PAIR_JOINERS.get(lang)
    expected = sum(word in lexicon for word in words)
    if joiner is not None:
        expected += sum(f"{a}{joiner}{b}" in lexicon for a, b in zip(words, words[1:]))
    assert expected > 100
    assert lexicon_ratio(hash_words(text), lexicon, joiner) == pytest.approx(min(1.0, expected / len(words)))
