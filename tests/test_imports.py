"""The package's import graph has no cycles, and the CLI's commands import shared helpers only.

A cycle (module a imports b, which imports a, directly or through others) makes the import
order matter, hides which layer is above which, and breaks as soon as one of them is
imported first from a new place. The graph is read from the source with ``ast``, not by
importing anything (this module imports no JAX and runs in well under a second): an edge is
every ``import nlfit.x`` and ``from nlfit.x import ...``, at module level, inside functions
and under ``if TYPE_CHECKING``, relative imports resolved; ``from nlfit import x`` is an
edge to ``nlfit.x`` when x is a module, else to ``nlfit`` itself. A parent package is not an
edge of its own: Python imports it first, but a package's ``__init__`` is not meant to
import its submodules here (nlfit's imports its public names lazily).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "nlfit"

# Cycles tolerated: none. The list stays so that the allow-list logic keeps its own test.
KNOWN_CYCLES: list[frozenset[str]] = []

# Modules under nlfit/cli/ that every command may import; any other module there is a
# command (or the application or the entry point). A new shared helper is added here.
CLI_HELPERS = {"nlfit.cli", "nlfit.cli.common", "nlfit.cli.saved", "nlfit.cli.streams"}
# The application registers the commands; the console entry point imports the application.
CLI_TOP = {"nlfit.cli.app", "nlfit.cli.main"}
# What may import the entry point or the application: the entry point itself, ``python -m
# nlfit``, and the resident worker, which runs commands as the entry point does.
ENTRY_POINTS = {"nlfit.cli.main", "nlfit.__main__", "nlfit.worker"}


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Overrides conftest's (which imports JAX to clear its caches): nothing here compiles."""
    yield


def modules_of(root: Path) -> dict[str, tuple[Path, bool]]:
    """{dotted name: (file, is a package)} of every module of the package in ``root``."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        package = parts[-1] == "__init__"
        found[".".join(parts[:-1] if package else parts)] = (path, package)
    return found


def imports_of(name: str, path: Path, package: bool, modules) -> set[str]:
    """The modules of ``modules`` that module ``name`` imports anywhere in its source."""
    here = name if package else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = here.split(".")[: len(here.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    return {module for module in found if module in modules and module != name}


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """{module: the modules it imports} for the package in ``root``."""
    modules = modules_of(root)
    return {name: imports_of(name, path, package, modules) for name, (path, package) in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm): each
    is a set of modules every one of which imports every other, directly or not."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = set()
            while not component or node not in component:
                component.add(stack.pop())
            if len(component) > 1:
                found.append(frozenset(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def unexpected(found: list[frozenset[str]], known=KNOWN_CYCLES) -> list[list[str]]:
    """The cycles of ``found`` that lie inside no known one, each as a sorted list."""
    return [sorted(cycle) for cycle in found if not any(cycle <= allowed for allowed in known)]


def test_the_package_has_no_import_cycles():
    graph = import_graph()
    assert "nlfit.cli.app" in graph and "nlfit.solvers.loop" in graph  # the walk found the package
    bad = unexpected(cycles(graph))
    assert not bad, "import cycles: " + "; ".join(", ".join(f"{a} -> {b}" for a in cycle for b in sorted(graph[a] & set(cycle))) for cycle in bad)


def test_cli_commands_import_helpers_not_each_other_nor_the_entry_point():
    graph = import_graph()
    cli = {name for name in graph if name.startswith("nlfit.cli.") or name == "nlfit.cli"}
    commands = cli - CLI_HELPERS - CLI_TOP
    assert {"nlfit.cli.fit", "nlfit.cli.predict", "nlfit.cli.refit"} <= commands
    wrong = {name: sorted(graph[name] & (commands | CLI_TOP)) for name in cli - CLI_TOP}
    assert not {name: found for name, found in wrong.items() if found}
    assert graph["nlfit.cli.app"] & CLI_TOP == set()  # the application is below the entry point


def test_only_entry_points_import_the_entry_point_or_the_application():
    graph = import_graph()
    importers = {name for name, targets in graph.items() if targets & CLI_TOP and name not in CLI_TOP}
    assert importers <= ENTRY_POINTS, sorted(importers - ENTRY_POINTS)


# ------------------------------------------------------------- the checks themselves, on toys


def test_cycle_finder_on_a_hand_made_graph():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": {"e"}, "e": set(), "f": {"f", "d"}, "g": {"h"}, "h": {"g"}}
    assert sorted(sorted(cycle) for cycle in cycles(graph)) == [["a", "b", "c"], ["g", "h"]]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    assert cycles({}) == []


def test_only_the_known_cycle_or_a_part_of_it_passes():
    known = [frozenset({"nlfit.fitting", "nlfit.result", "nlfit.diagnostics"})]
    assert unexpected([frozenset({"nlfit.fitting", "nlfit.result"})], known) == []
    assert unexpected([frozenset({"nlfit.fitting", "nlfit.options"})], known) == [["nlfit.fitting", "nlfit.options"]]
    grown = frozenset({"nlfit.fitting", "nlfit.result", "nlfit.diagnostics", "nlfit.batch"})
    assert unexpected([grown], known) == [sorted(grown)]


def test_a_cycle_through_function_level_and_relative_imports_is_found(tmp_path):
    package = tmp_path / "toy"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "low.py").write_text("def f():\n    from toy.sub import high\n    return high\n")
    (package / "sub" / "high.py").write_text("from .. import low\nfrom ..sub import other\n")
    (package / "sub" / "other.py").write_text("import toy.low\nfrom toy import VERSION\n")
    graph = import_graph(package)
    assert graph == {
        "toy": set(),
        "toy.sub": set(),
        "toy.low": {"toy.sub.high"},
        "toy.sub.high": {"toy.low", "toy.sub.other"},
        "toy.sub.other": {"toy.low", "toy"},
    }
    assert unexpected(cycles(graph)) == [["toy.low", "toy.sub.high", "toy.sub.other"]]
