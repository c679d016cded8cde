"""The report command: one self-contained HTML page about a corpus, from the stages' own output directories.

`roots-data report DIR... --output report.html` takes any of the output directories of extract,
clean, dedup and tokenize (each one's stage is read from its `stats.json`, or a store's
`manifest.json`) and renders, with matplotlib, plots embedded as inline SVG data (no network):
documents and text bytes per language and source through the stages (a funnel), removals by
reason, document lengths per stage, the most frequent words per language in the last document
stage, dedup's exact-copy and near-duplicate cluster sizes (`.dedup/cluster.json`), and tokens per
source in the store; plus a table of the headline numbers. Every number shown is also embedded
as JSON (`<script type="application/json" id="report-data">`), so scripts and tests read exactly
what people see. Counts come from the stats (as `roots-data stats` shows them); bytes per
language and source, lengths and words are read from the shards themselves.
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from data_tools.dedup import WORK_DIR as DEDUP_WORK_DIR
from data_tools.errors import DataToolsError
from data_tools.filters.lexicons import stopwords
from data_tools.filters.words import split_words
from data_tools.shards import iter_batches, list_shards
from data_tools.stage import STATS_FILE, ShardStats, read_stage_stats
from roots_core.atomic import write_bytes_atomic
from roots_core.token_store import (
    MANIFEST_NAME,
    UNKNOWN_LANGUAGE,
    read_batches,
    read_manifest,
)

PIPELINE = ("extract", "clean", "dedup", "tokenize")  # the report's stage order; other stages follow, as given
STORE_STAGE = "tokenize"
LENGTH_BINS = np.logspace(0, 7, 29)  # words (or tokens) per document: 4 bins per decade, 1 to 10M
TOP_GROUPS = 8  # languages or sources drawn one by one in the funnel; the rest are "other"
TOP_WORDS = 15
TOP_LANGUAGES = 12


@dataclass
class StageOutput:
    """One stage output directory: its stage, stats and, where the stage has them, manifest or dedup clusters."""

    path: Path
    stage: str
    stats: ShardStats
    manifest: dict[str, Any] | None = None
    clusters: dict[str, Any] | None = None


@dataclass
class ShardSummary:
    """What the report reads from one stage's document shards (the stats do not record it)."""

    bytes_by_language: Counter = field(default_factory=Counter)
    bytes_by_source: Counter = field(default_factory=Counter)
    lengths: np.ndarray = field(default_factory=lambda: np.zeros(len(LENGTH_BINS) - 1, dtype=np.int64))
    words: dict[str, Counter] = field(default_factory=dict)  # lang -> word -> occurrences (last stage only)
    word_documents: Counter = field(default_factory=Counter)  # lang -> documents whose words were counted


def detect_stage(path: Path) -> StageOutput:
    """The stage output at `path`, its stage read from stats.json or (a token store) manifest.json."""
    if not path.is_dir():
        raise DataToolsError(f"{path} is not a directory")
    summary, manifest_path = path / STATS_FILE, path / MANIFEST_NAME
    if not summary.is_file() and not manifest_path.is_file():
        raise DataToolsError(f"{path} is not a stage output: it has neither {STATS_FILE} nor {MANIFEST_NAME} "
                             "(give directories written by roots-data extract, clean, dedup or tokenize)")
    manifest = read_manifest(path) if manifest_path.is_file() else None
    if not summary.is_file():  # a store imported from Megatron: its manifest holds the counts
        return StageOutput(path, STORE_STAGE, _stats_from_manifest(manifest), manifest)
    try:
        stage = json.loads(summary.read_text())["stage"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataToolsError(f"{summary} is not a stage's stats (readable JSON with a 'stage' key): {exc}") from exc
    if stage == STORE_STAGE and manifest is None:
        raise DataToolsError(f"{path} is an unfinished token store: no {MANIFEST_NAME} yet (the tokenize run that "
                             "finishes the last shard writes it)")
    return StageOutput(path, stage, read_stage_stats(path), manifest, _read_clusters(path))


def _stats_from_manifest(manifest: dict[str, Any]) -> ShardStats:
    """A store's document counts per language and source as stats (every document in and out)."""
    stats = ShardStats(documents_in=manifest["num_documents"], documents_out=manifest["num_documents"])
    for entry in manifest["files"]:
        for table, counts in ((stats.by_language, entry["documents_per_language"]),
                              (stats.by_source, entry["documents_per_source"])):
            for key, count in counts.items():
                table.setdefault(key, Counter()).update({"in": count, "out": count})
    return stats


def _read_clusters(path: Path) -> dict[str, Any] | None:
    """Dedup's cluster sizes from `.dedup/cluster.json`, or None where there is none (or it predates them)."""
    try:
        return json.loads((path / DEDUP_WORK_DIR / "cluster.json").read_text()).get("cluster_sizes")
    except (OSError, ValueError):
        return None


def order_stages(outputs: Iterable[StageOutput]) -> list[StageOutput]:
    """The outputs in pipeline order (extract, clean, dedup, tokenize), other stages after, as given."""
    return sorted(outputs, key=lambda o: PIPELINE.index(o.stage) if o.stage in PIPELINE else len(PIPELINE))


def _histogram(values: np.ndarray) -> np.ndarray:
    """Counts of `values` (lengths) in LENGTH_BINS, every value clipped into the bins' range."""
    return np.histogram(np.clip(values, LENGTH_BINS[0], LENGTH_BINS[-1]), LENGTH_BINS)[0]


def _group_sums(keys: pa.Array, values: pa.Array, fill: str) -> Counter:
    """Sum of `values` per key (null keys as `fill`)."""
    grouped = pa.table({"key": pc.fill_null(keys, fill), "value": values}).group_by("key").aggregate(
        [("value", "sum")])
    return Counter(dict(zip(grouped["key"].to_pylist(), grouped["value_sum"].to_pylist())))


def summarize_shards(path: Path, max_word_documents: int | None) -> ShardSummary:
    """Text bytes per language and source, words per document, and (when `max_word_documents`) word counts."""
    summary = ShardSummary()
    for shard in list_shards(path):
        for batch in iter_batches(shard, ["text", "source", "lang"]):
            text = batch.column("text")
            text_bytes = pc.binary_length(text)
            summary.bytes_by_language.update(_group_sums(batch.column("lang"), text_bytes, UNKNOWN_LANGUAGE))
            summary.bytes_by_source.update(_group_sums(batch.column("source"), text_bytes, UNKNOWN_LANGUAGE))
            summary.lengths += _histogram(pc.list_value_length(pc.utf8_split_whitespace(text)).to_numpy())
            if max_word_documents is not None:
                _count_words(summary, text.to_pylist(), batch.column("lang").to_pylist(), max_word_documents)
    return summary


def _count_words(summary: ShardSummary, texts: list[str], langs: list[str | None], limit: int) -> None:
    """Add the words (stop words left out) of each language's first `limit` documents to `summary`."""
    for text, lang in zip(texts, langs):
        lang = lang or UNKNOWN_LANGUAGE
        if summary.word_documents[lang] >= limit:
            continue
        summary.word_documents[lang] += 1
        skip = stopwords(lang) or frozenset()
        summary.words.setdefault(lang, Counter()).update(word for word in split_words(text) if word not in skip)


def summarize_store(output: StageOutput) -> tuple[Counter, np.ndarray]:
    """Tokens per source and the tokens-per-document histogram of a token store, from its files' offsets."""
    tokens_by_source: Counter = Counter()
    lengths = np.zeros(len(LENGTH_BINS) - 1, dtype=np.int64)
    for entry in output.manifest["files"]:
        for batch in read_batches(output.path / entry["name"], np.dtype(output.manifest["dtype"])):
            tokens = pc.list_value_length(batch.column("input_ids"))
            tokens_by_source.update(_group_sums(batch.column("source"), tokens, UNKNOWN_LANGUAGE))
            lengths += _histogram(tokens.to_numpy())
    return tokens_by_source, lengths


def collect(outputs: Sequence[StageOutput], max_word_documents: int) -> dict[str, Any]:
    """Every number the report shows, JSON-ready: per stage, words, clusters and the store."""
    document_stages = [o for o in outputs if o.manifest is None]
    stages = []
    top_words = None
    for output in outputs:
        stats = output.stats
        row: dict[str, Any] = {
            "stage": output.stage, "directory": str(output.path),
            "documents_in": stats.documents_in, "documents_out": stats.documents_out,
            "bytes_in": stats.bytes_in, "bytes_out": stats.bytes_out, "removed": dict(sorted(stats.removed.items())),
            "documents_by_language": {k: v["out"] for k, v in sorted(stats.by_language.items())},
            "documents_by_source": {k: v["out"] for k, v in sorted(stats.by_source.items())},
        }
        if output.manifest is None:
            last = output is document_stages[-1]
            summary = summarize_shards(output.path, max_word_documents if last else None)
            row.update(text_bytes_by_language=dict(sorted(summary.bytes_by_language.items())),
                       text_bytes_by_source=dict(sorted(summary.bytes_by_source.items())),
                       words_per_document=summary.lengths.tolist())
            if last:
                top_words = {"directory": str(output.path), "max_documents_per_language": max_word_documents,
                             "languages": {lang: {"documents": summary.word_documents[lang],
                                                  "words": counts.most_common(TOP_WORDS)}
                                           for lang, counts in sorted(summary.words.items())}}
        else:
            tokens_by_source, token_lengths = summarize_store(output)
            row.update(num_tokens=output.manifest["num_tokens"], files=len(output.manifest["files"]),
                       vocab_size=output.manifest["vocab_size"],
                       tokens_by_source=dict(sorted(tokens_by_source.items())),
                       tokens_per_document=token_lengths.tolist())
        if output.clusters is not None:
            row["cluster_sizes"] = output.clusters
        stages.append(row)
    return {"length_bins": LENGTH_BINS.tolist(), "stages": stages, "top_words": top_words}


# Plots: each returns an SVG document (bytes), or None when the inputs hold nothing to draw.

def _figure(width: float, height: float):
    """A matplotlib Figure not tied to pyplot (no global state, no display)."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _svg(figure) -> bytes:
    """The figure as SVG, byte-identical for the same figure (no date, fixed id salt)."""
    import matplotlib

    buffer = io.BytesIO()
    with matplotlib.rc_context({"svg.hashsalt": "roots-data report"}):
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    return buffer.getvalue()


def _label(row: dict[str, Any]) -> str:
    """A stage's axis label: the stage, and the directory it came from where its name differs."""
    name = Path(row["directory"]).name
    return row["stage"] if name == row["stage"] else f"{row['stage']}\n{name}"


def _top_keys(tables: Sequence[dict[str, int]], count: int) -> list[str]:
    """The `count` keys with the largest total over `tables`, largest first."""
    totals: Counter = Counter()
    for table in tables:
        totals.update(table)
    return [key for key, _ in totals.most_common(count)]


def _stacked(axes, rows: list[dict[str, Any]], key: str, title: str, colors: dict[str, Any], unit: str = "") -> None:
    """Bars per stage, stacked by language or source (the largest TOP_GROUPS, then "other"), totals on top."""
    from matplotlib.ticker import EngFormatter

    tables = [row.get(key, {}) for row in rows]
    groups = _top_keys(tables, TOP_GROUPS)
    x = np.arange(len(rows))
    bottom = np.zeros(len(rows))
    for group in groups + ["other"]:
        heights = np.array([table.get(group, 0) if group != "other" else
                            sum(v for k, v in table.items() if k not in groups) for table in tables], dtype=float)
        if heights.any():
            axes.bar(x, heights, bottom=bottom, label=group, color=colors.setdefault(group, f"C{len(colors) % 10}"))
        bottom += heights
    for position, total, table in zip(x, bottom, tables):
        axes.annotate(_engineering(total, unit) if table else "not recorded", (position, total), ha="center",
                      va="bottom", fontsize=8, xytext=(0, 2), textcoords="offset points")
    axes.yaxis.set_major_formatter(EngFormatter(unit=unit))
    axes.set_xticks(x, [_label(row) for row in rows], fontsize=8)
    axes.set_title(title, fontsize=10)
    axes.set_ylim(0, max(bottom.max(), 1) * 1.15)  # room for the totals (zero-height bars defeat margins)
    handles, labels = axes.get_legend_handles_labels()
    axes.legend(handles[::-1], labels[::-1], fontsize=7, loc="upper right")  # top to bottom, as stacked


def _engineering(value: float, unit: str) -> str:
    """A count as people read it: exact with separators when small, else with an SI prefix (12.3 MB)."""
    from matplotlib.ticker import EngFormatter

    return f"{value:,.0f}{' ' + unit if unit else ''}" if value < 1e5 else EngFormatter(unit=unit, places=1)(value)


def plot_funnel(data: dict[str, Any]) -> bytes | None:
    """Documents and text bytes per language and per source, stage by stage."""
    rows = data["stages"]
    figure = _figure(11, 7.5)
    grid = figure.subplots(2, 2)
    colors: dict[str, Any] = {}
    _stacked(grid[0][0], rows, "documents_by_language", "documents per language", colors)
    _stacked(grid[0][1], rows, "documents_by_source", "documents per source", colors)
    _stacked(grid[1][0], rows, "text_bytes_by_language", "text bytes per language (document stages)", colors, "B")
    _stacked(grid[1][1], rows, "text_bytes_by_source", "text bytes per source (document stages)", colors, "B")
    return _svg(figure)


def plot_removals(data: dict[str, Any]) -> bytes | None:
    """Documents (or records) each stage removed, by reason."""
    bars = [(f"{row['stage']}: {reason}", count, index) for index, row in enumerate(data["stages"])
            for reason, count in sorted(row["removed"].items(), key=lambda item: -item[1])]
    if not bars:
        return None
    figure = _figure(11, 1.2 + 0.32 * len(bars))
    axes = figure.subplots()
    y = np.arange(len(bars))[::-1]
    drawn = axes.barh(y, [count for _, count, _ in bars], color=[f"C{index % 10}" for _, _, index in bars])
    axes.bar_label(drawn, [f"{count:,}" for _, count, _ in bars], fontsize=8, padding=3)
    axes.set_yticks(y, [label for label, _, _ in bars], fontsize=8)
    axes.set_xlabel("documents removed")
    axes.margins(x=0.1)
    return _svg(figure)


def plot_lengths(data: dict[str, Any]) -> bytes | None:
    """Histograms of words per document for each document stage, and tokens per document in the store."""
    words = [row for row in data["stages"] if "words_per_document" in row]
    tokens = [row for row in data["stages"] if "tokens_per_document" in row]
    panels = [(rows, key, unit) for rows, key, unit in ((words, "words_per_document", "words"),
                                                         (tokens, "tokens_per_document", "tokens")) if rows]
    if not panels:
        return None
    figure = _figure(11, 3.6)
    bins = np.array(data["length_bins"])
    for axes, (rows, key, unit) in zip(np.atleast_1d(figure.subplots(1, len(panels))), panels):
        for index, row in enumerate(rows):
            axes.stairs(row[key], bins, label=_label(row).replace("\n", " "), linewidth=1.8,
                        linestyle=("-", "--", ":", "-.")[index % 4])
        used = np.flatnonzero(np.sum([row[key] for row in rows], axis=0))
        if used.size:
            axes.set_xlim(bins[used[0]], bins[used[-1] + 1])
        axes.set_xscale("log")
        axes.set_xlabel(f"{unit} per document (log scale)")
        axes.set_ylabel("documents")
        axes.legend(fontsize=8)
    return _svg(figure)


def plot_top_words(data: dict[str, Any]) -> bytes | None:
    """The most frequent words (stop words left out) of each language, largest languages first."""
    top = data["top_words"]
    languages = sorted(((lang, info) for lang, info in (top or {}).get("languages", {}).items() if info["words"]),
                       key=lambda item: -item[1]["documents"])[:TOP_LANGUAGES]
    if not languages:
        return None
    columns = min(3, len(languages))
    rows = -(-len(languages) // columns)
    figure = _figure(11, 0.6 + 3.2 * rows)
    grid = np.atleast_1d(figure.subplots(rows, columns)).ravel()
    for axes, (lang, info) in zip(grid, languages):
        words = info["words"][::-1]
        axes.barh(range(len(words)), [count for _, count in words], color="C0")
        axes.set_yticks(range(len(words)), [word for word, _ in words], fontsize=8)
        axes.set_title(f"{lang} ({info['documents']:,} documents)", fontsize=10)
        axes.tick_params(axis="x", labelsize=8)
    for axes in grid[len(languages):]:
        axes.set_visible(False)
    return _svg(figure)


def plot_clusters(data: dict[str, Any]) -> bytes | None:
    """How many exact-copy groups and near-duplicate clusters dedup found of each size."""
    found = [row for row in data["stages"] if any(row.get("cluster_sizes", {}).values())]
    if not found:
        return None
    sizes = found[-1]["cluster_sizes"]
    keys = sorted({int(size) for table in sizes.values() for size in table})
    figure = _figure(11, 3.6)
    axes = figure.subplots()
    x = np.arange(len(keys))
    width = 0.8 / len(sizes)
    for index, (reason, table) in enumerate(sorted(sizes.items())):
        counts = [table.get(str(size), 0) for size in keys]
        bars = axes.bar(x + (index - (len(sizes) - 1) / 2) * width, counts, width, label=reason.replace("_", " "))
        axes.bar_label(bars, [f"{c:,}" if c else "" for c in counts], fontsize=8)
    axes.set_xticks(x, [str(size) for size in keys])
    axes.set_xlabel("documents in the group (the first is kept, the others removed)")
    axes.set_ylabel("groups")
    axes.margins(y=0.15)
    axes.legend(fontsize=8)
    return _svg(figure)


def plot_tokens(data: dict[str, Any]) -> bytes | None:
    """Tokens per source in the token store."""
    from matplotlib.ticker import EngFormatter

    stores = [row for row in data["stages"] if "tokens_by_source" in row]
    if not stores:
        return None
    table = sorted(stores[-1]["tokens_by_source"].items(), key=lambda item: item[1])
    figure = _figure(11, 1.2 + 0.4 * len(table))
    axes = figure.subplots()
    drawn = axes.barh(range(len(table)), [tokens for _, tokens in table], color="C2")
    axes.bar_label(drawn, [f"{tokens:,}" for _, tokens in table], fontsize=8, padding=3)
    axes.set_yticks(range(len(table)), [source for source, _ in table])
    axes.set_xlabel("tokens")
    axes.xaxis.set_major_formatter(EngFormatter())
    axes.margins(x=0.12)
    return _svg(figure)


# The page.

SECTIONS = (  # plot id, title, function, caption, what to say when there is nothing to draw
    ("funnel", "Documents and bytes through the stages", plot_funnel,
     ("Documents let through by each stage (from its stats) and their text bytes (read from its shards), per "
      "language and per source. Languages are identified by clean, so extract's documents are all 'und'. A store "
      "holds tokens, not text: its bytes are not drawn."), ""),
    ("removals", "Removals by reason", plot_removals,
     "Documents (extract: records) each stage removed, by the reason in its stats.", "No stage removed anything."),
    ("lengths", "Document lengths", plot_lengths,
     "Words per document (whitespace-separated) in each document stage, and tokens per document in the store.",
     "No document stage or store was given."),
    ("top-words", "Most frequent words per language", plot_top_words,
     ("Words as the quality filters see them (lowercased, punctuation stripped), stop words left out, in the last "
      "document stage given."), "No document stage was given, or its documents have no words."),
    ("clusters", "Duplicate groups", plot_clusters,
     ("From dedup's .dedup/cluster.json: groups of identical documents (after normalization) and clusters of near "
      "duplicates (MinHash LSH, among documents with no exact copy earlier), by size."),
     ("No duplicate groups to draw: no dedup output was given, it found no duplicates, or its clustering predates "
      "the recording of cluster sizes (re-run `roots-data dedup --phase cluster --overwrite`).")),
    ("tokens", "Tokens per source", plot_tokens, "Tokens in the store, per source, counted from its files.",
     "No token store was given."),
)
PLOTS = tuple(section[0] for section in SECTIONS)

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #222; margin: 0 auto;
       max-width: 1150px; padding: 24px; line-height: 1.4; }
h1 { margin-bottom: 4px; } h2 { margin-top: 36px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
.dirs { color: #666; font-size: 0.9em; }
table { border-collapse: collapse; font-size: 0.9em; margin-top: 12px; }
th, td { padding: 4px 10px; border-bottom: 1px solid #eee; text-align: right; }
th:nth-child(-n+2), td:nth-child(-n+2) { text-align: left; }
thead th { background: #f4f4f4; }
.headline { display: flex; gap: 16px; flex-wrap: wrap; margin: 16px 0; }
.headline div { background: #f4f6fa; border-radius: 6px; padding: 10px 16px; }
.headline b { display: block; font-size: 1.5em; }
figure { margin: 0; } figure img { width: 100%; height: auto; }
figcaption, .note { color: #555; font-size: 0.9em; }
"""


def _headline(data: dict[str, Any]) -> str:
    """The few numbers people look for first, as boxes."""
    rows = data["stages"]
    first, last = rows[0], rows[-1]
    documents = [row for row in rows if "words_per_document" in row]
    boxes = [("documents in", f"{first['documents_in']:,}"), ("documents out", f"{last['documents_out']:,}"),
             ("kept", f"{last['documents_out'] / first['documents_in']:.1%}" if first["documents_in"] else "-")]
    if documents:
        boxes.append(("text out", _megabytes(sum(documents[-1]["text_bytes_by_source"].values()))))
    boxes += [("languages", f"{len(last['documents_by_language']):,}"),
              ("sources", f"{len(last['documents_by_source']):,}")]
    if "num_tokens" in last:
        boxes.append(("tokens", f"{last['num_tokens']:,}"))
    return "".join(f"<div>{html.escape(name)}<b>{value}</b></div>" for name, value in boxes)


def _megabytes(count: int) -> str:
    """Bytes as megabytes, for people."""
    return f"{count / 1e6:,.2f} MB"


def _table(data: dict[str, Any]) -> str:
    """One row per stage: documents and bytes in and out, removals, tokens."""
    head = ("stage", "directory", "documents in", "documents out", "kept", "bytes in", "bytes out", "removed",
            "tokens")
    lines = ["<table><thead><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr></thead><tbody>"]
    for row in data["stages"]:
        kept = f"{row['documents_out'] / row['documents_in']:.1%}" if row["documents_in"] else "-"
        cells = (row["stage"], row["directory"], f"{row['documents_in']:,}", f"{row['documents_out']:,}", kept,
                 _megabytes(row["bytes_in"]), _megabytes(row["bytes_out"]), f"{sum(row['removed'].values()):,}",
                 f"{row['num_tokens']:,}" if "num_tokens" in row else "")
        lines.append("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in cells) + "</tr>")
    lines.append("</tbody></table><p class=note>Bytes as each stage's stats record them: extract's bytes in are "
                 "the raw records', tokenize's bytes out its store files'.</p>")
    return "".join(lines)


def render(data: dict[str, Any]) -> str:
    """The HTML page: headline numbers, the stage table, every plot (or why it is missing), and the data as JSON."""
    parts = [
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>Corpus report</title>",
        f"<style>{STYLE}</style></head><body><h1>Corpus report</h1>",
        "<p class=dirs>" + " → ".join(html.escape(f"{row['stage']} ({row['directory']})") for row in data["stages"])
        + "</p>",
        f"<div class=headline>{_headline(data)}</div>", _table(data),
    ]
    drawn = []
    for plot_id, title, draw, caption, empty in SECTIONS:
        svg = draw(data)
        parts.append(f"<section id=section-{plot_id}><h2>{html.escape(title)}</h2>")
        if svg is None:
            parts.append(f"<p class=note>{html.escape(empty)}</p></section>")
            continue
        drawn.append(plot_id)
        source = "data:image/svg+xml;base64," + base64.b64encode(svg).decode("ascii")
        parts.append(f'<figure><img id=plot-{plot_id} alt="{html.escape(title)}" src="{source}">'
                     f"<figcaption>{html.escape(caption)}</figcaption></figure></section>")
    payload = json.dumps({**data, "plots": drawn}, sort_keys=True).replace("</", "<\\/")
    parts.append(f'<script type="application/json" id="report-data">{payload}</script></body></html>\n')
    return "".join(parts)


def write_report(directories: Sequence[Path], output: Path, max_word_documents: int) -> dict[str, Any]:
    """Detect each directory's stage, read the numbers, and write the HTML report to `output`; return the numbers."""
    outputs = order_stages(detect_stage(directory) for directory in directories)
    data = collect(outputs, max_word_documents)
    write_bytes_atomic(output, render(data).encode("utf-8"))
    return data


def run(args: argparse.Namespace) -> int:
    """Write the report and say where it is."""
    if args.max_word_documents < 1:
        raise DataToolsError(f"--max-word-documents {args.max_word_documents} is invalid: it must be at least 1")
    data = write_report(args.directories, args.output, args.max_word_documents)
    print(f"{args.output}: report of {len(data['stages'])} stage output(s) "
          f"({', '.join(row['stage'] for row in data['stages'])}), {args.output.stat().st_size / 1e3:,.0f} kB")
    return 0


def register(commands) -> None:
    """Add the `report` subcommand to an argparse subparsers object."""
    parser = commands.add_parser(
        "report", help="render stage outputs (docs, clean, dedup, store) as one self-contained HTML report",
        description="Plots and headline numbers from the output directories of extract, clean, dedup and tokenize "
                    "(any of them, in any order): one HTML file with everything embedded.")
    parser.add_argument("directories", type=Path, nargs="+", metavar="DIR", help="stage output directories")
    parser.add_argument("--output", type=Path, required=True, metavar="FILE.html")
    parser.add_argument("--max-word-documents", type=int, default=10_000, metavar="N",
                        help="count words in at most N documents per language (default 10000)")
    parser.set_defaults(run=run)
