"""What a sweep's points did: each run's status (from exit_status.json or a local run's exit) and its metrics, ranked
by one metric for `roots-launch sweep-summary`."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from roots_scale.launch.profile import LaunchError

if TYPE_CHECKING:  # sweep.py imports this module
    from roots_scale.launch.sweep import Sweep

STATUS_FILE = "exit_status.json"  # roots_scale.pretrain.EXIT_STATUS_FILE (a layer above launch: not imported)
METRICS_FILE = "metrics.jsonl"
LOCAL_EXIT = "local_exit.json"  # a --local run's exit code: a crash writes no exit_status.json
_HIGHER_IS_BETTER = re.compile(r"accuracy|precision|recall|f1|bleu|chrf", re.IGNORECASE)


def point_status(run_dir: Path) -> str:
    """finished, stopped (resumable), failed, running or not started, from exit_status.json or a local run's exit."""
    status = read_json(run_dir / STATUS_FILE)
    if status is not None:
        if status.get("reason") == "finished":
            return "finished"
        return "stopped" if status.get("exit_code") in (0, 3) else "failed"  # exit_interval, preempted: resumable
    if (run_dir / LOCAL_EXIT).is_file():
        return "failed"
    return "running" if (run_dir / METRICS_FILE).is_file() else "not started"


def default_mode(metric: str) -> str:
    """`max` for metrics where higher is better (accuracy, precision, recall, F1, BLEU, chrF), else `min`."""
    return "max" if _HIGHER_IS_BETTER.search(metric) else "min"


def summarize(sweep: Sweep, metric: str, mode: str) -> list[dict[str, Any]]:
    """One row per point, best `metric` first, points without it last; a metric no point logged is a LaunchError."""
    rows, logged = [], set()
    for point in sweep.points:
        run_dir = sweep.run_dir(point)
        records = read_metrics(run_dir / METRICS_FILE)
        logged.update(key for record in records for key in record)
        series = [(r.get("step"), r[metric]) for r in records
                  if isinstance(r.get(metric), (int, float)) and not isinstance(r.get(metric), bool)]
        finite = [pair for pair in series if math.isfinite(pair[1])]
        best = (min if mode == "min" else max)(finite, key=lambda pair: pair[1], default=(None, None))
        rows.append({"point": point.index, "name": point.name, "values": point.values, "metric": metric,
                     "best": best[1], "best_step": best[0], "last": series[-1][1] if series else None,
                     "status": point_status(run_dir), "steps": max((r.get("step", 0) for r in records), default=None),
                     "run_dir": str(run_dir)})
    if logged and metric not in logged:
        raise LaunchError(f"no point of {sweep.directory} logged {metric!r}: the metrics logged are "
                          f"{', '.join(sorted(logged - {'step'}))}")
    sign = 1 if mode == "min" else -1
    rows.sort(key=lambda r: (r["best"] is None, sign * r["best"] if r["best"] is not None else 0, r["point"]))
    return rows


def format_table(sweep: Sweep, rows: list[dict[str, Any]], metric: str, mode: str) -> str:
    """The rows as an aligned table: point, grid values, best (and its step), last, status, steps."""
    def number(value: float | None) -> str:
        return "-" if value is None else f"{value:.6g}"

    headers = ["point", *sweep.grid, f"best {metric}", "at step", f"last {metric}", "status", "steps"]
    table = [headers] + [[r["name"].split("-", 1)[0], *r["values"].values(), number(r["best"]),
                          str(r["best_step"] if r["best_step"] is not None else "-"), number(r["last"]), r["status"],
                          str(r["steps"] if r["steps"] is not None else "-")] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(headers))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in table]
    title = f"{sweep.directory}: {len(rows)} points by {metric}, {'lowest' if mode == 'min' else 'highest'} first"
    return "\n".join([title, *lines]) + "\n"


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """metrics.jsonl's records, skipping a line cut short by a kill or still being written (as the trainer does)."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from `path`, or None if there is none (missing, unreadable or not an object)."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None
