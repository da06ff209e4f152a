"""Static analysis of cells (host side): which names a cell defines and reads, and which
later cells a run makes stale.

The runner tracks namespaces at run time; this module answers the questions the host must
answer before running anything (reactive mode, the "stale" badge, the assistant's context).
It is deliberately conservative where Python is dynamic: `exec`, `globals()[...]` and
`from m import *` are invisible to it.

Scopes follow Python's rules: module, class and comprehension bodies run at once, in order,
so a name is *read* there only if the cell has not bound it yet at that point; function and
lambda bodies run later, so a module-level name they use is read unless the cell binds it
anywhere. Class scopes are never visible to nested scopes.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

_COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)
_FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)


@dataclass
class _Scope:
    kind: str  # "module" | "class" | "function" | "comprehension"
    parent: _Scope | None
    bound: set[str] = field(default_factory=set)
    globals: set[str] = field(default_factory=set)  # `global` declarations (functions)


def _function_locals(node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> _Scope:
    """A function's locals are decided at compile time: its parameters and every name it
    binds anywhere in its body, minus `global`/`nonlocal` declarations."""
    scope = _Scope("function", None)
    args = node.args
    params = [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]
    scope.bound.update(a.arg for a in params if a is not None)
    declared_nonlocal: set[str] = set()
    body: list[ast.AST] = [node.body] if isinstance(node, ast.Lambda) else list(node.body)
    while body:
        n = body.pop()
        if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            scope.bound.add(n.name)  # the nested body is its own scope
            continue
        if isinstance(n, ast.Lambda):
            continue
        if isinstance(n, _COMPREHENSIONS):  # only a walrus binds in the function
            scope.bound.update(w.target.id for w in ast.walk(n) if isinstance(w, ast.NamedExpr))
            continue
        if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store | ast.Del):
            scope.bound.add(n.id)
        elif isinstance(n, ast.Import | ast.ImportFrom):
            scope.bound.update(_import_names(n))
        elif isinstance(n, ast.ExceptHandler | ast.MatchAs | ast.MatchStar) and n.name:
            scope.bound.add(n.name)
        elif isinstance(n, ast.MatchMapping) and n.rest:
            scope.bound.add(n.rest)
        elif isinstance(n, ast.Global):
            scope.globals.update(n.names)
        elif isinstance(n, ast.Nonlocal):
            declared_nonlocal.update(n.names)
        body.extend(ast.iter_child_nodes(n))
    scope.bound -= scope.globals | declared_nonlocal
    return scope


def _import_names(node: ast.Import | ast.ImportFrom) -> Iterable[str]:
    for alias in node.names:
        if alias.name != "*":  # a star import binds names we cannot know
            yield alias.asname or alias.name.split(".")[0]


class _Analyzer(ast.NodeVisitor):
    def __init__(self) -> None:
        self.module = _Scope("module", None)
        self.scope = self.module
        self.reads: set[str] = set()
        self.deferred: set[str] = set()  # module names used by code that runs later
        self.global_stores: set[str] = set()  # `global x; x = ...` inside functions

    # -- resolution
    def _load(self, name: str) -> None:
        scope: _Scope | None = self.scope
        deferred = False
        first = True
        while scope is not None:
            if scope.kind == "class" and not first:
                scope = scope.parent  # class bodies are invisible to nested scopes
                continue
            if scope.kind == "function":
                if name in scope.globals:
                    self.deferred.add(name)
                    return
                if name in scope.bound:
                    return
                deferred = True
            elif scope.kind == "module":
                if deferred:
                    self.deferred.add(name)
                elif name not in scope.bound:
                    self.reads.add(name)
                return
            elif name in scope.bound:
                return
            scope, first = scope.parent, False

    def _store(self, name: str, scope: _Scope | None = None) -> None:
        scope = scope or self.scope
        if scope.kind == "function":
            if name in scope.globals:
                self.global_stores.add(name)
            return  # already among its precomputed locals
        scope.bound.add(name)

    def _walrus_scope(self) -> _Scope:
        scope = self.scope
        while scope.kind == "comprehension" and scope.parent is not None:
            scope = scope.parent
        return scope

    def _push(self, scope: _Scope) -> None:
        scope.parent = self.scope
        self.scope = scope

    def _pop(self) -> None:
        assert self.scope.parent is not None
        self.scope = self.scope.parent

    # -- names
    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Load):
            self._load(node.id)
        elif isinstance(node.ctx, ast.Store):
            self._store(node.id)
        else:  # del x: needs x to exist, then x is gone
            self._load(node.id)
            if self.scope.kind != "function":
                self.scope.bound.discard(node.id)

    def visit_Import(self, node: ast.Import) -> None:
        for name in _import_names(node):
            self._store(name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        for name in _import_names(node):
            self._store(name)

    # -- statements whose evaluation order differs from their field order
    def visit_Assign(self, node: ast.Assign) -> None:
        self.visit(node.value)
        for target in node.targets:
            self.visit(target)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        if isinstance(node.target, ast.Name):
            self._load(node.target.id)  # x += 1 reads x first
            self.visit(node.value)
            self._store(node.target.id)
        else:
            self.visit(node.target)
            self.visit(node.value)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        self.visit(node.annotation)
        if node.value is not None:  # a bare `x: int` binds nothing
            self.visit(node.value)
            self.visit(node.target)
        elif not isinstance(node.target, ast.Name):
            self.visit(node.target)

    def visit_For(self, node: ast.For | ast.AsyncFor) -> None:
        self.visit(node.iter)
        self.visit(node.target)
        for stmt in [*node.body, *node.orelse]:
            self.visit(stmt)

    visit_AsyncFor = visit_For

    def visit_NamedExpr(self, node: ast.NamedExpr) -> None:
        self.visit(node.value)
        self._store(node.target.id, self._walrus_scope())

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        if node.type is not None:
            self.visit(node.type)
        if node.name:
            self._store(node.name)
        for stmt in node.body:
            self.visit(stmt)
        if node.name and self.scope.kind != "function":
            self.scope.bound.discard(node.name)  # Python deletes it when the handler ends

    def visit_MatchAs(self, node: ast.MatchAs) -> None:
        if node.pattern is not None:
            self.visit(node.pattern)
        if node.name:
            self._store(node.name)

    def visit_MatchStar(self, node: ast.MatchStar) -> None:
        if node.name:
            self._store(node.name)

    def visit_MatchMapping(self, node: ast.MatchMapping) -> None:
        self.generic_visit(node)
        if node.rest:
            self._store(node.rest)

    # -- scopes
    def _visit_comprehension(
        self, node: ast.ListComp | ast.SetComp | ast.DictComp | ast.GeneratorExp
    ) -> None:
        self.visit(node.generators[0].iter)  # evaluated in the enclosing scope
        self._push(_Scope("comprehension", None))
        for i, gen in enumerate(node.generators):
            if i:
                self.visit(gen.iter)
            self.visit(gen.target)
            for cond in gen.ifs:
                self.visit(cond)
        if isinstance(node, ast.DictComp):
            self.visit(node.key)
            self.visit(node.value)
        else:
            self.visit(node.elt)
        self._pop()

    visit_ListComp = visit_SetComp = visit_DictComp = visit_GeneratorExp = _visit_comprehension

    def _visit_function(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> None:
        # Decorators, defaults and annotations run now, in the enclosing scope.
        if not isinstance(node, ast.Lambda):
            for expr in node.decorator_list:
                self.visit(expr)
        args = node.args
        for default in [*args.defaults, *args.kw_defaults]:
            if default is not None:
                self.visit(default)
        if not isinstance(node, ast.Lambda):
            params = [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]
            for a in params:
                if a is not None and a.annotation is not None:
                    self.visit(a.annotation)
            if node.returns is not None:
                self.visit(node.returns)
            self._store(node.name)
        self._push(_function_locals(node))
        for stmt in [node.body] if isinstance(node, ast.Lambda) else node.body:
            self.visit(stmt)
        self._pop()

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _visit_function

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        for expr in [*node.decorator_list, *node.bases, *node.keywords]:
            self.visit(expr)
        self._push(_Scope("class", None))
        for stmt in node.body:
            self.visit(stmt)
        self._pop()
        self._store(node.name)

    def visit_Global(self, node: ast.Global) -> None:
        pass  # handled by _function_locals; a no-op at module level

    def visit_Nonlocal(self, node: ast.Nonlocal) -> None:
        pass


def _analyze(source: str) -> _Analyzer | None:
    try:
        tree = ast.parse(source)
        analyzer = _Analyzer()
        analyzer.visit(tree)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None  # a cell that does not parse defines and reads nothing yet
    return analyzer


def names_defined(source: str) -> set[str]:
    """Names bound at module level when the cell's code has run (including names that its
    functions assign through `global`)."""
    a = _analyze(source)
    return set() if a is None else a.module.bound | a.global_stores


def names_read(source: str) -> set[str]:
    """Free names the cell reads from the cells above it: loads of module-level names not
    bound by the cell before the load, and module-level names its functions use that the
    cell never binds. Builtins such as `print` are included: a cell above may shadow them,
    so filter with `dir(builtins)` where that is wanted."""
    a = _analyze(source)
    if a is None:
        return set()
    return a.reads | (a.deferred - a.module.bound - a.global_stores)


def stale_cells(
    order: Sequence[str],
    ran: str,
    defined: set[str],
    reads: Mapping[str, set[str]],
    defines: Mapping[str, set[str]] | None = None,
) -> list[str]:
    """Cells after `ran`, in notebook order, that read a name `ran` defines, transitively.

    `defined` should cover the names of both the new and the previous run of `ran` (a name it
    no longer binds changes too). `defines` (cell id -> names_defined) carries the change on:
    a stale cell will rebind its names, and a cell that rebinds a name without reading it
    hides the change from the cells below it. Without `defines` only direct readers count.
    """
    if ran not in order:
        return []
    changed = set(defined)
    stale: list[str] = []
    for cell in order[order.index(ran) + 1 :]:
        own = (defines or {}).get(cell, set())
        if reads.get(cell, set()) & changed:
            stale.append(cell)
            changed |= own
        else:
            changed -= own
    return stale
