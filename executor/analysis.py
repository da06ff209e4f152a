"""Static analysis of cells (host side): which names a cell defines and reads, and which
later cells a run, a delete or a move makes stale.

The runner tracks namespaces at run time; this module answers what only the source can
tell: the names a cell may bind and the names it reads, for the stale marks (and so for
reactive mode and run-stale) and for where a NameError's name is defined. Per notebook
kernel, `DependencyGraph` keeps those facts and analyses a cell again only when its source
changes. It is deliberately conservative where Python is dynamic: `exec`, `globals()[...]`
and `from m import *` are invisible to it.

Scopes follow Python's rules: module, class and comprehension bodies run at once, in order,
so a name is *read* there only if the cell has not bound it yet at that point; function and
lambda bodies run later, so a module-level name they use is read unless the cell binds it
anywhere. Class scopes are never visible to nested scopes.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import sqlglot
import sqlglot.errors
from sqlglot import exp

from executor.runner import transform_magics

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


@functools.lru_cache(maxsize=4096)
def _analyze(source: str) -> _Analyzer | None:
    try:
        tree = ast.parse(transform_magics(source, for_analysis=True))  # `%timeit f(x)` reads f, x
        analyzer = _Analyzer()
        analyzer.visit(tree)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None  # a cell that does not parse defines and reads nothing yet
    return analyzer


def names_defined(source: str) -> set[str]:
    """Names the cell's code may bind at module level when it runs (including names that its
    functions assign through `global`): an upper bound. What a run really bound is only
    known from the run (`if flag: x = 2` may bind nothing); see `names_bound_surely`."""
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


@functools.lru_cache(maxsize=4096)
def _surely(source: str) -> frozenset[str]:
    try:
        body = ast.parse(transform_magics(source, for_analysis=True)).body
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return frozenset()
    names: set[str] = set()
    todo = list(body)
    for stmt in todo:  # straight-line module code, and the bodies of `with` blocks
        if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(stmt.name)
        elif isinstance(stmt, ast.Assign):
            names.update(n.id for t in stmt.targets for n in _target_names(t))
        elif isinstance(stmt, ast.AugAssign | ast.AnnAssign) and (
            not isinstance(stmt, ast.AnnAssign) or stmt.value is not None
        ):
            names.update(n.id for n in _target_names(stmt.target))
        elif isinstance(stmt, ast.Import | ast.ImportFrom):
            names.update(_import_names(stmt))
        elif isinstance(stmt, ast.With | ast.AsyncWith):
            for item in stmt.items:
                if item.optional_vars is not None:
                    names.update(n.id for n in _target_names(item.optional_vars))
            todo.extend(stmt.body)
        elif isinstance(stmt, ast.Delete):
            names.difference_update(n.id for t in stmt.targets for n in _target_names(t))
    return frozenset(names)


def _target_names(target: ast.AST) -> list[ast.Name]:
    if isinstance(target, ast.Name):
        return [target]
    if isinstance(target, ast.Tuple | ast.List):
        return [n for t in target.elts for n in _target_names(t)]
    if isinstance(target, ast.Starred):
        return _target_names(target.value)
    return []


def names_bound_surely(source: str) -> set[str]:
    """Names a run of the cell binds whenever it gets to the end: a lower bound, for when
    what a run bound is not known (`names_defined` is the upper bound)."""
    return set(_surely(source))


@functools.lru_cache(maxsize=4096)
def _sql_tables(source: str) -> frozenset[str]:
    try:
        statements = sqlglot.parse(source, read="duckdb")
    except (sqlglot.errors.SqlglotError, RecursionError, ValueError):
        return frozenset()
    tables: set[str] = set()
    created: set[str] = set()  # tables and views an earlier statement of the cell made
    for statement in statements:
        if statement is None:
            continue
        ctes = {cte.alias_or_name.lower() for cte in statement.find_all(exp.CTE)}
        for table in statement.find_all(exp.Table):
            if not isinstance(table.this, exp.Identifier) or table.catalog:
                continue  # read_csv(...) and other table functions; attached databases
            if table.db and table.db.lower() != "main":
                continue
            name = table.name
            if name.lower() not in ctes | created and name.isidentifier():
                tables.add(name)
        if isinstance(statement, exp.Create) and isinstance(statement.this, exp.Table | exp.Schema):
            target = statement.this.find(exp.Table)
            if target is not None:
                created.add(target.name.lower())
                tables.discard(target.name)  # its own name, as written in CREATE
    return frozenset(tables)


def names_read_sql(source: str) -> set[str]:
    """Tables a SQL cell reads by name, from duckdb SQL parsed by sqlglot (the names visible
    Python tables are registered under). Common table expressions, tables the cell creates
    itself and table functions (`read_csv('x.csv')`) are not reads. SQL names are case
    insensitive: compare with `str.lower`."""
    return set(_sql_tables(source))


def stale_cells(
    order: Sequence[str],
    ran: str,
    defined: set[str],
    reads: Mapping[str, set[str]],
    defines: Mapping[str, set[str]] | None = None,
    binds: Mapping[str, set[str]] | None = None,
) -> list[str]:
    """Cells after `ran`, in notebook order, that read a name whose binding by `ran` changed
    (`defined`: the names of both the new and the previous run, or just those whose object
    changed), transitively.

    `defines` (cell id -> names_defined, an upper bound) carries the change on: a stale cell
    may rebind any of its names. `binds` (cell id -> names its last run really bound, or
    `names_bound_surely`) stops it: a cell below that bound the name itself, and is not stale,
    hides the change from the cells below it. A name a cell might bind but did not
    (`if flag: x = 2`) hides nothing.
    """
    if ran not in order:
        return []
    changed = set(defined)
    stale: list[str] = []
    for cell in order[order.index(ran) + 1 :]:
        if reads.get(cell, set()) & changed:
            stale.append(cell)
            changed |= (defines or {}).get(cell, set()) | (binds or {}).get(cell, set())
        else:
            changed -= (binds or {}).get(cell, set())
    return stale


def _providers(
    order: Sequence[str], binds: Mapping[str, set[str]], reads: Mapping[str, set[str]]
) -> dict[str, dict[str, str | None]]:
    """For each cell, which cell above it provides each name it reads (None: no cell)."""
    nearest: dict[str, str] = {}
    out: dict[str, dict[str, str | None]] = {}
    for cell in order:
        out[cell] = {name: nearest.get(name) for name in reads.get(cell, ())}
        for name in binds.get(cell, ()):
            nearest[name] = cell
    return out


def stale_after_change(
    order: Sequence[str],
    reads: Mapping[str, set[str]],
    defines: Mapping[str, set[str]],
    binds: Mapping[str, set[str]],
    *,
    before_order: Sequence[str],
    before_binds: Mapping[str, set[str]],
    rebound: Mapping[str, set[str]] | None = None,
) -> list[str]:
    """Cells (in `order`) whose visible names changed, and, transitively, the cells that read
    a name a stale cell may rebind: the general form, for runs, deletes and moves.

    A cell's visible name `n` is the binding of the nearest cell above it whose namespace
    holds `n`. It changed if that cell is another one now (a cell above was deleted, moved,
    or bound or dropped `n` in a run) or if the same cell bound `n` to another object
    (`rebound`: cell id -> such names). Cells not in `before_order` (new ones) never ran.
    """
    old = _providers(before_order, before_binds, reads)
    new = _providers(order, binds, reads)
    rebound = rebound or {}
    stale: list[str] = []
    tainted: set[str] = set()  # names a stale cell above may rebind when it runs again
    for cell in order:
        names = reads.get(cell, set())
        was, now = old.get(cell), new[cell]
        direct = was is not None and any(
            was.get(n) != (p := now.get(n)) or (p is not None and n in rebound.get(p, ()))
            for n in names
        )
        if direct or names & tainted:
            stale.append(cell)
            tainted |= defines.get(cell, set()) | binds.get(cell, set())
        else:
            tainted -= binds.get(cell, set())
    return stale


@dataclass(frozen=True, slots=True)
class CodeCell:
    """What the analysis needs of a code cell (its source as it is now)."""

    id: str
    source: str
    language: str = "python"
    output_name: str | None = None

    def defines(self) -> set[str]:
        if self.language == "sql":
            return {self.output_name or "_sql"}
        return names_defined(self.source)


@dataclass(frozen=True, slots=True)
class CellFacts:
    """What the analysis found in one version of a cell."""

    cell: CodeCell
    defines: frozenset[str]  # names its code may bind (an upper bound)
    reads: frozenset[str]  # names it reads; for SQL, the tables as written


def _facts(cell: CodeCell) -> CellFacts:
    if cell.language == "sql":
        reads = _sql_tables(cell.source)
    else:
        reads = frozenset(names_read(cell.source))
    return CellFacts(cell, frozenset(cell.defines()), reads)


class DependencyGraph:
    """Which names each code cell of a notebook defines and reads, kept current cell by
    cell: `update` analyses a cell again only when its source (or language, or SQL output
    name) changed since it last saw it, so a run costs the analysis of the cells edited
    since the last one, not of every cell.

    >>> graph = DependencyGraph()
    >>> graph.update(cells)   # the ids of the cells analysed (new or changed)
    >>> reads, defines = graph.edges(bound)
    """

    def __init__(self) -> None:
        self._facts: dict[str, CellFacts] = {}
        self._order: list[str] = []

    def update(self, cells: Sequence[CodeCell]) -> list[str]:
        """Bring the graph to `cells` (the code cells, in order); returns the ids analysed."""
        analysed = []
        facts: dict[str, CellFacts] = {}
        for cell in cells:
            known = self._facts.get(cell.id)
            if known is None or known.cell != cell:
                known = _facts(cell)
                analysed.append(cell.id)
            facts[cell.id] = known
        self._facts = facts
        self._order = [c.id for c in cells]
        return analysed

    def facts(self, cell_id: str) -> CellFacts | None:
        return self._facts.get(cell_id)

    def edges(
        self, bound: Mapping[str, set[str]]
    ) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
        """(cell id -> names it reads, cell id -> names it may define), for the cells of the
        last `update`. A SQL cell's tables are matched to the names known (defined, or bound
        by a run: `bound`) case-insensitively, as duckdb does."""
        defines = {c: set(f.defines) for c, f in self._facts.items()}
        reads = {c: set(f.reads) for c, f in self._facts.items() if f.cell.language != "sql"}
        sql = [f for f in self._facts.values() if f.cell.language == "sql"]
        if sql:
            known = set().union(*defines.values(), *bound.values())
            by_lower: dict[str, set[str]] = {}
            for name in known:
                by_lower.setdefault(name.lower(), set()).add(name)
            for f in sql:
                reads[f.cell.id] = {n for t in f.reads for n in by_lower.get(t.lower(), {t})}
        return reads, defines


class KernelNamespaces:
    """The host's mirror of one kernel's namespaces: the names each cell's last run bound
    there, and the order of the code cells they were bound in. It answers which cells
    became stale after a run, a delete or a move; runs, and the kernel itself, are
    elsewhere.

    >>> ns = KernelNamespaces()
    >>> stale, gone = ns.cells_changed(cells)   # before a run, and when cells move
    >>> stale = ns.ran(cells, cell_id, done["defined"], done["changed"])
    """

    def __init__(self) -> None:
        self.bound: dict[str, set[str]] = {}
        self.order: list[str] = []
        self.graph = DependencyGraph()

    def _graph(self, cells: Sequence[CodeCell]) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
        self.graph.update(cells)
        return self.graph.edges(self.bound)

    def cells_changed(self, cells: Sequence[CodeCell]) -> tuple[list[str], list[str]]:
        """Cells were added, deleted or moved: (cells now stale, deleted cells whose
        namespaces the kernel must forget)."""
        order = [c.id for c in cells]
        gone = [c for c in self.bound if c not in order]
        if order == self.order and not gone:
            return [], []
        before_order, before = self.order, dict(self.bound)
        for cell in gone:
            del self.bound[cell]
        self.order = order
        reads, defines = self._graph(cells)
        stale = stale_after_change(
            order, reads, defines, self.bound, before_order=before_order, before_binds=before
        )
        return stale, gone

    def ran(
        self,
        cells: Sequence[CodeCell],
        cell_id: str,
        defined: Iterable[str],
        changed: Iterable[str] | None = None,
    ) -> list[str]:
        """Cell `cell_id` ran (successfully or not) and its namespace is now `defined`;
        `changed` lists the names whose binding differs from its previous run's (None: all
        of the old and the new names). Returns the cells now stale, in notebook order. Call
        `cells_changed` before a run (and after, for cells moved while it ran)."""
        before = dict(self.bound)
        new = set(defined)
        old = self.bound.get(cell_id, set())
        self.bound[cell_id] = new
        rebound = {cell_id: old | new if changed is None else set(changed)}
        reads, defines = self._graph(cells)
        order = self.order if cell_id in self.order else [c.id for c in cells]
        stale = stale_after_change(
            order,
            reads,
            defines,
            self.bound,
            before_order=order,
            before_binds=before,
            rebound=rebound,
        )
        return stale

    def forget(self, cell_ids: Iterable[str]) -> None:
        for cell in cell_ids:
            self.bound.pop(cell, None)
