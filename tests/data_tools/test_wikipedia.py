"""Wikipedia extraction: main-namespace articles only, wikitext reduced to headings and prose."""

from __future__ import annotations

import bz2
from collections import Counter

from data_tools.demo_corpus import MODULES
from data_tools.sources.wikipedia import read_wikipedia
from data_tools.sources.wikitext import wikitext_to_text

MARKUP = ("{{", "}}", "{|", "|}", "<ref", "[[", "]]", "Category:", "'''", "<!--", "__TOC__")


def test_demo_dump_articles_only(demo_corpus):
    skipped = Counter()
    documents = list(read_wikipedia(demo_corpus["wikipedia"], skipped))
    assert len(documents) == len(MODULES[0::2])
    assert skipped == Counter({"redirect": 1, "not_main_namespace": 1})
    assert [d.id for d in documents] == [f"wikipedia:{1000 + i}" for i in range(len(documents))]
    assert all(d.source == "wikipedia" and d.lang is None for d in documents)
    # the article path from <siteinfo><base>https://demowiki.invalid/wiki/Main_Page</base>
    assert documents[0].url == f"https://demowiki.invalid/wiki/{MODULES[0]}_(Python_module)"


def test_demo_markup_is_gone_and_prose_kept(demo_corpus):
    first = next(read_wikipedia(demo_corpus["wikipedia"], Counter()))
    name = MODULES[0]
    assert first.text.startswith(f"{name} is a module of the Python standard library. See also {MODULES[2]}.")
    for dropped in ("Infobox", "genre", "cite web", "docs.demo.invalid", "Category", "Python standard library modules"):
        assert dropped not in first.text, dropped
    lines = first.text.split("\n")
    assert f"{name}.ABC" in lines  # a heading, on its own line
    assert "References" in lines
    assert "\n\n" in first.text  # paragraph breaks kept


def test_enwiki_sample_has_no_markup_left(fixture_path):
    skipped = Counter()
    documents = list(read_wikipedia(fixture_path("enwiki-table-markup.xml.bz2"), skipped))
    assert len(documents) == 5
    assert not skipped
    for document in documents:
        for markup in MARKUP:
            assert markup not in document.text, (document.id, markup)
    vote = next(d for d in documents if d.id == "wikipedia:217916")
    assert vote.text.startswith("The constructive vote of no confidence (in German: konstruktives Misstrauensvotum")
    lines = vote.text.split("\n")
    assert "Germany" in lines and "History of use" in lines  # "==Germany==" and "===History of use==="
    assert "motion of no confidence" in vote.text  # a [[link]] keeps its text
    assert "Cite web" not in vote.text and "gesetze-im-internet" not in vote.text  # the <ref> is gone


def test_wikitext_cleaning_rules():
    wikitext = (
        "{{Infobox thing|name=X}}\n'''Bold''' and ''italic'' with [[Target page|a label]] and [[Plain]]."
        "<ref>Cite</ref>\n\n"
        "== Section ==\nText &amp; more.<!-- hidden -->[[File:Pic.jpg|thumb|A caption]] [[Category:Things]]\n"
        '{| class="wikitable"\n|-\n| cell one || cell two\n|}\nAfter   the table.\n__NOTOC__'
    )
    assert wikitext_to_text(wikitext) == (
        "Bold and italic with a label and Plain.\n\nSection\nText & more.\n\nAfter the table."
    )


def test_truncated_dump_keeps_earlier_pages_and_counts_the_damage(fixture_path, tmp_path):
    xml = bz2.decompress(fixture_path("enwiki-table-markup.xml.bz2").read_bytes())
    cut = xml.index(b"<page>", xml.index(b"<page>", xml.index(b"<page>") + 1) + 1) + 200  # inside page 3
    path = tmp_path / "truncated.xml"
    path.write_bytes(xml[:cut])
    skipped = Counter()
    documents = list(read_wikipedia(path, skipped))
    assert len(documents) == 2
    assert skipped == Counter({"malformed_xml": 1})
