"""vitkit's layers point one way: every import (at module level or inside a function) goes down, never up.

A new subpackage or top-level module has to be placed in LAYERS; an import from a higher layer, or of the package root
from inside the package, fails here with the file and the line.
"""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "vitkit"

LAYERS = [  # bottom first; a unit may import itself and anything on a lower line
    {"errors", "version"},
    {"settings", "utils"},
    {"kernels"},
    {"layers"},
    {"models"},
    {"convert"},
    {"hub"},
    {"factory"},
    {"data"},
    {"engine"},
    {"eval"},
    {"train"},
    {"export", "predict", "explanations", "publish"},
    {"bench"},
    {"serve"},
    {"cli"},
    {"__main__"},
]
LEVEL = {unit: i for i, units in enumerate(LAYERS) for unit in units}


def unit_of(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0].removesuffix(".py")


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, unit) for every ``vitkit.<unit>`` this file imports; the root package itself as ``""``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] if node.module != "vitkit" else [f"vitkit.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "vitkit":
                found.append((node.lineno, parts[1] if len(parts) > 1 else ""))
    return found


def test_every_unit_has_a_layer():
    units = {unit_of(p) for p in SRC.rglob("*.py")} - {"__init__"}
    assert not sorted(units - set(LEVEL)), "place these in tests/test_layering.py LAYERS"


def test_imports_only_go_down():
    bad = []
    for path in sorted(SRC.rglob("*.py")):
        own = unit_of(path)
        if own == "__init__":
            continue  # the package root gathers the public API from every layer
        for line, target in imports(path):
            where = f"{path.relative_to(SRC.parent)}:{line}"
            if target == "":
                bad.append(f"{where}: imports the package root (import the module it needs instead)")
            elif target != own and LEVEL.get(target, len(LAYERS)) >= LEVEL[own]:
                bad.append(f"{where}: {own} (layer {LEVEL[own]}) imports {target} (layer {LEVEL.get(target)})")
    assert not bad, "\n".join(bad)


def test_the_checker_sees_function_level_imports(tmp_path):
    f = tmp_path / "x.py"
    f.write_text("def f():\n    from vitkit.cli import main\n    import vitkit.hub\n")
    assert imports(f) == [(2, "cli"), (3, "hub")]


@pytest.mark.parametrize("unit", ["cli", "bench", "hub"])
def test_layers_are_ordered(unit):
    assert LEVEL["kernels"] < LEVEL["layers"] < LEVEL["models"] < LEVEL[unit]
