"""Cycles in an import graph (module -> the modules it imports), for the layering checks of
the Python packages (tests/test_layers.py) and of the web client (tests/web/)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Set
from typing import TypeVar

Module = TypeVar("Module", bound=Hashable)  # a module's name or path


def import_cycles(graph: Mapping[Module, Set[Module]]) -> list[list[Module]]:
    """Every cycle a depth-first walk meets, each as a path back to where it starts (every
    back edge closes one); none when the graph is a DAG. Edges to modules that are not keys
    of ``graph`` are followed as leaves."""
    found: list[list[Module]] = []
    state: dict[Module, int] = {}  # 1: on the current path, 2: done
    path: list[Module] = []

    def visit(node: Module) -> None:
        state[node] = 1
        path.append(node)
        edges: Set[Module] = graph.get(node, frozenset())
        for nxt in sorted(edges, key=str):
            if state.get(nxt) == 1:
                found.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(graph, key=str):
        if node not in state:
            visit(node)
    return found
