"""Malformed and cut wikitext leaves no markup and keeps its prose; Wikipedia documents carry their url.

The corpus is written by hand from the grammar's corner cases (none of it comes from a dump):
unclosed and oddly placed refs, refs holding templates, nested templates across lines, nested
tables, file captions with nested links over several lines, pages cut in the middle of a
construct, comments over paragraphs.
"""

from __future__ import annotations

import bz2
from collections import Counter
from pathlib import Path
from xml.sax.saxutils import escape

import pyarrow.parquet as pq
import pytest

from data_tools.cli import main
from data_tools.sources.wikipedia import read_wikipedia
from data_tools.sources.wikitext import wikitext_to_text

RESIDUE = ("<ref", "</ref", "<REF", "{{", "}}", "{|", "|}", "[[", "]]", "<!--", "-->", "File:", "file:",
           "Datei:", "Image:", "Category:", "Kategorie:", "'''", "''", "wikitable", "<", ">")

# name: (wikitext, sentences that must survive, words of dropped markup that must not)
CORPUS: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    "unclosed_ref": (
        "Alpha begins here.<ref>Smith 2001, p. 4 and more of the note\n\nBeta survives the unclosed ref.",
        ("Alpha begins here.", "Beta survives the unclosed ref."), ("Smith", "note"),
    ),
    "refs_with_templates": (
        ('Gamma is stated.<ref group="note">{{cite web |url=http://x.invalid/a |title={{lang|de|Titel}} }}</ref>'
        ' Delta follows.<ref name="a" /> Epsilon ends.<ref name=b>{{cite book\n|title=Longbook\n\n'
        "|year=1999}}</ref> Zeta closes the paragraph."),
        ("Gamma is stated.", "Delta follows.", "Epsilon ends.", "Zeta closes the paragraph."),
        ("cite", "Titel", "Longbook", "1999", "x.invalid"),
    ),
    "oddly_placed_refs": (
        ("Eta has a stray closing tag.</ref> Theta has a shouting ref.<REF>Upper</Ref> "
        "Iota has a ref opened twice.<ref>first<ref>second</ref> Kappa falls with the unclosed ref.\n\n"
        "Lambda is."),
        ("Eta has a stray closing tag.", "Theta has a shouting ref.", "Iota has a ref opened twice.", "Lambda is."),
        ("Upper", "first", "second", "Kappa"),  # an unclosed ref runs to the paragraph end
    ),
    "nested_templates_across_lines": (
        ("{{Infobox person\n| name = {{nowrap|Mu\n Person}}\n| image = [[File:Mu.jpg|thumb|{{small|tiny}}]]\n"
        "| param = {{{1|{{default}}}}}\n}}\nMu was born in {{birth year|1900}} in Nu.\n\n"
        "{{Unclosed template |arg=1\nstill inside the template\n\nXi is a later paragraph."),
        ("Mu was born in", "in Nu.", "Xi is a later paragraph."),
        ("Infobox", "nowrap", "Person", "tiny", "default", "still inside", "arg="),
    ),
    "nested_and_unclosed_tables": (
        ('Omicron precedes the table.\n{| class="wikitable"\n|+ Caption row\n|-\n! Head !! Other\n|-\n'
        '| outer cell\n{| class="inner"\n| inner cell\n|}\n| after inner\n|}\nPi follows the table.\n\n'
        ' {| class="wikitable"\n| cut row\n|-\n| last row\n\nRho survives an unclosed table.'),
        ("Omicron precedes the table.", "Pi follows the table.", "Rho survives an unclosed table."),
        ("Caption row", "Head", "outer cell", "inner cell", "after inner", "cut row", "last row"),
    ),
    "captions_with_nested_links": (
        ("[[File:Sigma.png|thumb|left|A caption with [[Tau|a label]] and\n[[Upsilon]] on a second line]]\n"
        "Phi is prose after the image. [[file:lower.jpg|x]] [[Datei:Bild.png|miniatur|Beschriftung [[Link]] "
        "[http://example.invalid extern]]] [[ Image : Old.gif ]] Chi ends. [[Category:Things]] "
        "[[Kategorie:Dinge]] [[de:Artikel]]"),
        ("Phi is prose after the image.", "Chi ends."),
        ("caption", "a label", "Upsilon", "lower.jpg", "Beschriftung", "extern", "Old.gif", "Things", "Dinge",
         "Artikel"),
    ),
    "page_cut_in_a_ref": (
        "Psi is complete.\n\nOmega starts<ref>{{cite news|title=Cut short",
        ("Psi is complete.", "Omega starts"), ("cite", "Cut short"),
    ),
    "page_cut_in_a_caption": (
        "Aleph is complete.\n\n[[File:Bet.jpg|thumb|A caption [[with a link]] cut",
        ("Aleph is complete.",), ("Bet.jpg", "caption", "with a link"),
    ),
    "page_cut_in_a_table": (
        'Gimel is complete.\n{| class="wikitable"\n| a cell\n{| nested\n| deeper',
        ("Gimel is complete.",), ("a cell", "deeper", "nested"),
    ),
    "comments_over_paragraphs": (
        ("Dalet is visible.<!-- hidden\n\nstill hidden -->He is visible too.\n\n"
        "Vav again.<!-- an unclosed comment\nover two lines\n\nZayin survives the unclosed comment."),
        ("Dalet is visible.", "He is visible too.", "Vav again.", "Zayin survives the unclosed comment."),
        ("hidden", "unclosed comment\n", "over two lines"),
    ),
}


def assert_clean(text: str, kept: tuple[str, ...], dropped: tuple[str, ...]) -> None:
    """No markup residue and no dropped content in `text`; every kept sentence whole in it."""
    for residue in RESIDUE:
        assert residue not in text, (residue, text)
    for word in dropped:
        assert word not in text, (word, text)
    for sentence in kept:
        assert sentence in text, (sentence, text)


@pytest.mark.parametrize("name", CORPUS)
def test_malformed_wikitext_leaves_prose_only(name):
    wikitext, kept, dropped = CORPUS[name]
    assert_clean(wikitext_to_text(wikitext), kept, dropped)


def test_the_whole_corpus_as_one_page():
    wikitext = "\n\n".join(case[0] for case in CORPUS.values())
    text = wikitext_to_text(wikitext)
    assert_clean(text, tuple(s for case in CORPUS.values() for s in case[1]), ())


def test_nowiki_stays_literal_and_links_keep_their_label():
    wikitext = "See <nowiki>{{not a template}} &amp;</nowiki>, [http://example.invalid the site], [[Target|label]]."
    assert wikitext_to_text(wikitext) == "See {{not a template}} &, the site, label."


def write_dump(path: Path, pages: dict[str, str], siteinfo: str) -> Path:
    """A bz2 MediaWiki export of `pages` (title: wikitext), ids from 1, with `siteinfo` verbatim."""
    xml = [f'<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.11/">{siteinfo}']
    for page_id, (title, wikitext) in enumerate(pages.items(), start=1):
        xml.append(f"<page><title>{escape(title)}</title><ns>0</ns><id>{page_id}</id><revision><id>9{page_id}</id>"
                   f'<text xml:space="preserve">{escape(wikitext)}</text></revision></page>')
    path.write_bytes(bz2.compress(("\n".join(xml) + "</mediawiki>").encode("utf-8")))
    return path


def test_extract_cli_on_a_malformed_dump(tmp_path):
    siteinfo = "<siteinfo><dbname>enwiki</dbname><base>https://en.wikipedia.org/wiki/Main_Page</base></siteinfo>"
    pages = {f"Case {name}": case[0] for name, case in CORPUS.items()}
    pages["C++ & Co's/AC (band)"] = "Short but fine."
    dump = write_dump(tmp_path / "malformed.xml.bz2", pages, siteinfo)
    output = tmp_path / "docs"
    assert main(["extract", "--format", "wikipedia", "--output", str(output), str(dump)]) == 0
    rows = pq.read_table(output / "malformed.xml.parquet").to_pylist()
    assert len(rows) == len(pages)
    for row, (name, (_, kept, dropped)) in zip(rows, CORPUS.items()):
        assert row["url"] == f"https://en.wikipedia.org/wiki/Case_{name}"
        assert_clean(row["text"], kept, dropped)
    assert rows[-1]["url"] == "https://en.wikipedia.org/wiki/C%2B%2B_%26_Co%27s/AC_(band)"  # as Wikipedia encodes it


@pytest.mark.parametrize(("file_name", "siteinfo", "url"), [
    ("dump.xml.bz2", "<siteinfo><dbname>zh_yuewiki</dbname></siteinfo>", "https://zh-yue.wikipedia.org/wiki/Page_one"),
    ("dump.xml.bz2", "<siteinfo><base>https://wiki.example.invalid/w/Home</base></siteinfo>",
     "https://wiki.example.invalid/w/Page_one"),
    ("frwiki-20240101-pages-articles.xml.bz2", "", "https://fr.wikipedia.org/wiki/Page_one"),
    ("dump.xml.bz2", "", None),
])
def test_url_from_siteinfo_else_file_name_else_none(tmp_path, file_name, siteinfo, url):
    skipped = Counter()
    documents = list(read_wikipedia(write_dump(tmp_path / file_name, {"Page one": "Some prose."}, siteinfo), skipped))
    assert [d.url for d in documents] == [url]
    assert not skipped
