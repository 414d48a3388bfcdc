"""The package's layers, checked: ``python -m labelwise.tools.layers`` prints every import that runs against them and
exits 1 if there is one (the default test suite runs it).

A module may import modules of a lower layer, and modules of its own package. Every ``import`` counts: at the top
of a module, inside a function (a function-local import does not make a cycle go away) and under
``if TYPE_CHECKING:`` (a type-only import still ties the two modules together: a section of the config belongs
beside its user, not above it). Besides:

- the engine runs any Method through its interface, ``labelwise.methods.base``, and imports no recipe and not the
  registry;
- no ``_private`` name is imported from another package (make the helper public where it is shared);
- no module imports itself back through others: cycles of any length, between the packages of one layer or between
  the modules inside one package (``a -> b -> c -> a``), are reported with their path.

See docs/architecture.md for what each layer owns.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1]

LAYERS: dict[str, int] = {
    # 0: foundations every layer may use
    "labelwise": 0,
    "labelwise.errors": 0,
    "labelwise.io": 0,
    "labelwise.settings": 0,
    # 1: building blocks: pure functions and modules, no training, no run directories
    "labelwise.filters": 1,
    "labelwise.metrics": 1,
    "labelwise.data": 1,
    "labelwise.augment": 1,
    "labelwise.losses": 1,
    "labelwise.models": 1,
    "labelwise.explain": 1,
    # 2: training recipes, one class each
    "labelwise.methods": 2,
    # 3: configs (validate names against the method and model registries); HTML reports of run directories
    "labelwise.config": 3,
    "labelwise.report": 3,
    # 4: the training loop and its run directory; the library side of `labelwise evaluate`
    "labelwise.engine": 4,
    "labelwise.evaluation": 4,
    # 5: a finished run as a model (reads the engine's run directory and checkpoints)
    "labelwise.inference": 5,
    # 6: entry points
    "labelwise.cli": 6,
    "labelwise.__main__": 6,
    "labelwise.demo": 6,
    "labelwise.training": 6,
    "labelwise.tools": 6,
    "labelwise.audit": 6,
}
FORBIDDEN = {("labelwise.engine", "labelwise.methods"): "the engine runs a Method through its interface"}
ALLOWED = {"labelwise.methods.base"}  # exceptions to FORBIDDEN: the Method interface itself


@dataclass(frozen=True)
class Violation:
    path: str  # relative to the folder holding the package
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


def unit(module: str) -> str:
    """The layered unit a module belongs to: its entry in :data:`LAYERS` (the longest prefix)."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        name = ".".join(parts[:n])
        if name in LAYERS:
            return name
    raise KeyError(module)


def module_name(path: Path, package: Path = PACKAGE) -> str:
    relative = path.relative_to(package.parent).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports(tree: ast.AST, module: str, is_package: bool) -> Iterator[tuple[int, str, list[str]]]:
    """``(line, imported module, imported names)`` for every labelwise import of the module."""

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "labelwise":
                    yield node.lineno, alias.name, []
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolved against this module's package
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] == "labelwise":
                yield node.lineno, target, [a.name for a in node.names]


Edges = dict[tuple[str, str], tuple[str, int]]  # (importer, imported) -> where: (path, line) of the first import


def resolve(target: str, names: list[str], modules: set[str]) -> list[str]:
    """The package's modules an import loads: ``from a.b import c`` is the module ``a.b.c`` where there is one, else
    ``a.b`` (or the nearest enclosing module that exists)."""
    found = [f"{target}.{n}" for n in names if f"{target}.{n}" in modules]
    if found:
        return found
    while target not in modules and "." in target:
        target = target.rsplit(".", 1)[0]
    return [target] if target in modules else []


def cycles(edges: Edges) -> list[list[str]]:
    """One cycle ``[a, b, ..., a]`` per strongly connected component of more than one node (Tarjan), each the shortest
    cycle through the component's first node in sorted order."""
    graph: dict[str, list[str]] = {}
    for a, b in sorted(edges):
        graph.setdefault(a, []).append(b)
        graph.setdefault(b, [])
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                connect(w)
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
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    found = []
    for component in sorted(components):
        members, start = set(component), component[0]
        parents: dict[str, str] = {}
        frontier, end = [start], None
        while frontier and end is None:  # breadth first: the shortest way back to start inside the component
            following = []
            for v in frontier:
                for w in graph[v]:
                    if w == start:
                        end = v
                        break
                    if w in members and w not in parents:
                        parents[w] = v
                        following.append(w)
                if end is not None:
                    break
            frontier = following
        assert end is not None  # a strongly connected component leads back to each of its nodes
        path = [end]
        while path[-1] != start:
            path.append(parents[path[-1]])
        found.append([start, *reversed(path[:-1]), start])
    return found


def check(package: Path = PACKAGE) -> list[Violation]:
    """Every violation of the layers in the package's source."""
    found: list[Violation] = []
    files = {module_name(f, package): f for f in sorted(package.rglob("*.py"))}
    modules = set(files)
    unit_edges: Edges = {}  # between packages of one layer
    module_edges: Edges = {}  # between modules of one package
    for module, file in files.items():
        path = str(file.relative_to(package.parent))
        source = unit(module)
        tree = ast.parse(file.read_text(), path)
        for line, target, names in imports(tree, module, file.name == "__init__.py"):
            if target == "labelwise" and names:  # from labelwise import x: the submodule x
                targets = [(f"labelwise.{n}", [n]) if f"labelwise.{n}" in LAYERS else ("labelwise", [n]) for n in names]
            else:
                targets = [(target, names)]
            for imported, what in targets:
                destination = unit(imported)
                if destination == source:
                    for other in resolve(imported, what, modules):
                        if other != module:
                            module_edges.setdefault((module, other), (path, line))
                    continue
                if LAYERS[destination] > LAYERS[source]:
                    found.append(
                        Violation(
                            path,
                            line,
                            f"{source} (layer {LAYERS[source]}) imports {imported} "
                            f"(layer {LAYERS[destination]}): a higher layer",
                        )
                    )
                forbidden = next(
                    (
                        why
                        for (a, b), why in FORBIDDEN.items()
                        if unit(source) == a and destination.startswith(b) and imported not in ALLOWED
                    ),
                    None,
                )
                if forbidden:
                    found.append(Violation(path, line, f"{source} imports {imported}: {forbidden}"))
                private = [n for n in what if n.startswith("_") and not n.startswith("__")]
                if private:
                    found.append(
                        Violation(
                            path, line, f"{source} imports the private name(s) {', '.join(private)} of {imported}"
                        )
                    )
                if LAYERS[destination] == LAYERS[source]:
                    unit_edges.setdefault((source, destination), (path, line))
    for kind, edges in (("packages", unit_edges), ("modules", module_edges)):
        for cycle in cycles(edges):
            path, line = edges[cycle[0], cycle[1]]
            steps = ", ".join(f"{edges[a, b][0]}:{edges[a, b][1]}" for a, b in zip(cycle, cycle[1:]))
            found.append(Violation(path, line, f"the {kind} import each other: {' -> '.join(cycle)} ({steps})"))
    return found


def main() -> int:
    violations = check()
    for violation in violations:
        print(violation)
    print(f"{len(violations)} import(s) against the layers" if violations else "layers: every import runs downwards")
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
