"""The packages import downwards only, and the CRDT binding stays in collab.

collab knows nothing of executor or ai; those two attach to a document through collab's
peer API and know nothing of each other (DESIGN.md, "Layout"). Only collab imports pycrdt
(the binding may change again; DESIGN.md, "The document"). Module-level imports inside each
package form no cycle (imports under ``TYPE_CHECKING`` or inside functions do not count:
they do not run at import time).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.support.import_graph import import_cycles

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("collab", "executor", "ai")
# package -> the packages it may import
ALLOWED = {"collab": set(), "executor": {"collab"}, "ai": {"collab"}}
# collab's subpackages, lowest first: each imports only from its own layer and those before
# it (docs/architecture.md, "The map"). The flat modules at collab's top (errors, ids,
# settings, logs, metrics) are the foundation every layer may use.
COLLAB_LAYERS = (
    "collab",
    "collab.storage",
    "collab.auth",
    "collab.document",
    "collab.sync",
    "collab.search",
    "collab.services",
    "collab.api",
    "collab.server",
)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _top_level_imports(tree: ast.Module) -> list[str]:
    """Imports that run when the module is imported (not under TYPE_CHECKING)."""
    names: list[str] = []

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.Import):
                names.extend(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.append(node.module)
                names.extend(f"{node.module}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.If):
                test = ast.unparse(node.test)
                if "TYPE_CHECKING" not in test:
                    visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                for handler in node.handlers:
                    visit(handler.body)

    visit(tree.body)
    return names


def _all_imports(tree: ast.Module) -> list[str]:
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def _modules() -> dict[str, ast.Module]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found[_module_name(path)] = ast.parse(path.read_text(), str(path))
    return found


MODULES = _modules()


@pytest.mark.parametrize("module", sorted(MODULES))
def test_a_module_imports_only_packages_below_it(module: str) -> None:
    package = module.split(".")[0]
    for name in _all_imports(MODULES[module]):
        top = name.split(".")[0]
        if top in PACKAGES and top != package:
            assert top in ALLOWED[package], f"{module} imports {name}: {package} may not"
        if top == "pycrdt":
            assert package == "collab", f"{module} imports the CRDT binding: only collab may"


def _collab_layer(module: str) -> int:
    parts = module.split(".")
    if len(parts) > 2 and ".".join(parts[:2]) in COLLAB_LAYERS:
        return COLLAB_LAYERS.index(".".join(parts[:2]))
    # a subpackage itself (collab.sync) or a foundation module (collab.errors)
    return COLLAB_LAYERS.index(module) if module in COLLAB_LAYERS else 0


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith("collab")))
def test_collab_subpackages_import_downwards_only(module: str) -> None:
    layer = _collab_layer(module)
    for name in _all_imports(MODULES[module]):
        if name.split(".")[0] != "collab" or name == "collab":
            continue
        target = _collab_layer(name)
        assert target <= layer, (
            f"{module} ({COLLAB_LAYERS[layer]}) imports {name} ({COLLAB_LAYERS[target]}),"
            " a layer above it: move the shared part down or pass it in"
        )


def test_no_import_cycles_within_a_package() -> None:
    graph: dict[str, set[str]] = {}
    for module, tree in MODULES.items():
        graph[module] = {
            name
            for name in _top_level_imports(tree)
            if name in MODULES and name != module and name.split(".")[0] in PACKAGES
        }
    cycles = import_cycles(graph)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)
