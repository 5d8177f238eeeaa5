"""The floors import only downwards, so the layering the README draws cannot regress.

Each module's imports are read with `ast` (nothing is imported); an import of
a package on the same floor or above fails, naming the module and the import.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

FLOORS: list[tuple[str, ...]] = [
    ("operators",),  # records and pure logic: no I/O, no settings
    ("config",),  # settings every program shares
    ("telemetry",),  # logging, metrics, progress
    ("sources", "sinks", "recovery_store"),  # inputs, outputs, the recovery store's reader
    ("reference",),  # the reference publisher
    ("dataflows",),  # the wiring
    ("commands",),  # what a user runs: the `enrich` command
]
FLOOR = {package: level for level, packages in enumerate(FLOORS) for package in packages}


def imports(path: Path) -> Iterator[tuple[int, str]]:
    """(line, module) of every absolute import in a file, however deep in the code."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module


def violations(package: str) -> list[str]:
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for line, module in imports(path):
            target = module.split(".")[0]
            if target in FLOOR and target != package and FLOOR[target] >= FLOOR[package]:
                where = path.relative_to(ROOT)
                found.append(f"{where}:{line} imports {module} (floor {FLOOR[target]})")
    return found


def test_every_project_package_has_a_floor() -> None:
    packages = {path.parent.name for path in ROOT.glob("*/__init__.py")} - {"tests", "bench"}
    assert packages == set(FLOOR)


@pytest.mark.parametrize("package", list(FLOOR))
def test_a_package_imports_only_the_floors_below_it(package: str) -> None:
    assert violations(package) == []


def test_the_check_sees_an_import_that_climbs(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from dataflows.flow import build_flow\n")
    assert list(imports(module)) == [(2, "dataflows.flow")]


def test_the_readme_draws_the_floors_the_code_has() -> None:
    """The README's architecture table: floor N lists the folders of FLOORS[N - 1]."""
    drawn: dict[int, tuple[str, ...]] = {}
    for line in (ROOT / "README.md").read_text().splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if len(cells) == 3 and cells[0].isdigit():
            folders = tuple(part.strip(" `/") for part in cells[1].split(","))
            drawn[int(cells[0])] = folders
    assert drawn == {level + 1: packages for level, packages in enumerate(FLOORS)}
