"""Stage progress bars: one bar per stage (documents, rate, ETA) on a terminal; nothing in logs."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = 40


def roots_data(*args: str | Path, stderr) -> subprocess.CompletedProcess:
    """Run `roots-data ARGS...` with stderr sent to `stderr` (a file descriptor or subprocess.PIPE)."""
    return subprocess.run([sys.executable, "-m", "data_tools", *map(str, args)], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                          stderr=stderr, text=True, check=False)


def on_terminal(*args: str | Path) -> tuple[int, str]:
    """Run `roots-data ARGS...` with stderr on a pseudo-terminal of 120 columns; return its status and stderr."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    with subprocess.Popen([sys.executable, "-m", "data_tools", *map(str, args)], cwd=REPO_ROOT,
                          stdout=subprocess.DEVNULL, stderr=slave) as process:
        os.close(slave)
        chunks = []
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # the terminal is gone: the process closed its end
                break
            if not chunk:
                break
            chunks.append(chunk)
        os.close(master)
    return process.returncode, b"".join(chunks).decode()


@pytest.fixture
def corpus(tmp_path) -> Path:
    """Two directories of small text files (two extract tasks), one file of which is not UTF-8."""
    for part in ("left", "right"):
        (tmp_path / part).mkdir()
        for index in range(DOCUMENTS // 2):
            (tmp_path / part / f"{index}.txt").write_text(f"Document {index} of the {part} half, in plain words.")
    (tmp_path / "right" / "bad.txt").write_bytes(b"\xff\xfe not text")
    return tmp_path


def test_terminal_shows_one_bar_per_stage_with_rate_and_eta(corpus, tmp_path):
    status, screen = on_terminal("extract", "--format", "text", "--num-workers", "2", "--output", tmp_path / "docs",
                                 corpus / "left", corpus / "right")
    assert status == 0, screen
    final = screen.split("\r\n")[0].split("\r")[-1]  # the bar as left on screen
    # Raw inputs: the total is unknown, so a count (every record read, the skipped one too) and a rate.
    assert re.match(rf"extract: {DOCUMENTS + 1}doc \[\d\d:\d\d, +[\d.]+(doc/s|s/doc), 2/2 tasks\]", final), final
    status, screen = on_terminal("clean", "--num-workers", "2", "--input", tmp_path / "docs", "--output",
                                 tmp_path / "clean")
    assert status == 0, screen
    frames = screen.split("\r\n")[0].split("\r")[1:]
    assert frames and all(frame.startswith("clean: ") for frame in frames)  # one bar, redrawn, for both workers
    # Document shards: the total is known from their footers, so a percentage and an ETA too.
    assert re.search(rf"100%\|.*\| {DOCUMENTS}/{DOCUMENTS} \[\d\d:\d\d<\d\d:\d\d, +[\d.]+(doc/s|s/doc), 2/2 tasks\]",
                     frames[-1]), frames[-1]


def test_logs_get_no_bar_and_no_carriage_returns(corpus, tmp_path):
    log = tmp_path / "extract.log"
    with open(log, "w") as stderr:
        result = roots_data("extract", "--format", "text", "--output", tmp_path / "docs", corpus / "left",
                            corpus / "right", stderr=stderr)
    assert result.returncode == 0 and "40 out" in result.stdout
    piped = roots_data("clean", "--input", tmp_path / "docs", "--output", tmp_path / "clean", stderr=subprocess.PIPE)
    assert piped.returncode == 0
    for text in (log.read_text(), piped.stderr):
        assert "\r" not in text and "doc/s" not in text
        assert re.fullmatch(r"roots-data (extract|clean): done in [\d.]+s\n", text), text


def test_phases_sharing_workers_each_count_from_zero(corpus, tmp_path):
    """dedup runs its signature and filter phases on one set of worker processes; each bar counts only its own."""
    roots_data("extract", "--format", "text", "--output", tmp_path / "docs", corpus / "left", corpus / "right",
               stderr=subprocess.DEVNULL)
    status, screen = on_terminal("dedup", "--num-workers", "2", "--input", tmp_path / "docs", "--output",
                                 tmp_path / "dedup")
    assert status == 0, screen
    bars = [line.split("\r")[-1] for line in screen.split("\r\n")[:2]]
    for stage, bar in zip(("dedup signatures", "dedup"), bars):
        assert re.match(rf"{stage}: 100%\|.*\| {DOCUMENTS}/{DOCUMENTS} \[.*, 2/2 tasks\]", bar), bar
