"""The web client's modules (web/src/**/*.js) import each other without a cycle.

A cycle among ES modules is legal but leaves one of them half-initialised while the other
runs (a `const` read before its module has run throws), and it means no module in it can be
understood alone. Dynamic `import('./x.js')` counts as an edge too: a page the router loads
later still depends on the router if it imports it. Only this repository's modules count
(relative specifiers); packages and stylesheets do not. Imports in comments (JSDoc
`import('./x.js').Type`) are types, not edges. No browser, build or Node needed.
"""

from __future__ import annotations

import re
from pathlib import Path

from tests.support.import_graph import import_cycles

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "web" / "src"

# `import x from '...'`, `import { a, b } from '...'` (over several lines), `export * from`
_FROM = re.compile(r"^\s*(?:import|export)\b[^'\"`;]*?\bfrom\s*(['\"])([^'\"]+)\1", re.MULTILINE)
# `import '...'` (for its effects)
_BARE = re.compile(r"^\s*import\s*(['\"])([^'\"]+)\1", re.MULTILINE)
# `import('...')` anywhere in the code
_DYNAMIC = re.compile(r"\bimport\s*\(\s*(['\"])([^'\"]+)\1\s*\)")


def without_comments(source: str) -> str:
    """The source with // and /* */ comments blanked out; strings and escapes kept.

    Good enough for import lines: a backslash escapes the next character (in strings and in
    regular-expression literals), and a quote opens a string only outside comments.
    """
    out: list[str] = []
    i, n = 0, len(source)
    quote = ""
    while i < n:
        c = source[i]
        if c == "\\":
            out.append(source[i : i + 2])
            i += 2
        elif quote:
            out.append(c)
            if c == quote:
                quote = ""
            i += 1
        elif c in "'\"`":
            quote = c
            out.append(c)
            i += 1
        elif source.startswith("//", i):
            end = source.find("\n", i)
            i = n if end < 0 else end
        elif source.startswith("/*", i):
            end = source.find("*/", i + 2)
            i = n if end < 0 else end + 2
            out.append(" ")
        else:
            out.append(c)
            i += 1
    return "".join(out)


def local_imports(path: Path) -> set[Path]:
    """The web/src modules `path` imports, statically or dynamically."""
    code = without_comments(path.read_text())
    found = set()
    for match in (m for pattern in (_FROM, _BARE, _DYNAMIC) for m in pattern.finditer(code)):
        specifier = match.group(2)
        if not specifier.startswith((".", "/")) or not specifier.endswith(".js"):
            continue  # a package (yjs, @codemirror/...) or a stylesheet
        target = (path.parent / specifier).resolve()
        assert target.is_file(), f"{path.relative_to(ROOT)} imports {specifier}: no such module"
        found.add(target)
    return found


def test_the_parser_sees_every_kind_of_import(tmp_path: Path) -> None:
    for name in ("a", "b", "c", "d", "e", "f"):
        (tmp_path / f"{name}.js").write_text("")
    (tmp_path / "main.js").write_text(
        "import { x,\n  y } from './a.js'\n"
        "import './b.js'\n"
        'export * from "./c.js"\n'
        "const page = await import('./d.js')\n"
        "// import { z } from './e.js'\n"
        "/** @param {import('./f.js').F} f */\n"
        "const re = /https?:\\/\\//; import('./e.js')\n"
        "import 'yjs'\nimport './style.css'\n"
    )
    names = {p.name for p in local_imports(tmp_path / "main.js")}
    assert names == {"a.js", "b.js", "c.js", "d.js", "e.js"}
    graph = {tmp_path / "a.js": {tmp_path / "b.js"}, tmp_path / "b.js": {tmp_path / "a.js"}}
    assert import_cycles(graph) == [[tmp_path / "a.js", tmp_path / "b.js", tmp_path / "a.js"]]


def test_web_client_modules_import_without_cycles() -> None:
    modules = sorted(SRC.rglob("*.js"))
    assert len(modules) > 20, f"found only {len(modules)} modules under {SRC}"
    graph = {module: local_imports(module) for module in modules}
    assert sum(len(edges) for edges in graph.values()) > 50, "the parser found too few imports"
    found = import_cycles(graph)
    assert not found, "import cycles in web/src (break them by passing the dependency in): " + (
        "; ".join(" -> ".join(str(p.relative_to(SRC)) for p in c) for c in found)
    )
