"""HTML to text: visible prose only, blocks as paragraphs, entities decoded."""

from __future__ import annotations

from data_tools.sources.html_text import html_to_text

PAGE = """<!DOCTYPE html><html><head><title>The  Title</title>
<style>p { color: red }</style><script>var s = "<p>script text</p>";</script></head>
<body><nav><a href="/">Navigation link</a></nav><header>Site header</header>
<h2>Heading</h2><p>First   paragraph,
spread over lines &amp; with &eacute;ntities &#x1F600;.</p>
<div>Line one<br>Line two</div>
<pre>def f():
    return 1
</pre>
<noscript>Enable JavaScript</noscript><footer>Copyright</footer>
<p>Inline <b>bold</b> and <a href="#">link</a> text.</p></body></html>"""


def test_visible_text_in_paragraphs():
    assert html_to_text(PAGE) == (
        "The Title\n\nHeading\n\nFirst paragraph, spread over lines & with éntities 😀.\n\n"
        "Line one\nLine two\n\ndef f():\n    return 1\n\nInline bold and link text."
    )


def test_dropped_regions_leave_nothing():
    text = html_to_text(PAGE)
    for dropped in ("color", "script text", "Navigation", "Site header", "Enable JavaScript", "Copyright"):
        assert dropped not in text


def test_empty_and_markup_only_pages_give_empty_text():
    assert html_to_text("") == ""
    assert html_to_text("<html><body><script>x()</script><nav>menu</nav></body></html>") == ""


def test_unclosed_tags_and_stray_end_tags_are_tolerated():
    assert html_to_text("<p>one<p>two</div></span><li>three") == "one\n\ntwo\n\nthree"
