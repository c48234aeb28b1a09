"""The direction of dependencies between rooms, as docs/architecture.md's layer table states it.

A room is a top-level package or module of ``sagestack`` (``services``, ``control``,
``cli``, ...). The table lists them in layers, top first: a room may import rooms of
lower layers only, and rooms of one layer never import each other. Every import
counts, including those inside functions and under ``TYPE_CHECKING``, so a cycle
between rooms cannot hide. The table is read from the doc itself, so the doc and the
tree cannot drift apart: a new room fails here until the doc places it.
"""

from __future__ import annotations

import re
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "architecture.md"
PACKAGE = ROOT / "sagestack"
#: The package's own ``__init__`` (its version): anyone may read it.
ROOT_ROOM = "sagestack"


def layers_from_doc() -> list[list[str]]:
    """The rows of the table under '## Rooms', top layer first: each row's rooms in backticks."""
    text = DOC.read_text()
    section = text.split("## Rooms", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 2 or not cells[0].isdigit():
            continue
        rows.append((int(cells[0]), re.findall(r"`([\w.]+)`", cells[1])))
    rows.sort(key=lambda row: -row[0])
    return [rooms for _, rooms in rows]


def room_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ROOT_ROOM


def rooms_in_tree() -> set[str]:
    rooms = {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    rooms |= {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    return rooms


@pytest.fixture(scope="module")
def layer_of() -> dict[str, int]:
    layers = layers_from_doc()
    assert layers, "docs/architecture.md has no layer table under '## Rooms'"
    index: dict[str, int] = {}
    for depth, rooms in enumerate(layers):
        for room in rooms:
            assert room not in index, f"{room} is listed twice in the room table"
            index[room] = len(layers) - depth  # higher number, higher layer
    return index


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("sagestack", include_external_packages=False)


def test_every_room_is_in_the_table(layer_of: dict[str, int]) -> None:
    tree = rooms_in_tree()
    assert tree - layer_of.keys() == set(), "rooms missing from docs/architecture.md's room table"
    assert layer_of.keys() - tree == set(), "the room table names rooms that do not exist"


def test_imports_go_down_the_layers(graph: grimp.ImportGraph, layer_of: dict[str, int]) -> None:
    wrong = []
    for importer in sorted(graph.modules):
        source = room_of(importer)
        if source == ROOT_ROOM or "migrations" in importer.split("."):
            continue
        for imported in graph.find_modules_directly_imported_by(importer):
            target = room_of(imported)
            if target in (source, ROOT_ROOM):
                continue
            if layer_of[target] >= layer_of[source]:
                line = graph.get_import_details(importer=importer, imported=imported)
                where = f" (line {line[0]['line_number']})" if line else ""
                wrong.append(f"{importer} -> {imported}{where}: {source} may not import {target}")
    assert wrong == [], "imports against the room table:\n" + "\n".join(wrong)


def test_no_cycle_between_modules_of_a_room(graph: grimp.ImportGraph) -> None:
    """Inside a room too, two modules never import each other (directly or around a loop)."""
    cycles = []
    for room in sorted(rooms_in_tree()):
        package = f"sagestack.{room}"
        if not (PACKAGE / room / "__init__.py").exists():
            continue
        modules = [m for m in graph.find_children(package)] if package in graph.modules else []
        for i, first in enumerate(sorted(modules)):
            for second in sorted(modules)[i + 1:]:
                if graph.chain_exists(first, second, as_packages=True) and \
                        graph.chain_exists(second, first, as_packages=True):
                    cycles.append(f"{first} <-> {second}")
    assert cycles == [], "import cycles between sibling modules:\n" + "\n".join(cycles)
