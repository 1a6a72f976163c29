"""The core's import graph goes one way: down the layers, with no cycles.

The layer table is written once, at the top of ``core/edgecore/__init__.py`` (its docstring); this
test reads it from there (without importing edgecore) and checks every module of ``core/edgecore``
with a small AST walk:

* every import counts -- module level, inside functions, ``importlib.import_module("edgecore...")``
  with a literal name -- and so do ``if TYPE_CHECKING:`` imports, except in ``hookspecs.py``, where a
  hook spec may name a type from any layer (``Engine``, ``EngineConfig``);
* importing ``a.b.c`` from outside package ``a.b`` also runs ``a/b/__init__.py``: that counts as an
  import of ``a.b`` (the root package ``edgecore`` is exempt as a parent: Python runs it for every
  submodule; ``from edgecore import __version__`` still counts as importing it);
* a module may import modules of its own layer or lower ones; the graph may hold no cycle at all.

Two tests plant violations (on a synthetic tree, and on a copy of the real one) and show the
checker catching them.
"""

from __future__ import annotations

import ast
import re
import shutil
from pathlib import Path
from typing import Iterable, Mapping

import attrs
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIR = ROOT / "core" / "edgecore"

#: Modules whose ``if TYPE_CHECKING:`` imports are not counted (a hook spec names types of any layer).
TYPE_CHECKING_EXEMPT = frozenset({"edgecore.hookspecs"})


# -- the checker ---------------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Edge:
    source: str
    target: str
    line: int
    how: str  # "import", "function", "type-checking", "import_module", "parent package"


@attrs.frozen(kw_only=True)
class Violation:
    edge: Edge
    source_layer: int
    target_layer: int

    def __str__(self) -> str:
        e = self.edge
        return (f"{e.source} (layer {self.source_layer}) imports {e.target} (layer {self.target_layer}) "
                f"at line {e.line} ({e.how})")


def parse_layers(docstring: str, package: str = "edgecore") -> dict[str, int]:
    """``{module name: layer}`` from lines ``N. title: name, name (remark), ...``.

    A name covers that module and everything under it; the most specific name wins. ``__init__``
    is the package's own ``__init__`` module.
    """
    table: dict[str, int] = {}
    for line in docstring.splitlines():
        m = re.match(r"^\s*(\d+)\.\s+[^:]+:\s+(.+)$", line)
        if not m:
            continue
        layer = int(m.group(1))
        names = re.sub(r"\([^)]*\)", "", m.group(2))
        for name in (n.strip() for n in names.split(",")):
            if not name:
                continue
            if not re.fullmatch(r"[\w.]+", name):
                raise ValueError(f"layer table: {name!r} (layer {layer}) is not a module name")
            full = package if name == "__init__" else f"{package}.{name}"
            if full in table:
                raise ValueError(f"layer table names {name!r} twice")
            table[full] = layer
    if not table:
        raise ValueError("no layer table found (lines like '1. values: errors, tensor')")
    return table


def layer_of(module: str, table: Mapping[str, int], package: str = "edgecore") -> int | None:
    if module == package:
        return table.get(package)
    parts = module.split(".")
    for i in range(len(parts), 1, -1):
        layer = table.get(".".join(parts[:i]))
        if layer is not None:
            return layer
    return None


def modules_of(package_dir: Path, package: str = "edgecore") -> dict[str, Path]:
    """Module name -> file, for every ``.py`` file under ``package_dir`` (build leftovers excluded)."""
    found = {}
    for path in sorted(package_dir.rglob("*.py")):
        rel = path.relative_to(package_dir).with_suffix("")
        if any(part.endswith(".egg-info") or part == "__pycache__" for part in rel.parts):
            continue
        parts = [package, *rel.parts]
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


class _Imports(ast.NodeVisitor):
    def __init__(self, module: str, is_package: bool, modules: Iterable[str], package: str) -> None:
        self.module, self.is_package, self.modules, self.package = module, is_package, set(modules), package
        self.found: list[tuple[str, int, str]] = []
        self._depth = 0  # inside a function
        self._type_checking = 0

    def _how(self) -> str:
        return "type-checking" if self._type_checking else ("function" if self._depth else "import")

    def _add(self, target: str, line: int, how: str | None = None) -> None:
        if target == self.package or target.startswith(self.package + "."):
            self.found.append((target, line, how or self._how()))

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node.test):
            self._type_checking += 1
            for child in node.body:
                self.visit(child)
            self._type_checking -= 1
            for child in node.orelse:
                self.visit(child)
        else:
            self.generic_visit(node)

    def visit_FunctionDef(self, node: ast.AST) -> None:
        self._depth += 1
        self.generic_visit(node)
        self._depth -= 1

    visit_AsyncFunctionDef = visit_FunctionDef
    visit_Lambda = visit_FunctionDef

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node.lineno)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base = self.module.split(".")
            if not self.is_package:
                base = base[:-1]
            base = base[: len(base) - (node.level - 1)]
            target = ".".join(base + ([node.module] if node.module else []))
        else:
            target = node.module or ""
        for alias in node.names:  # "from pkg import submodule" imports the submodule
            sub = f"{target}.{alias.name}"
            self._add(sub if sub in self.modules else target, node.lineno)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if name in ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant):
            value = node.args[0].value
            if isinstance(value, str):
                self._add(value, node.lineno, "import_module")
        self.generic_visit(node)


def import_graph(
    package_dir: Path, package: str = "edgecore", *, type_checking_exempt: frozenset[str] = TYPE_CHECKING_EXEMPT
) -> dict[str, list[Edge]]:
    """Every module's imports of modules of the same package, as edges."""
    modules = modules_of(package_dir, package)
    graph: dict[str, list[Edge]] = {}
    for module, path in modules.items():
        visitor = _Imports(module, path.name == "__init__.py", modules, package)
        visitor.visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
        edges: dict[tuple[str, str], Edge] = {}
        for target, line, how in visitor.found:
            if how == "type-checking" and module in type_checking_exempt:
                continue
            if target == module:
                continue
            edges.setdefault((target, how), Edge(source=module, target=target, line=line, how=how))
            # the packages above the target run too, unless the importer is inside them already
            parts = target.split(".")
            for i in range(2, len(parts)):
                parent = ".".join(parts[:i])
                if module != parent and not module.startswith(parent + "."):
                    edges.setdefault((parent, "parent package"),
                                     Edge(source=module, target=parent, line=line, how="parent package"))
        graph[module] = list(edges.values())
    return graph


def layer_violations(graph: Mapping[str, list[Edge]], table: Mapping[str, int], package: str = "edgecore") -> list[Violation]:
    out = []
    for module, edges in graph.items():
        mine = layer_of(module, table, package)
        for edge in edges:
            theirs = layer_of(edge.target, table, package)
            if mine is not None and theirs is not None and theirs > mine:
                out.append(Violation(edge=edge, source_layer=mine, target_layer=theirs))
    return out


def unmapped(graph: Mapping[str, list[Edge]], table: Mapping[str, int], package: str = "edgecore") -> list[str]:
    names = set(graph) | {e.target for edges in graph.values() for e in edges}
    return sorted(n for n in names if layer_of(n, table, package) is None)


def cycles(graph: Mapping[str, list[Edge]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]
    adjacency = {m: sorted({e.target for e in edges if e.target in graph}) for m, edges in graph.items()}

    def strongconnect(v: str) -> None:
        work = [(v, iter(adjacency[v]))]
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        while work:
            node, children = work[-1]
            for w in children:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(adjacency[w])))
                    break
                if w in on_stack:
                    low[node] = min(low[node], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        component.append(w)
                        if w == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))

    for v in sorted(adjacency):
        if v not in index:
            strongconnect(v)
    return found


def check(package_dir: Path, table: Mapping[str, int], package: str = "edgecore") -> list[str]:
    """Every problem, as readable lines (empty: the package is layered)."""
    graph = import_graph(package_dir, package)
    problems = [f"not in the layer table: {name}" for name in unmapped(graph, table, package)]
    problems += [str(v) for v in layer_violations(graph, table, package)]
    problems += ["import cycle: " + " <-> ".join(c) for c in cycles(graph)]
    return problems


def real_table() -> dict[str, int]:
    tree = ast.parse((PACKAGE_DIR / "__init__.py").read_text(encoding="utf-8"))
    return parse_layers(ast.get_docstring(tree) or "")


# -- the tests -------------------------------------------------------------------------------------


def test_core_imports_go_down_the_layers_without_cycles():
    problems = check(PACKAGE_DIR, real_table())
    assert not problems, "the core's layering is broken:\n  " + "\n  ".join(problems)


def test_layer_table_covers_every_core_module():
    modules = modules_of(PACKAGE_DIR)
    table = real_table()
    assert not [m for m in modules if layer_of(m, table) is None]
    stale = [name for name in table if not any(m == name or m.startswith(name + ".") for m in modules)]
    assert not stale, f"the layer table names modules that do not exist: {stale}"


def _write(root: Path, files: Mapping[str, str]) -> Path:
    for rel, text in files.items():
        path = root / "pkg" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "pkg"


SYNTHETIC_TABLE = """Layers:

1. values: low
2. middle: mid, sub
3. top: high, __init__
"""


def test_checker_catches_planted_violations_in_a_synthetic_package(tmp_path):
    table = parse_layers(SYNTHETIC_TABLE, "pkg")
    clean = {
        "__init__.py": "",
        "low.py": "X = 1\n",
        "mid.py": "from pkg.low import X\n",
        "sub/__init__.py": "from pkg.sub.inner import Y\n",
        "sub/inner.py": "from pkg import low\nY = 2\n",
        "high.py": "import pkg.mid\nfrom pkg.sub import inner\n",
    }
    assert check(_write(tmp_path / "clean", clean), table, "pkg") == []

    planted = dict(clean)
    planted["low.py"] = "X = 1\ndef f():\n    from pkg.high import Z\n"  # upward, inside a function
    planted["mid.py"] = (
        "from typing import TYPE_CHECKING\nfrom pkg.low import X\n"
        "if TYPE_CHECKING:\n    from pkg import high\n"  # upward, type-checking only: counts
    )
    planted["sub/inner.py"] = "import importlib\nY = importlib.import_module('pkg.high')\n"
    problems = check(_write(tmp_path / "planted", planted), table, "pkg")
    text = "\n".join(problems)
    assert "pkg.low (layer 1) imports pkg.high (layer 3) at line 3 (function)" in text
    assert "pkg.mid (layer 2) imports pkg.high (layer 3) at line 4 (type-checking)" in text
    assert "pkg.sub.inner (layer 2) imports pkg.high (layer 3) at line 2 (import_module)" in text

    cyclic = dict(clean)
    cyclic["mid.py"] = "from pkg.low import X\nfrom pkg.sub.inner import Y\n"
    cyclic["sub/inner.py"] = "def g():\n    import pkg.mid\n"  # same layer, but a cycle
    problems = check(_write(tmp_path / "cyclic", cyclic), table, "pkg")
    assert problems == ["import cycle: pkg.mid <-> pkg.sub <-> pkg.sub.inner"]  # pkg.sub runs on the way


def test_checker_catches_a_parent_package_import(tmp_path):
    table = parse_layers(SYNTHETIC_TABLE + "4. higher: sub.viewer\n", "pkg")
    files = {
        "__init__.py": "",
        "low.py": "X = 1\n",
        "sub/__init__.py": "from pkg.sub.viewer import V\n",  # the layer-2 package pulls in layer 4
        "sub/viewer.py": "V = 1\n",
        "mid.py": "",
        "high.py": "",
    }
    problems = check(_write(tmp_path / "p", files), table, "pkg")
    assert problems == ["pkg.sub (layer 2) imports pkg.sub.viewer (layer 4) at line 1 (import)"]
    files["sub/__init__.py"] = ""
    files["low.py"] = "from pkg.sub.inner2 import W\n"
    files["sub/inner2.py"] = "W = 1\n"
    problems = check(_write(tmp_path / "q", files), table, "pkg")
    assert problems == ["pkg.low (layer 1) imports pkg.sub.inner2 (layer 2) at line 1 (import)",
                        "pkg.low (layer 1) imports pkg.sub (layer 2) at line 1 (parent package)"]


def test_checker_catches_a_violation_planted_in_a_copy_of_the_core(tmp_path):
    copy = tmp_path / "edgecore"
    shutil.copytree(PACKAGE_DIR, copy, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    errors = copy / "errors.py"
    errors.write_text(errors.read_text() + "\n\ndef _planted():\n    from edgecore.engine import Engine\n")
    problems = check(copy, real_table())
    assert any(p.startswith("edgecore.errors (layer 1) imports edgecore.engine (layer 7)") for p in problems), problems
    assert any(p.startswith("import cycle:") and "edgecore.errors" in p for p in problems), problems


@pytest.mark.parametrize("line", ["1. values errors", "x. values: errors"])
def test_table_lines_that_do_not_parse_are_not_layers(line):
    with pytest.raises(ValueError, match="no layer table"):
        parse_layers(line)
