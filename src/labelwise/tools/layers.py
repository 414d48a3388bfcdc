"""The package's layers, checked: ``python -m labelwise.tools.layers`` prints every import that runs against them and
exits 1 if there is one (the default test suite runs it).

A module may import modules of a lower layer, and modules of its own package. Every ``import`` counts, at the top of a
module or inside a function (a function-local import does not make a cycle go away), except those under
``if TYPE_CHECKING:``, which run only for type checkers. Besides:

- the engine runs any Method through its interface and imports nothing from ``labelwise.methods``;
- no ``_private`` name is imported from another package (make the helper public where it is shared);
- the packages of one layer import each other without a cycle.

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


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports(tree: ast.AST, module: str, is_package: bool) -> Iterator[tuple[int, str, list[str]]]:
    """``(line, imported module, imported names)`` for every labelwise import outside ``if TYPE_CHECKING:``."""

    def walk(node: ast.AST) -> Iterator[ast.AST]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking(child):
                yield from (n for o in child.orelse for n in [o, *walk(o)])
                continue
            yield child
            yield from walk(child)

    for node in walk(tree):
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


def check(package: Path = PACKAGE) -> list[Violation]:
    """Every violation of the layers in the package's source."""
    found: list[Violation] = []
    edges: dict[tuple[str, str], tuple[str, int]] = {}
    for file in sorted(package.rglob("*.py")):
        module = module_name(file, package)
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
                    (why for (a, b), why in FORBIDDEN.items() if unit(source) == a and destination.startswith(b)), None
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
                    edges.setdefault((source, destination), (path, line))
    for (a, b), (path, line) in sorted(edges.items()):
        if (b, a) in edges and a < b:
            other = edges[(b, a)]
            found.append(Violation(path, line, f"{a} and {b} import each other (also {other[0]}:{other[1]})"))
    return found


def main() -> int:
    violations = check()
    for violation in violations:
        print(violation)
    print(f"{len(violations)} import(s) against the layers" if violations else "layers: every import runs downwards")
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
