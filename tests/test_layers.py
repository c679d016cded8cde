"""Imports go one way: each layer may import only itself and the layers below it. A new upward import
(the structure that once made `roots_scale` and `data_tools` import each other) fails here, naming the line."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("roots_core", "data_tools", "roots_scale")

# Bottom first. Units in one row are peers: they may not import each other.
LAYERS: list[tuple[str, ...]] = [
    ("roots_core",),                        # error root, atomic writes, token store format, tokenizer loader
    ("data_tools", "roots_scale.config"),   # the corpus pipeline; the typed config
    ("roots_scale.distributed",),           # ranks and process groups
    ("roots_scale.data", "roots_scale.models"),
    ("roots_scale.checkpoint",),
    ("roots_scale.finetune",),              # fine-tuning's files, samples, task heads, metrics, evaluators
    ("roots_scale.training", "roots_scale.posttrain"),
    ("roots_scale.finetune.validation", "roots_scale.finetune.prepare"),  # its trainer callback; its config checks
    ("roots_scale.launch",),                # job scripts, checked as training (or fine-tuning) would check them
    ("roots_scale.planning",),              # roots-train plan: reads configs, device peaks, cluster profiles
    ("roots_scale.run",),                   # builds a run from all of the above
    ("roots_scale.pretrain",),              # the training entry point
    ("roots_scale.finetune.run",),          # roots-train finetune: the same entry point, a fine-tuning run
    ("roots_scale.cli", "roots_scale.finetune.__main__"),  # roots-train subcommand dispatch; torchrun -m
]


def unit_of(module: str) -> str | None:
    """The layer unit a dotted module name belongs to (the longest unit that prefixes it)."""
    units = [unit for row in LAYERS for unit in row if module == unit or module.startswith(unit + ".")]
    return max(units, key=len) if units else None


def layer_of(unit: str) -> int:
    return next(index for index, row in enumerate(LAYERS) if unit in row)


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, module) for every import of one of our packages in `path`, function-local ones included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return [(line, name) for line, name in found if name.split(".")[0] in PACKAGES]


def sources() -> list[Path]:
    return sorted(path for package in PACKAGES for path in (ROOT / package).rglob("*.py"))


def test_every_module_belongs_to_a_layer() -> None:
    loose = [module_name(path) for path in sources() if unit_of(module_name(path)) is None
             and module_name(path) not in PACKAGES]
    assert not loose, f"modules outside every layer (add them to LAYERS): {loose}"


@pytest.mark.parametrize("path", sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_go_downward(path: Path) -> None:
    here = unit_of(module_name(path))
    if here is None:
        return  # a package's own __init__
    upward = []
    for line, imported in imports_of(path):
        there = unit_of(imported)
        if there is None or there == here:
            continue
        if imported.split(".")[0] != here.split(".")[0] and "roots_core" not in (there, here):
            upward.append(f"line {line}: {imported} ({here} and {there} are separate halves: "
                          "share code via roots_core)")
        elif layer_of(there) >= layer_of(here):
            upward.append(f"line {line}: {imported} ({there} is not below {here})")
    assert not upward, f"{path.relative_to(ROOT)} imports upward or sideways: " + "; ".join(upward)
