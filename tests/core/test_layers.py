"""The layers, read from the source (ast): core → tasks → flows → deployments → CLI, and no import cycles.

Every import counts, also the ones inside functions (a "late" import is still a dependency); imports under
``if TYPE_CHECKING:`` are annotations only and do not:

* the core (``farmkeeper/`` without ``farmkeeper/cli``) imports no Prefect, ``tasks``, ``flows``,
  ``deployments`` or CLI;
* ``tasks/`` import no ``flows``/``deployments``/CLI; ``flows/`` no ``deployments``/CLI;
* ``farmkeeper/cli`` is the outermost layer: the only part of ``farmkeeper/`` that may import flows and tasks;
* the modules of ``farmkeeper/`` have no import cycles.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CLI = "farmkeeper.cli"
OUTER = ("prefect", "tasks", "flows", "deployments", CLI)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules(package: str) -> dict[str, Path]:
    return {_module_name(p): p for p in sorted((ROOT / package).rglob("*.py"))}


def imports(name: str, path: Path, known: set[str]) -> Iterator[tuple[str, int]]:
    """(imported module, line) for every import of ``path``; ``from pkg import submodule`` names the submodule."""
    is_package = path.name == "__init__.py"
    for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[:len(base) - node.level + (1 if is_package else 0)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            subs = [f"{module}.{a.name}" for a in node.names if f"{module}.{a.name}" in known]
            if subs and len(subs) == len(node.names):
                for sub in subs:
                    yield sub, node.lineno
            else:
                yield module, node.lineno


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node except the bodies of ``if TYPE_CHECKING:`` (annotations only, never imported at run time)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            todo.extend(node.orelse)
            continue
        todo.extend(ast.iter_child_nodes(node))


def _under(module: str, prefixes: tuple[str, ...]) -> str | None:
    return next((p for p in prefixes if module == p or module.startswith(p + ".")), None)


def forbidden(package: str, banned: tuple[str, ...], *, exempt: str | None = None) -> list[str]:
    mods = modules(package)
    known = set(mods)
    out = []
    for name, path in mods.items():
        if exempt and _under(name, (exempt,)):
            continue
        for module, line in imports(name, path, known):
            if _under(module, banned):
                out.append(f"{path.relative_to(ROOT)}:{line}: {name} imports {module}")
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), or a module importing itself."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph[v]:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def import_graph(package: str) -> dict[str, set[str]]:
    mods = modules(package)
    known = set(mods)
    return {name: {m for m, _ in imports(name, path, known) if m in known and m != name}
            for name, path in mods.items()}


def test_core_imports_no_prefect_tasks_flows_or_cli() -> None:
    assert forbidden("farmkeeper", OUTER, exempt=CLI) == []


@pytest.mark.parametrize(("package", "banned"), [
    ("tasks", ("flows", "deployments", CLI)),
    ("flows", ("deployments", CLI)),
    ("deployments", (CLI,)),
])
def test_outer_layers_import_only_inwards(package: str, banned: tuple[str, ...]) -> None:
    assert forbidden(package, banned) == []


def test_cli_is_the_outermost_layer() -> None:
    """``farmkeeper/cli`` runs flows (it imports them); the rule above exempts exactly it, and it exists."""
    cli_flows = [m for m, _ in (pair for name, path in modules("farmkeeper").items() if name.startswith(CLI + ".")
                                for pair in imports(name, path, set()))
                 if _under(m, ("flows",))]
    assert cli_flows, "farmkeeper/cli no longer imports flows: drop its exemption from the core rule"


def test_core_has_no_import_cycles() -> None:
    assert cycles(import_graph("farmkeeper")) == []


def test_the_checks_catch_what_they_look_for(tmp_path: Path) -> None:
    """The cycle finder and the import reader on a known graph (so the checks above cannot pass vacuously)."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    src = tmp_path / "m.py"
    src.write_text("import prefect\nif TYPE_CHECKING:\n    import typed_only\n\ndef f():\n    from flows.x import y\n"
                   "    from pkg import sub\n")
    found = sorted(imports("m", src, {"pkg.sub"}), key=lambda pair: pair[1])
    assert found == [("prefect", 1), ("flows.x", 6), ("pkg.sub", 7)]
