"""The tree's architecture (docs/architecture.md), checked from the imports.

Three rooms: wgmux/ (the product: what a hub runs), netlab/ (namespaced
labs), harness/ (what drives wgmux for tests, demo and benchmarks).  The
product imports neither of the others; netlab takes from the product only
the protocol definitions (message layout, mac1, packet building: one
definition each, shared with the labs); harness may import both.  No
import cycle at file or package level - lazy imports inside functions
count too, since they hide cycles rather than remove them.
"""

import ast
import re
from pathlib import Path
from typing import Dict, List, Set

ROOT = Path(__file__).resolve().parents[2]
ROOMS = ("wgmux", "netlab", "harness")
# what netlab may take from the product
PROTOCOL = {"wgmux", "wgmux.wire", "wgmux.mac1", "wgmux.packet"}


def modules() -> Dict[str, Path]:
    out = {}
    for room in ROOMS:
        for path in (ROOT / room).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _imported(module: str, path: Path, node, known: Dict[str, Path]) -> List[str]:
    names = []
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            package = module.split(".")
            if path.name != "__init__.py":
                package.pop()
            package = package[:len(package) - (node.level - 1)]
            base = ".".join(package + ([base] if base else []))
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                 for a in node.names]
    found = []
    for name in names:
        while name and name not in known:
            name = name.rpartition(".")[0]
        if name and name != module:
            found.append(name)
    return found


def import_graph(known: Dict[str, Path]) -> Dict[str, Set[str]]:
    """module -> the project modules it imports anywhere in its body."""
    graph = {}
    for module, path in known.items():
        tree = ast.parse(path.read_text(), str(path))
        graph[module] = {dep for node in ast.walk(tree)
                         if isinstance(node, (ast.Import, ast.ImportFrom))
                         for dep in _imported(module, path, node, known)}
    return graph


def cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """The strongly connected components with more than one member."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found: List[List[str]] = []

    def visit(v: str):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


GRAPH = import_graph(modules())


def room(module: str) -> str:
    return module.split(".")[0]


def test_the_product_imports_only_itself():
    wrong = {m: sorted(d for d in deps if room(d) != "wgmux")
             for m, deps in GRAPH.items() if room(m) == "wgmux"}
    assert not {m: d for m, d in wrong.items() if d}


def test_netlab_takes_only_the_protocol_from_the_product():
    wrong = {m: sorted(d for d in deps if room(d) == "harness"
                       or (room(d) == "wgmux" and d not in PROTOCOL))
             for m, deps in GRAPH.items() if room(m) == "netlab"}
    assert not {m: d for m, d in wrong.items() if d}


def test_no_import_cycle_between_files():
    assert cycles(GRAPH) == []


def test_no_import_cycle_between_rooms():
    rooms = {r: set() for r in ROOMS}
    for module, deps in GRAPH.items():
        rooms[room(module)].update(room(d) for d in deps if room(d) != room(module))
    assert cycles(rooms) == []


def test_the_cycle_finder_finds_cycles():
    """The two checks above can fail."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_only_the_product_is_installed():
    text = (ROOT / "pyproject.toml").read_text()
    packages = re.search(r"^packages = \[(.*)\]$", text, re.M).group(1)
    assert sorted(p.strip().strip('"') for p in packages.split(",")) == ["wgmux", "wgmux.bpf"]
