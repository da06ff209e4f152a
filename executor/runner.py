"""Weft's in-kernel runner: executes notebook cells with per-cell namespaces.

Copied alone into the runtime image as /opt/weft/runner.py and started as
``python3 -u /opt/weft/runner.py``. It speaks JSON lines: requests on stdin, messages on
the process's original stdout (see docs/runner-protocol.md). Standard library only at import
time; pandas, matplotlib, duckdb and pyarrow are used only when a cell brings them in.

There is no global namespace (no hidden state): a cell runs in a fresh dict built from the
namespaces of the cells the host says are visible above it, and afterwards its own namespace
is exactly the names its code bound.
"""

from __future__ import annotations

import os
import sys

# Run as a script, Python puts this file's directory first on sys.path. In the repository
# that is the `executor` package, whose modules (queue.py, ...) would shadow the standard
# library for us and for user code; in the image it is /opt/weft, of no use to cells either.
if sys.path and os.path.realpath(sys.path[0]) == os.path.dirname(os.path.realpath(__file__)):
    del sys.path[0]

import ast
import base64
import builtins
import codecs
import importlib
import importlib.machinery
import io
import json
import linecache
import math
import platform
import queue
import reprlib
import signal
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any, TextIO, cast

if TYPE_CHECKING:
    # For annotations only: importing importlib.abc pulls in importlib.resources, tempfile,
    # shutil and more, ~35 ms of every kernel's start (the import hook below is duck-typed).
    import importlib.abc

FLUSH_INTERVAL = 0.05  # a slow printer's line reaches the host within ~50 ms
FLUSH_BYTES = 8192  # a tight printer sends 8 KiB messages, not one per line
PLAIN_LIMIT = 10_000
SYMBOL_REPR_LIMIT = 200
# The host cuts bigger outputs and stops a kernel whose message passes its cap; cutting here
# first spares an honest cell's kernel (the host's limits are in the container's env).
OUTPUT_LIMIT = int(os.environ.get("WEFT_OUTPUT_MAX_BYTES") or 5_000_000)
SYMBOLS_LIMIT = 20_000  # symbols sent per cell; the host keeps fewer (WEFT_SYMBOLS_MAX_BYTES)
VEGA_LITE = "application/vnd.vegalite.v5+json"
CO_COROUTINE = 0x0080  # inspect.CO_COROUTINE, without importing inspect
# Written into our own capture pipes to learn that everything before it has been read.
SYNC_MARK = b"\x1e\x1fweft-sync\x1f\x1e"

Json = dict[str, Any]


# ---------------------------------------------------------------------------- protocol io


def _json_safe(value: Any, limit: int | None = None) -> Any:
    """What strict JSON parsers accept: NaN/inf/NaT/NA become null, numpy scalars their
    Python value, dates ISO strings, anything else its str (cut to `limit` if given)."""
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _json_safe(v, limit) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v, limit) for v in value]
    if type(value).__name__ in ("NaTType", "NAType"):
        return None
    if type(value).__module__ == "numpy" and hasattr(value, "item"):
        return _json_safe(value.item(), limit)
    text = value.isoformat() if hasattr(value, "isoformat") else value
    text = text if isinstance(text, str) else str(text)
    return text if limit is None else text[:limit]


def encode(msg: Json) -> bytes:
    try:
        text = json.dumps(msg, allow_nan=False, default=str)
    except (ValueError, TypeError, RecursionError):
        text = json.dumps(_json_safe(msg), allow_nan=False, default=str)
    return text.encode("ascii") + b"\n"  # ensure_ascii (default): lone surrogates stay legal


class ProtocolWriter:
    """Owns the protocol fd. Only this thread writes to it: signal handlers run in the main
    thread, so a KeyboardInterrupt can never cut a message in half."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        # Bounded: a host that stops reading slows the cell down instead of filling memory.
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=4096)
        self._thread = threading.Thread(target=self._loop, name="weft-out", daemon=True)
        self._thread.start()

    def put(self, data: bytes) -> None:
        self._queue.put(data)

    def close(self, timeout: float = 5.0) -> None:
        self._queue.put(None)
        self._thread.join(timeout)

    def _loop(self) -> None:
        while (data := self._queue.get()) is not None:
            view = memoryview(data)
            try:
                while view:
                    view = view[os.write(self._fd, view) :]
            except OSError:
                os._exit(1)  # the host is gone; nobody is left to report to


class Streams:
    """Coalesces stdout/stderr text into `stream` messages and orders every message."""

    def __init__(self, out: ProtocolWriter) -> None:
        self.out = out
        self.run_id: str | None = None
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._parts: list[tuple[str, list[str]]] = []  # lists: no quadratic concatenation
        self._size = 0
        threading.Thread(target=self._ticker, name="weft-flush", daemon=True).start()

    def write(self, name: str, text: str) -> None:
        if not text:
            return
        with self._lock:
            if self._parts and self._parts[-1][0] == name:
                self._parts[-1][1].append(text)
            else:
                self._parts.append((name, [text]))
            self._size += len(text)
            if self._size >= FLUSH_BYTES:
                self._flush_locked()
            else:
                self._wake.notify()

    def emit(self, msg: Json) -> None:
        """Send a non-stream message after any text written before it."""
        data = encode(msg)
        with self._lock:
            self._flush_locked()
            self.out.put(data)

    def set_run(self, run_id: str) -> None:
        with self._lock:
            self._flush_locked()  # late output of the previous run stays with that run
            self.run_id = run_id

    def flush(self) -> None:
        with self._lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        # Take the parts first: an interrupt mid-loop may lose text but never repeats it.
        parts, self._parts, self._size = self._parts, [], 0
        for name, chunks in parts:
            text = "".join(chunks)
            self.out.put(
                encode({"type": "stream", "run_id": self.run_id, "name": name, "text": text})
            )

    def _ticker(self) -> None:
        while True:
            with self._lock:
                while not self._parts:
                    self._wake.wait()
            time.sleep(FLUSH_INTERVAL)
            with self._lock:
                self._flush_locked()


# ---------------------------------------------------------------------------- capture


class StreamWriter(io.TextIOBase):
    """sys.stdout / sys.stderr: Python-level writes go straight to the coalescer."""

    def __init__(self, streams: Streams, name: str, fd: int) -> None:
        self._streams = streams
        self._name = name
        self._fd = fd
        # Bytes written to sys.stdout.buffer go to the fd, and so through its capture pipe.
        self.buffer = open(fd, "wb", buffering=0, closefd=False)

    def write(self, s: str) -> int:
        if not isinstance(s, str):
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        self._streams.write(self._name, s)
        return len(s)

    encoding = "utf-8"  # shadows TextIOBase's None: some libraries check it

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:  # code that writes to the fd directly lands in the pipe below
        return self._fd


class FdCapture:
    """Points fd 1 or 2 at a pipe read by a thread, so C extensions and subprocesses are
    captured as stream text and can never write into the protocol stream."""

    def __init__(self, streams: Streams, name: str, fd: int) -> None:
        self._streams = streams
        self._name = name
        read_end, self._write_end = os.pipe()  # both non-inheritable
        os.dup2(self._write_end, fd)  # fd itself is inheritable: subprocesses write here
        self._read_end = read_end
        self._cond = threading.Condition()
        self._sent = 0
        self._seen = 0
        self._sync_lock = threading.Lock()
        threading.Thread(target=self._pump, name=f"weft-{name}", daemon=True).start()

    def sync(self, timeout: float = 2.0) -> None:
        """Return once everything written to the fd before this call has been passed on."""
        with self._sync_lock:
            try:
                os.write(self._write_end, SYNC_MARK)  # our own end: user dup2s cannot divert it
            except OSError:
                return
            self._sent += 1
            target = self._sent
            with self._cond:
                self._cond.wait_for(lambda: self._seen >= target, timeout)

    def _pump(self) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        pending = b""
        while chunk := os.read(self._read_end, 65536):
            pending += chunk
            while (i := pending.find(SYNC_MARK)) >= 0:
                self._streams.write(self._name, decoder.decode(pending[:i]))
                pending = pending[i + len(SYNC_MARK) :]
                with self._cond:
                    self._seen += 1
                    self._cond.notify_all()
            keep = next(
                (k for k in range(len(SYNC_MARK) - 1, 0, -1) if pending.endswith(SYNC_MARK[:k])), 0
            )  # maybe half a mark
            cut = len(pending) - keep
            self._streams.write(self._name, decoder.decode(pending[:cut]))
            pending = pending[cut:]


_libc: Any = None


def _flush_c_stdio() -> None:
    """C code's printf output sits in libc's buffer (fd 1 is a pipe): push it out."""
    global _libc
    try:
        if _libc is None:
            import ctypes

            _libc = ctypes.CDLL(None)
        _libc.fflush(None)
    except Exception:
        pass


# ---------------------------------------------------------------------------- display


def _safe_repr(obj: Any, limit: int) -> str:
    try:
        text = repr(obj)
    except Exception as exc:
        text = f"<unrepresentable {type(obj).__name__}: {type(exc).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _short_repr(obj: Any) -> str:
    # reprlib bounds the work for big containers; other objects are truncated after repr.
    r = reprlib.Repr()
    r.maxstring = r.maxother = SYMBOL_REPR_LIMIT
    try:
        text = r.repr(obj)
    except Exception:
        text = _safe_repr(obj, SYMBOL_REPR_LIMIT)
    return text if len(text) <= SYMBOL_REPR_LIMIT else text[: SYMBOL_REPR_LIMIT - 3] + "..."


def _method(obj: Any, name: str) -> Callable[..., Any] | None:
    if isinstance(obj, type):  # a class's _repr_html_ is an unbound function
        return None
    try:
        method = getattr(obj, name, None)
    except Exception:
        return None
    return method if callable(method) else None


def _is_figure(obj: Any) -> bool:
    figure = sys.modules.get("matplotlib.figure")
    return figure is not None and isinstance(obj, figure.Figure)


def _figure_png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


_REPR_METHODS = [
    ("text/html", "_repr_html_"),
    ("image/png", "_repr_png_"),
    ("image/jpeg", "_repr_jpeg_"),
    ("image/svg+xml", "_repr_svg_"),
    ("text/markdown", "_repr_markdown_"),
    ("text/latex", "_repr_latex_"),
    ("application/json", "_repr_json_"),
]


def _mime_value(mime: str, value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode("ascii")
    if mime == "application/json" or mime.endswith("+json"):
        return _json_safe(value)
    return value if isinstance(value, str) else str(value)


def mime_bundle(obj: Any) -> tuple[Json, Json]:
    """IPython's display protocol, the parts a notebook backend needs."""
    data: Json = {}
    meta: Json = {}
    if method := _method(obj, "_repr_mimebundle_"):
        try:
            out = method(include=None, exclude=None)
        except Exception:
            out = None
        if isinstance(out, tuple) and len(out) == 2:
            out, extra = out
            meta.update(extra if isinstance(extra, dict) else {})
        if isinstance(out, dict):
            data.update(out)
    if _is_figure(obj) and "image/png" not in data:
        data["image/png"] = _figure_png(obj)
    for mime, name in _REPR_METHODS:
        if mime in data or not (method := _method(obj, name)):
            continue
        try:
            value = method()
        except Exception:
            continue
        if isinstance(value, tuple) and len(value) == 2:  # (data, metadata), as IPython allows
            value, extra = value
            if isinstance(extra, dict):
                meta[mime] = extra
        if value is not None:
            data[mime] = value
    if isinstance(obj, dict) and "vega-lite" in str(obj.get("$schema", "")):
        data.setdefault(VEGA_LITE, obj)
    plain = data.get("text/plain")
    data["text/plain"] = _safe_repr(obj, PLAIN_LIMIT) if plain is None else str(plain)
    if len(data["text/plain"]) > PLAIN_LIMIT:
        data["text/plain"] = data["text/plain"][: PLAIN_LIMIT - 3] + "..."
    add_frame_output(obj, data)  # a DataFrame's grid (kernel requests, below)
    return {k: _mime_value(k, v) for k, v in data.items()}, _json_safe(meta)


class _AfterImport:  # an importlib.abc.MetaPathFinder and Loader, by its methods
    """Adjusts a few modules right after a cell first imports them: plt.show() displays and
    closes the open figures (as Jupyter's inline backend does) instead of warning under Agg,
    IPython's display()/clear_output() talk to this runner (IPython without a shell
    would print reprs instead), so HTML, Markdown, Image and JSON objects become outputs,
    and altair charts are sent as Vega-Lite specs."""

    def __init__(self, patches: dict[str, Callable[[ModuleType], None]]) -> None:
        self._patches = patches
        self._real: dict[str, importlib.abc.Loader] = {}

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self._patches:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return None
        self._real[fullname] = spec.loader
        spec.loader = cast("importlib.abc.Loader", self)
        return spec

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        real = self._real.get(spec.name)
        return real.create_module(spec) if real else None

    def exec_module(self, module: ModuleType) -> None:
        self._real[module.__name__].exec_module(module)
        self._patches[module.__name__](module)


def import_patches(runner: Runner) -> dict[str, Callable[[ModuleType], None]]:
    def pyplot(module: ModuleType) -> None:
        setattr(module, "show", lambda *args, **kwargs: runner.show_figures())  # noqa: B010

    def ipython_display(module: ModuleType) -> None:
        def display(*objs: Any, **kwargs: Any) -> None:
            runner.display(*objs, raw=bool(kwargs.get("raw")), metadata=kwargs.get("metadata"))

        setattr(module, "display", display)  # noqa: B010
        setattr(module, "update_display", display)  # noqa: B010
        setattr(module, "clear_output", lambda *args, **kwargs: None)  # noqa: B010

    def altair(module: ModuleType) -> None:
        # Its default renderer writes HTML that loads Vega from a CDN (which an output frame
        # may not); the mimetype one sends the Vega-Lite spec, drawn by the client's Vega.
        try:
            module.renderers.enable("mimetype")
        except Exception:
            pass

    return {
        "matplotlib.pyplot": pyplot,
        "IPython.core.display_functions": ipython_display,
        "altair": altair,
    }


# ---------------------------------------------------------------------------- magics

MAGIC_CALL = "__weft_magic__"  # in every run's builtins, like display
MAGICS_HELP = (
    "the magics here are %pip install, %pip list, %timeit, %%timeit, %time, %matplotlib, "
    "%%bash, %%sh and !command"
)


class UsageError(Exception):
    """A magic Weft does not have, or one used wrongly."""


def _magic_line(line: str) -> tuple[str, str, str] | None:
    """(indent, kind, argument) of a `%name args` or `!command` line, else None."""
    stripped = line.lstrip(" \t")
    indent = line[: len(line) - len(stripped)]
    text = stripped.rstrip("\r\n")
    if text.startswith("!") and not text.startswith("!="):
        return indent, "!", text[1:].strip()
    if text.startswith("%") and not text.startswith("%%") and len(text) > 1:
        name, _, rest = text[1:].partition(" ")
        if name.isidentifier():
            return indent, name, rest.strip()
    return None


def transform_magics(code: str, *, for_analysis: bool = False) -> str:
    """IPython's line and cell magics as plain Python: `%timeit x` becomes
    `__weft_magic__('timeit', 'x')` (same line, same indentation), `!ls` the 'shell' magic,
    and a cell starting with `%%bash` one call with the cell's body. Only lines that start
    a statement count: a `%` continuing an expression in brackets, or a line inside a
    string, is left alone. With ``for_analysis`` (the host's static analysis), `%time X`
    and `%timeit X` become `X` itself, so the names X reads and binds are seen."""
    first = code.lstrip("\n")
    if first.startswith("%%"):
        header, _, body = first.partition("\n")
        name, _, args = header[2:].partition(" ")
        if for_analysis:
            return body if name == "timeit" else ""
        return f"{MAGIC_CALL}({'%%' + name!r}, {args.strip()!r}, {body!r})\n"
    lines = code.splitlines(keepends=True)
    found = {i: m for i, line in enumerate(lines) if (m := _magic_line(line)) is not None}
    if not found:
        return code
    replaced = list(lines)
    for i, (indent, kind, arg) in found.items():
        end = "\n" if lines[i].endswith("\n") else ""
        if for_analysis and kind in ("time", "timeit"):
            _options, statement = _timing_options(arg) if kind == "timeit" else ({}, arg)
            replaced[i] = f"{indent}{statement or 'None'}{end}"
        else:
            replaced[i] = f"{indent}{MAGIC_CALL}({kind!r}, {arg!r}){end}"
    starts = _statement_starts("".join(replaced))
    if starts is not None:
        for i in found:
            if i + 1 not in starts:  # inside a string or a bracket: not a magic after all
                replaced[i] = lines[i]
    return "".join(replaced)


def _statement_starts(code: str) -> set[int] | None:
    """Line numbers (1-based) where a statement starts, outside strings and brackets."""
    import tokenize

    starts: set[int] = set()
    depth = 0
    at_start = True
    try:
        for token in tokenize.generate_tokens(io.StringIO(code).readline):
            kind = token.type
            if kind in (tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT):
                at_start = True
                continue
            if kind in (tokenize.NL, tokenize.COMMENT, tokenize.ENCODING):
                if kind == tokenize.NL and depth == 0:
                    at_start = True
                continue
            if at_start and depth == 0:
                starts.add(token.start[0])
            at_start = False
            if kind == tokenize.OP and token.string in "([{":
                depth += 1
            elif kind == tokenize.OP and token.string in ")]}":
                depth = max(depth - 1, 0)
    except (tokenize.TokenError, SyntaxError, IndentationError):
        return None
    return starts


def _timing_options(arg: str) -> tuple[dict[str, int], str]:
    """`-n 100 -r 3 stmt` -> ({"n": 100, "r": 3}, "stmt")."""
    options: dict[str, int] = {}
    words = arg.split(" ")
    while len(words) >= 2 and words[0] in ("-n", "-r") and words[1].isdigit():
        options[words[0][1]] = int(words[1])
        words = words[2:]
    return options, " ".join(words).strip()


def _format_time(seconds: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6), ("ns", 1e-9)):
        if seconds >= scale or unit == "ns":
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds:.3g} s"


class Magics:
    """What `__weft_magic__(kind, argument[, body])` does in a running cell. The cell's own
    globals are its caller's: a magic sees exactly what the cell sees."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self.pip_note: str | None = None  # what %pip install prints (from the host)

    def __call__(self, kind: str, arg: str, body: str | None = None) -> Any:
        g = sys._getframe(1).f_globals
        if kind == "!":
            return self.shell(arg)
        if kind in ("%%bash", "%%sh"):
            return self.shell(body or "", shell=kind[2:])
        if kind in ("timeit", "%%timeit"):
            return self.timeit(arg, g, body)
        if kind == "time":
            return self.time(arg, g)
        if kind == "pip":
            return self.pip(arg)
        if kind == "matplotlib":
            return None  # figures always show inline here
        raise UsageError(f"%{kind.lstrip('%')} is not available in Weft: {MAGICS_HELP}")

    def shell(self, command: str, shell: str = "sh") -> Any:
        """Run in the kernel's container (no network, as the kernel); output is the cell's."""
        import subprocess

        self.runner._sync()
        process = subprocess.Popen([f"/bin/{shell}", "-c", command], stdin=subprocess.DEVNULL)
        try:
            code = process.wait()
        except KeyboardInterrupt:
            process.kill()
            process.wait()
            raise
        finally:
            self.runner._sync()
        return None if code == 0 else _ShellStatus(code)

    def timeit(self, arg: str, g: dict[str, Any], body: str | None) -> None:
        import statistics
        import timeit

        if body is not None:  # %%timeit [options] [setup statement]: the body is timed
            options, setup = _timing_options(arg)
            statement = body
        else:
            options, statement = _timing_options(arg)
            setup = "pass"
        if not statement.strip():
            raise UsageError("%timeit needs a statement to time, like: %timeit sum(range(100))")
        timer = timeit.Timer(statement, setup or "pass", globals=g)
        number = options.get("n")
        if number is None:
            number, _ = timer.autorange()
        repeat = options.get("r", 7)
        runs = [t / number for t in timer.repeat(repeat=repeat, number=number)]
        mean = statistics.fmean(runs)
        spread = statistics.pstdev(runs) if len(runs) > 1 else 0.0
        print(
            f"{_format_time(mean)} ± {_format_time(spread)} per loop (mean ± std. dev. of "
            f"{repeat} run{'s' * (repeat != 1)}, {number:,} loop{'s' * (number != 1)} each)"
        )

    def time(self, statement: str, g: dict[str, Any]) -> Any:
        started, cpu = time.perf_counter(), time.process_time()
        try:
            tree = ast.parse(statement, "<cell %time>", "eval")
            value = eval(compile(tree, "<cell %time>", "eval"), g)
        except SyntaxError:
            exec(compile(statement, "<cell %time>", "exec"), g)
            value = None
        wall, used = time.perf_counter() - started, time.process_time() - cpu
        print(f"CPU time: {_format_time(used)}\nWall time: {_format_time(wall)}")
        return value

    def pip(self, arg: str) -> None:
        words = arg.split()
        if words and words[0] == "install":
            print(self.pip_note or "This notebook's dependencies are installed by the server.")
            return
        if words and words[0] in ("list", "freeze"):
            import importlib.metadata

            found = sorted(
                (d.metadata["Name"] or "", d.version) for d in importlib.metadata.distributions()
            )
            sep = "==" if words[0] == "freeze" else " "
            print("\n".join(f"{name}{sep}{version}" for name, version in found if name))
            return
        raise UsageError(
            f"%pip {arg}: only %pip install, %pip list and %pip freeze are available; "
            "remove packages in the notebook's Configuration panel"
        )


class _ShellStatus(int):
    """A failed !command's exit status, shown as the cell's result like a shell would."""

    def __repr__(self) -> str:
        return f"exit status {int(self)}"


# ---------------------------------------------------------------------------- namespaces


def top_level_names(tree: ast.Module) -> set[str]:
    """Names a cell's code binds at module level, so that rebinding a visible name to the
    same object (`import os` twice, `x = x`) still counts as this cell's own."""
    names: set[str] = set()
    todo: list[ast.AST] = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
            continue  # their bodies are other scopes
        if isinstance(node, ast.Lambda):
            continue
        if isinstance(node, ast.ListComp | ast.SetComp | ast.DictComp | ast.GeneratorExp):
            names.update(
                n.target.id
                for n in ast.walk(node)  # only walrus leaks out
                if isinstance(n, ast.NamedExpr) and isinstance(n.target, ast.Name)
            )
            continue
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names.update((a.asname or a.name.split(".")[0]) for a in node.names if a.name != "*")
        elif isinstance(node, ast.MatchAs | ast.MatchStar) and node.name:
            names.add(node.name)
        todo.extend(ast.iter_child_nodes(node))
    return names


BOUND_MARK = "__weft_bound__"  # in every run's globals: records names the run really bound


def _store_names(target: ast.AST) -> set[str]:
    """Names an assignment target binds (`a, (b, *c) = ...`); attributes and items bind none."""
    if isinstance(target, ast.Name):
        return {target.id}
    if isinstance(target, ast.Tuple | ast.List):
        return set().union(*(_store_names(t) for t in target.elts))
    if isinstance(target, ast.Starred):
        return _store_names(target.value)
    return set()


def _pattern_names(pattern: ast.pattern) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(pattern):
        if isinstance(node, ast.MatchAs | ast.MatchStar) and node.name:
            names.add(node.name)
        elif isinstance(node, ast.MatchMapping) and node.rest:
            names.add(node.rest)
    return names


def _mark(names: set[str], where: ast.AST) -> ast.stmt:
    call = ast.Call(
        ast.Name(BOUND_MARK, ast.Load()),
        [ast.Constant(None), *map(ast.Constant, sorted(names))],
        [],
    )
    return ast.copy_location(ast.Expr(call), where)


class _WalrusMarker(ast.NodeTransformer):
    """`(x := v)` -> `__weft_bound__((x := v), 'x')` in one statement's own expressions (not
    in nested statements, which are marked on their own, nor in lambdas, another scope)."""

    def __init__(self, names: set[str], root: ast.AST) -> None:
        self.names = names
        self.root = root

    def visit(self, node: ast.AST) -> Any:
        if node is not self.root and isinstance(node, ast.stmt | ast.Lambda):
            return node
        return super().visit(node)

    def visit_NamedExpr(self, node: ast.NamedExpr) -> Any:
        self.generic_visit(node)
        if node.target.id not in self.names:
            return node
        call = ast.Call(ast.Name(BOUND_MARK, ast.Load()), [node, ast.Constant(node.target.id)], [])
        return ast.copy_location(call, node)


def mark_bindings(body: list[ast.stmt], names: set[str]) -> list[ast.stmt]:
    """Module-level code with a `__weft_bound__(...)` call after every place that binds one of
    `names` (the names a cell may bind that it can also see from above). Whether such a name
    is the cell's own cannot be told from the object afterwards: `if flag: x = 2` that did
    not run leaves the `x` from above, `x = x` or a second `import os` rebinds the same object.
    A cell defines a name only if its run bound it."""
    out: list[ast.stmt] = []
    for stmt in body:
        _WalrusMarker(names, stmt).visit(stmt)
        after: set[str] = set()
        if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            after = {stmt.name}
        elif isinstance(stmt, ast.Assign):
            after = set().union(*(_store_names(t) for t in stmt.targets))
        elif isinstance(stmt, ast.AugAssign) or (
            isinstance(stmt, ast.AnnAssign) and stmt.value is not None
        ):
            after = _store_names(stmt.target)
        elif isinstance(stmt, ast.Import | ast.ImportFrom):
            after = {(a.asname or a.name.split(".")[0]) for a in stmt.names if a.name != "*"}
        elif type(stmt).__name__ == "TypeAlias":  # 3.12: `type X = ...`
            after = _store_names(cast(Any, stmt).name)
        elif isinstance(stmt, ast.For | ast.AsyncFor):
            first = _store_names(stmt.target) & names
            stmt.body = [_mark(first, stmt)] * bool(first) + mark_bindings(stmt.body, names)
            stmt.orelse = mark_bindings(stmt.orelse, names)
        elif isinstance(stmt, ast.While | ast.If):
            stmt.body = mark_bindings(stmt.body, names)
            stmt.orelse = mark_bindings(stmt.orelse, names)
        elif isinstance(stmt, ast.With | ast.AsyncWith):
            bound = set().union(
                *(_store_names(i.optional_vars) for i in stmt.items if i.optional_vars)
            )
            first = bound & names
            stmt.body = [_mark(first, stmt)] * bool(first) + mark_bindings(stmt.body, names)
        elif isinstance(stmt, ast.Try | getattr(ast, "TryStar", ast.Try)):
            stmt.body = mark_bindings(stmt.body, names)
            for handler in stmt.handlers:  # `as e` is deleted when the handler ends
                handler.body = mark_bindings(handler.body, names)
            stmt.orelse = mark_bindings(stmt.orelse, names)
            stmt.finalbody = mark_bindings(stmt.finalbody, names)
        elif isinstance(stmt, ast.Match):
            for case in stmt.cases:
                first = _pattern_names(case.pattern) & names
                case.body = [_mark(first, case)] * bool(first) + mark_bindings(case.body, names)
        out.append(stmt)
        if after & names:
            out.append(_mark(after & names, stmt))
    return out


def _table_kind(value: Any) -> str | None:
    kind = (type(value).__module__.split(".")[0], type(value).__qualname__)
    return kind[0] if kind in (("pandas", "DataFrame"), ("pyarrow", "Table")) else None


def table_schema(value: Any) -> Json | None:
    kind = _table_kind(value)
    try:
        if kind == "pandas":
            columns = [{"name": str(c), "dtype": str(t)} for c, t in value.dtypes.items()]
            sample = [
                [_json_safe(v, SYMBOL_REPR_LIMIT) for v in row]
                for row in value.head(3).itertuples(index=False, name=None)
            ]
            return {"columns": columns, "rows": len(value), "sample": sample}
        if kind == "pyarrow":
            columns = [{"name": f.name, "dtype": str(f.type)} for f in value.schema]
            head = value.slice(0, 3)
            sample = [
                [_json_safe(col[i].as_py(), SYMBOL_REPR_LIMIT) for col in head.columns]
                for i in range(head.num_rows)
            ]
            return {"columns": columns, "rows": value.num_rows, "sample": sample}
    except Exception:
        return None
    return None


def symbols(namespace: dict[str, Any]) -> list[Json]:
    out: list[Json] = []
    for name, value in namespace.items():
        if name.startswith("_"):
            continue
        if len(out) >= SYMBOLS_LIMIT:
            break
        kind = type(value)
        sym: Json = {
            "name": name,
            "type": f"{kind.__module__}.{kind.__qualname__}",
            "repr": _short_repr(value),
        }
        if (schema := table_schema(value)) is not None:
            sym["schema"] = schema
        out.append(sym)
    return out


def _is_dunder(name: str) -> bool:
    return name.startswith("__") and name.endswith("__")


def _only_cell_frames(te: traceback.TracebackException) -> None:
    """Keep the frames of cells (`<cell ...>` files), drop the runner's and libraries'."""
    seen: set[int] = set()
    todo: list[traceback.TracebackException | None] = [te]
    while todo:
        t = todo.pop()
        if t is None or id(t) in seen:
            continue
        seen.add(id(t))
        t.stack = traceback.StackSummary.from_list(
            [f for f in t.stack if f.filename.startswith("<cell ")]
        )
        todo += [t.__cause__, t.__context__]


# ---------------------------------------------------------------------------- runner


class Runner:
    def __init__(self, streams: Streams, captures: list[FdCapture]) -> None:
        self.streams = streams
        self.captures = captures
        self.pid = os.getpid()
        self.stdout = cast(TextIO, StreamWriter(streams, "stdout", 1))
        self.stderr = cast(TextIO, StreamWriter(streams, "stderr", 2))
        self.namespaces: dict[str, dict[str, Any]] = {}
        # For cells that define functions or classes: the dict those functions use as their
        # globals, and what it held when the cell's run ended.
        self.globals: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
        self.interruptible = False
        # A SIGINT during a run's own steps (before its code starts, e.g. while a SQL cell
        # imports duckdb) is held and raised when the code starts: an interrupt is never lost.
        self.in_run = False
        self.interrupt_pending = False
        self.shown: list[Any] = []  # figures already displayed in this run
        self.magics = Magics(self)

    # -- output
    def _sync(self) -> None:
        _flush_c_stdio()
        for stream in (sys.__stdout__, sys.__stderr__):
            try:
                if stream is not None:
                    stream.flush()
            except Exception:
                pass
        for capture in self.captures:
            capture.sync()

    def _output(self, kind: str, data: Json, meta: Json) -> None:
        self._sync()  # text a subprocess printed before this output comes first
        size = sum(len(v) if isinstance(v, str) else len(encode(v)) for v in data.values())
        if size > OUTPUT_LIMIT:
            plain = data.get("text/plain")
            note = (
                f"[output cut: {size / 1e6:.3g} MB, over the limit of {OUTPUT_LIMIT / 1e6:.3g}"
                " MB per output (WEFT_OUTPUT_MAX_BYTES)]"
            )
            keep = isinstance(plain, str) and len(plain) <= PLAIN_LIMIT
            data, meta = (
                {"text/plain": f"{plain}\n{note}" if keep else note},
                {"weft": {"cut": True}},
            )
        self.streams.emit(
            {"type": kind, "run_id": self.streams.run_id, "data": data, "metadata": meta}
        )

    def display(
        self, *objs: Any, raw: bool = False, metadata: Json | None = None, **_ignored: Any
    ) -> None:
        """display(obj, ...): injected into every cell's builtins, like IPython's."""
        for obj in objs:
            if raw and isinstance(obj, dict):
                data, meta = {k: _mime_value(k, v) for k, v in obj.items()}, cast(Json, {})
                data.setdefault("text/plain", f"<{', '.join(sorted(data)) or 'empty'} output>")
            else:
                data, meta = mime_bundle(obj)
            if _is_figure(obj):
                self.shown.append(obj)
            self._output("display", data, {**meta, **(metadata or {})})

    def show_figures(self) -> None:
        pyplot = sys.modules.get("matplotlib.pyplot")
        if pyplot is None:
            return
        for num in pyplot.get_fignums():
            fig = pyplot.figure(num)
            if not any(fig is seen for seen in self.shown):
                self.display(fig)
        pyplot.close("all")

    def _error(self, exc: BaseException, source: str) -> None:
        if isinstance(exc, SyntaxError) and exc.text is None and exc.lineno:
            lines = source.splitlines()  # compile() of an AST has no source text to quote
            if 0 < exc.lineno <= len(lines):
                exc.text = lines[exc.lineno - 1] + "\n"
        te = traceback.TracebackException.from_exception(exc)
        _only_cell_frames(te)
        lines = "".join(te.format()).splitlines()
        self.streams.emit(
            {
                "type": "error",
                "run_id": self.streams.run_id,
                "ename": type(exc).__name__,
                "evalue": _safe_str(exc),
                "traceback": lines,
            }
        )

    # -- running
    def _call(self, fn: Callable[[], Any]) -> Any:
        self.interruptible = True
        if self.interrupt_pending:
            self.interrupt_pending = False
            self.interruptible = False
            raise KeyboardInterrupt
        try:
            return fn()
        finally:
            self.interruptible = False

    def on_sigint(self, signum: int, frame: Any) -> None:
        # Only a running cell is interrupted; between runs the runner just carries on.
        if self.interruptible:
            raise KeyboardInterrupt
        if self.in_run:
            self.interrupt_pending = True

    def run(self, msg: Json) -> None:
        run_id, cell_id = str(msg.get("run_id")), str(msg.get("cell_id"))
        code = str(msg.get("code") or "")
        self.streams.set_run(run_id)
        FRAMES.begin_run(cell_id)  # the frames of its earlier outputs go with them
        self.shown = []
        sys.stdout, sys.stderr = self.stdout, self.stderr  # undo a previous cell's swap
        start = time.perf_counter()
        self.in_run, self.interrupt_pending = True, False
        # Fresh globals: the visible cells' namespaces, top to bottom, later ones winning. They
        # are the dict of a fresh module that is sys.modules["__main__"] while the cell runs
        # (and after, until the next run), so pickle finds the cell's classes and functions.
        main = ModuleType("__main__")
        g = main.__dict__
        for visible in msg.get("visible") or []:
            g.update(self.namespaces.get(str(visible), {}))
        before = {k: v for k, v in g.items() if not _is_dunder(k)}
        self.magics.pip_note = msg.get("pip_note") if isinstance(msg.get("pip_note"), str) else None
        g["__builtins__"] = {**builtins.__dict__, "display": self.display, MAGIC_CALL: self.magics}
        own: set[str] = set()  # names the run bound, whatever object they ended up with
        g[BOUND_MARK] = _recorder(own)
        sys.modules["__main__"] = main
        language = msg.get("language") or "python"
        status = "ok"
        try:
            if language == "sql":
                output_name = str(msg.get("output_name") or "_sql")
                self._run_sql(code, g, output_name)
                own.add(output_name)
            elif language == "python":
                self._run_python(code, cell_id, g)
            else:
                raise ValueError(f"unsupported cell language {language!r}")
        except KeyboardInterrupt as exc:
            status = "interrupted"
            self._error(exc, code)
        except BaseException as exc:  # SystemExit from sys.exit() ends the cell, not us
            status = "error"
            self._error(exc, code)
        self.in_run = self.interrupt_pending = False
        if os.getpid() != self.pid:
            # A process the cell forked has come back out of the cell's code. It shares the
            # runner's protocol pipes, so it must never go on to act as the runner.
            os._exit(1 if status == "error" else 0)
        try:
            self.show_figures()
        except Exception as exc:
            self._error(exc, code)
        # The cell's namespace: what its run bound, even if it failed part way (as Jupyter
        # keeps them); a re-run replaces it, and names it deleted are simply not in it. A name
        # it only saw from above stays the upper cell's.
        ns = {
            k: v
            for k, v in g.items()
            if not _is_dunder(k) and (k not in before or before[k] is not v or k in own)
        }
        # Functions of cells above that assigned a `global` during this run wrote into their
        # own cell's dict: those writes are this run's bindings, and the other cell's dict
        # gets back what its own run left, so its functions see no hidden state.
        for name, value in self._take_back_global_writes(cell_id).items():
            ns.setdefault(name, value)
        previous = self.namespaces.get(cell_id, {})
        changed = [
            k
            for k in [*previous, *(k for k in ns if k not in previous)]
            if k not in ns or k not in previous or ns[k] is not previous[k]
        ]
        self.namespaces[cell_id] = ns
        self.globals.pop(cell_id, None)
        if _defines_code(code, language):  # functions keep this dict as their globals
            self.globals[cell_id] = (g, dict(g))
        self._sync()
        self.streams.emit(
            {
                "type": "done",
                "run_id": run_id,
                "status": status,
                "defined": list(ns),
                "changed": changed,
                "symbols": symbols(ns),
                "duration_ms": (time.perf_counter() - start) * 1000,
            }
        )
        _reap_exited_children()

    def _run_python(self, code: str, cell_id: str, g: dict[str, Any]) -> None:
        filename = f"<cell {cell_id}>"
        # Register the source so tracebacks and inspect.getsource can quote cell lines.
        linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
        tree = ast.parse(transform_magics(code), filename, "exec")
        # Names the cell may bind that it also sees from above: only a mark tells whether the
        # run bound them (new names, or names bound to another object, are the cell's anyway).
        ambiguous = top_level_names(tree) & {k for k in g if not _is_dunder(k)}
        last: ast.expr | None = None
        if tree.body and isinstance(tree.body[-1], ast.Expr) and not code.rstrip().endswith(";"):
            last = cast(ast.Expr, tree.body.pop()).value  # IPython: `x;` shows nothing
        if ambiguous:
            tree.body = mark_bindings(tree.body, ambiguous)
            if last is not None:
                last = _WalrusMarker(ambiguous, last).visit(last)
            ast.fix_missing_locations(tree)
        flags = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
        body = compile(tree, filename, "exec", flags=flags, dont_inherit=True)
        tail = (
            None
            if last is None
            else compile(ast.Expression(last), filename, "eval", flags=flags, dont_inherit=True)
        )
        self._call(lambda: _evaluate(body, g))
        if tail is not None:
            value = self._call(lambda: _evaluate(tail, g))
            if value is not None:
                data, meta = mime_bundle(value)
                if _is_figure(value):
                    self.shown.append(value)
                self._output("result", data, meta)

    def _run_sql(self, code: str, g: dict[str, Any], output_name: str) -> None:
        for package in ("duckdb", "pandas"):  # pandas: duckdb's fetchdf() needs it
            try:  # import_module: the runtime may lack either, and neither need be typed
                importlib.import_module(package)
            except ImportError:
                raise ModuleNotFoundError(
                    f"SQL cells need the {package!r} package, which is "
                    "not installed in this runtime"
                ) from None
        duckdb = sys.modules["duckdb"]
        con = duckdb.connect(":memory:")
        cur = con.cursor()  # a busy connection refuses interrupt(); its cursor accepts it
        box: dict[str, Any] = {}
        try:
            try:  # only the frames registered below, never the runner's own variables
                cur.execute("SET python_enable_replacements = false")
            except Exception:
                pass
            for name, value in g.items():
                if not _is_dunder(name) and _table_kind(value) is not None:
                    cur.register(name, value)

            finished = threading.Event()

            def work() -> None:
                try:
                    cur.execute(code)
                    box["df"] = cur.fetchdf()
                except BaseException as exc:
                    box["exc"] = exc
                finally:
                    finished.set()

            # duckdb holds the calling thread in C; running it on a worker lets SIGINT reach
            # the main thread, which then stops the query. (An Event, not Thread.join: a
            # KeyboardInterrupt inside join() can leave the thread looking finished.)
            if self.interrupt_pending:  # interrupted while it imported duckdb: never start
                self.interrupt_pending = False
                raise KeyboardInterrupt
            threading.Thread(target=work, name="weft-sql", daemon=True).start()
            try:
                self._call(lambda: _wait(finished))
            except KeyboardInterrupt:
                # Again until it stops: an interrupt that comes before the worker has begun
                # the query would otherwise be lost.
                deadline = time.monotonic() + 10
                while not finished.wait(0.05) and time.monotonic() < deadline:
                    cur.interrupt()
                raise
            if "exc" in box:
                raise box["exc"]
        finally:
            con.close()
        g[output_name] = box["df"]
        data, meta = mime_bundle(box["df"])
        self._output("result", data, meta)

    def _take_back_global_writes(self, running: str) -> dict[str, Any]:
        """Undo what this run wrote into other cells' dicts (a function defined above doing
        `global n; n += 1`), and return those writes."""
        writes: dict[str, Any] = {}
        for cell_id, (g, kept) in self.globals.items():
            if cell_id == running:
                continue
            if len(g) == len(kept) and all(k in kept and kept[k] is v for k, v in g.items()):
                continue
            writes.update(
                (k, v)
                for k, v in g.items()
                if not _is_dunder(k) and (k not in kept or kept[k] is not v)
            )
            g.clear()
            g.update(kept)
        return writes

    def forget(self, cell_ids: list[Any]) -> None:
        for cell_id in cell_ids:
            self.namespaces.pop(str(cell_id), None)
            self.globals.pop(str(cell_id), None)


def _recorder(own: set[str]) -> Callable[..., Any]:
    def bound(value: Any, *names: str) -> Any:
        own.update(names)
        return value

    return bound


def _defines_code(code: str, language: Any) -> bool:
    """Whether a cell may leave behind code that uses its dict as globals later on."""
    if language != "python":
        return False
    return any(word in code for word in ("def", "lambda", "class", "exec", "eval", "compile"))


def _reap_exited_children() -> None:
    """Collect processes the cells started that have exited. As the container's PID 1 the
    runner also inherits every orphan; unreaped, each holds a pid (the pids limit counts
    them) for the kernel's lifetime, until no cell can start a thread or a process. (A
    subprocess.Popen the user waits for later then reports 0: its status was collected.)"""
    while True:
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _safe_str(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:
        return f"<unprintable {type(exc).__name__}>"


def _evaluate(code: Any, g: dict[str, Any]) -> Any:
    result = eval(code, g)  # exec-mode code returns None; a top-level await, a coroutine
    if code.co_flags & CO_COROUTINE:
        import asyncio

        result = asyncio.run(result)
    return result


def _wait(event: threading.Event) -> None:
    while not event.wait(0.05):  # short waits so the SIGINT handler gets to run
        pass


# ---------------------------------------------------------------------------- kernel requests
#
# Requests the host asks on behalf of people (docs/runner-protocol.md, "Requests"):
# completions and call signatures for the names a cell can see, and pages of DataFrames
# shown in outputs. They are read from stdin like runs, so one sent while a cell runs waits
# for it (Jupyter's shell channel does the same). Nothing here calls the user's functions or
# properties: names are looked up statically; only dir() and a DataFrame's own sorting and
# comparisons run. Each request has a time budget (SIGALRM), so a pathological __dir__ or a
# huge frame costs that request, never the next run.

REQUEST_BUDGET_S = float(os.environ.get("WEFT_KERNEL_REQUEST_BUDGET_SECONDS") or 3.0)
REQUEST_KINDS = ("complete", "signature", "frame_page")
COMPLETIONS_MAX = 1000  # a DataFrame has some 250 public attributes, its columns first
CODE_SCANNED = 10_000  # characters before the cursor a signature looks back through
EXPRESSION_SCANNED = 400  # characters of the expression being completed
FRAME_MIME = "application/vnd.weft.frame+json"
FRAMES_KEPT = 16  # frames held for paging, per kernel (a cell's re-run drops its own)
FRAMES_BYTES = 256 * 2**20  # ... and their size (the newest is kept whatever its size)
FRAMES_REMEMBERED = 256  # frames pageable while something else holds them (a namespace)
FRAME_VIEWS_KEPT = 4  # sorted/filtered row positions kept, for the frames paged last
FRAME_PAGE_ROWS = 50  # rows of the first page, in the output
FRAME_PAGE_MAX = 200
FRAME_COLUMNS_MAX = 100
FRAME_VALUE_CHARS = 100
FRAME_SORT_KEYS = 3
FRAME_FILTERS = 8
LARGE_FRAME_ROWS = 60  # pandas' own max_rows: past it, its text is head/tail; we say the shape
FILTER_OPS = ("==", "!=", "<", "<=", ">", ">=", "contains", "startswith", "is_null", "not_null")


class RequestFailed(Exception):
    """A request that cannot be answered; the message says why, for the person who asked."""


class _OverBudget(Exception):
    pass


def _is_frame(value: Any) -> bool:
    return _table_kind(value) == "pandas"


class FrameRegistry:
    """DataFrames shown in outputs, by ref, so a grid can page, sort and filter them.

    Each is held weakly (a frame that lives on in a namespace stays pageable), and the most
    recent ones strongly too (a displayed `df.sort_values(...)` has no other reference), up
    to FRAMES_KEPT frames and FRAMES_BYTES: frames shown must not use up the kernel's
    memory. A ref the kernel no longer holds says so."""

    def __init__(self) -> None:
        self._frames: dict[str, tuple[str | None, Any]] = {}  # ref -> (cell, weakref)
        self._strong: dict[str, tuple[Any, int]] = {}  # insertion order = age; with bytes
        self._views: dict[str, tuple[str, Any]] = {}  # ref -> (view key, row positions)
        self.cell: str | None = None

    def begin_run(self, cell_id: str) -> None:
        """A cell runs again: its earlier outputs are cleared, so their frames go."""
        self.cell = cell_id
        for ref in [r for r, (cell, _) in self._frames.items() if cell == cell_id]:
            self.drop(ref)

    def add(self, frame: Any) -> str:
        import secrets
        import weakref

        ref = secrets.token_hex(8)
        self._frames[ref] = (self.cell, weakref.ref(frame))
        try:
            size = int(frame.memory_usage(index=True, deep=False).sum())
        except Exception:
            size = 0
        self._strong[ref] = (frame, size)
        while len(self._strong) > 1 and (
            len(self._strong) > FRAMES_KEPT
            or sum(size for _, size in self._strong.values()) > FRAMES_BYTES
        ):
            self._strong.pop(next(iter(self._strong)))
        while len(self._frames) > FRAMES_REMEMBERED:
            self.drop(next(iter(self._frames)))
        return ref

    def drop(self, ref: str) -> None:
        self._frames.pop(ref, None)
        self._strong.pop(ref, None)
        self._views.pop(ref, None)

    def get(self, ref: str) -> Any:
        entry = self._frames.get(ref)
        frame = entry[1]() if entry is not None else None
        if frame is None:
            raise RequestFailed(
                "the kernel no longer holds this table (it was re-run, or too many tables were "
                "shown since); run its cell again to page it"
            )
        return frame

    def positions(self, ref: str, frame: Any, sort: list[Json], filters: list[Json]) -> Any:
        """Row positions of the frame in this view, kept for the last view of each ref so
        paging through a sorted million rows sorts once."""
        key = json.dumps([sort, filters], sort_keys=True, default=str)
        cached = self._views.get(ref)
        if cached is not None and cached[0] == key:
            return cached[1]
        positions = _view_positions(frame, sort, filters)
        self._views.pop(ref, None)
        self._views[ref] = (key, positions)
        while len(self._views) > FRAME_VIEWS_KEPT:  # 8 bytes a row each
            self._views.pop(next(iter(self._views)))
        return positions


FRAMES = FrameRegistry()


def _column_position(frame: Any, name: Any) -> int:
    if not isinstance(name, str):
        raise RequestFailed("a column must be given by its name (a string)")
    for position, column in enumerate(frame.columns):
        if str(column) == name:
            return position
    listed = ", ".join(str(c) for c in list(frame.columns)[:20])
    raise RequestFailed(f"this table has no column {name[:100]!r} (its columns: {listed})")


def _filter_mask(frame: Any, spec: Json) -> Any:
    if not isinstance(spec, dict):
        raise RequestFailed("a filter must be an object {column, op, value}")
    column = frame.iloc[:, _column_position(frame, spec.get("column"))]
    op, value = spec.get("op"), spec.get("value")
    if op not in FILTER_OPS:
        raise RequestFailed(f"unknown filter op {str(op)[:20]!r} (one of {', '.join(FILTER_OPS)})")
    if op == "is_null":
        return column.isna()
    if op == "not_null":
        return column.notna()
    if not (value is None or isinstance(value, str | int | float | bool)):
        raise RequestFailed("a filter's value must be a string, a number, true, false or null")
    if op in ("contains", "startswith"):
        text = column.astype(str)
        needle = str(value)
        return (
            text.str.contains(needle, regex=False)
            if op == "contains"
            else text.str.startswith(needle)
        )
    numeric = column.dtype.kind in "iufb"
    if numeric and isinstance(value, str):
        given = value
        try:
            value = float(given)
        except ValueError:
            raise RequestFailed(
                f"{given[:40]!r} is not a number, and column {spec['column']!r} holds numbers"
            ) from None
    if not numeric and column.dtype.kind == "M" and isinstance(value, str):
        pandas = sys.modules["pandas"]
        try:
            value = pandas.Timestamp(value)
        except ValueError:
            raise RequestFailed(f"{value[:40]!r} is not a date") from None
    try:
        if op == "==":
            return column == value
        if op == "!=":
            return column != value
        compare = {"<": column.lt, "<=": column.le, ">": column.gt, ">=": column.ge}[op]
        return compare(value)
    except TypeError as exc:
        raise RequestFailed(
            f"cannot compare column {spec['column']!r} with {value!r}: {exc}"
        ) from None


def _view_positions(frame: Any, sort: list[Json], filters: list[Json]) -> Any:
    numpy = sys.modules["numpy"]
    positions = numpy.arange(len(frame))
    if filters:
        mask = numpy.ones(len(frame), dtype=bool)
        for spec in filters:
            mask &= numpy.asarray(_filter_mask(frame, spec).fillna(False), dtype=bool)
        positions = positions[mask]
    if sort:
        pandas = sys.modules["pandas"]
        columns: list[Any] = []
        for spec in sort:
            if not isinstance(spec, dict) or not isinstance(spec.get("descending", False), bool):
                raise RequestFailed("a sort key must be an object {column, descending}")
            column = frame.iloc[:, _column_position(frame, spec.get("column"))]
            if column.dtype.kind in "ifub":
                key = column.to_numpy(dtype=numpy.float64 if column.dtype.kind in "ub" else None)
            else:
                # Text, dates, categories: their rank among the sorted distinct values (one
                # hash pass and a sort of the distinct values, not of a million strings);
                # missing values are NaN, last either way.
                try:
                    codes, _ = pandas.factorize(column, sort=True)
                except TypeError as exc:
                    raise RequestFailed(f"this column cannot be sorted: {exc}") from None
                key = numpy.where(codes < 0, numpy.nan, codes)
            key = key[positions]
            # Negating a number sorts it descending; NaN stays NaN, so missing values stay last.
            columns.append(-key if spec.get("descending", False) else key)
        # numpy's lexsort is stable: rows that tie keep the frame's order, as pandas' does.
        positions = positions[numpy.lexsort(columns[::-1])]
    return positions


def _frame_value(value: Any) -> Any:
    safe = _json_safe(value, FRAME_VALUE_CHARS)
    return safe if not isinstance(safe, dict | list) else _safe_repr(value, FRAME_VALUE_CHARS)


def frame_page(frame: Any, positions: Any, offset: int, size: int) -> Json:
    chosen = positions[offset : offset + size]
    part = frame.iloc[chosen, :FRAME_COLUMNS_MAX]
    return {
        "offset": offset,
        "total": len(positions),
        "index": [_frame_value(v) for v in part.index],
        "rows": [[_frame_value(v) for v in row] for row in part.itertuples(index=False, name=None)],
    }


def frame_columns(frame: Any) -> list[Json]:
    """Each column's name, dtype and summary (nulls; min, max and mean of numbers and dates;
    distinct values of other columns up to a size)."""
    columns: list[Json] = []
    for position in range(min(len(frame.columns), FRAME_COLUMNS_MAX)):
        column = frame.iloc[:, position]
        summary: Json = {"nulls": int(column.isna().sum())}
        try:
            if column.dtype.kind in "iuf":
                summary.update(min=column.min(), max=column.max(), mean=column.mean())
            elif column.dtype.kind == "M":
                summary.update(min=column.min(), max=column.max())
            elif len(column) <= 200_000:
                summary["distinct"] = int(column.nunique())
        except Exception:
            pass
        columns.append(
            {
                "name": str(frame.columns[position]),
                "dtype": str(column.dtype),
                "summary": _json_safe(summary, FRAME_VALUE_CHARS),
            }
        )
    return columns


def add_frame_output(obj: Any, data: Json) -> None:
    """A DataFrame's output gets a grid (FRAME_MIME: its ref, shape, columns, first page); a
    large one shows its shape instead of pandas' head/tail text and HTML."""
    if not _is_frame(obj):
        return
    try:
        rows, width = obj.shape
        ref = FRAMES.add(obj)
        import numpy

        first = frame_page(obj, numpy.arange(rows), 0, FRAME_PAGE_ROWS)
        data[FRAME_MIME] = {
            "ref": ref,
            "rows": rows,
            "columns_total": width,
            "columns": frame_columns(obj),
            "index_name": _frame_value(obj.index.name),
            "page_size": FRAME_PAGE_ROWS,
            "page": first,
        }
    except Exception:
        return
    if rows > LARGE_FRAME_ROWS:
        data.pop("text/html", None)
        kinds = ", ".join(f"{c['name']}: {c['dtype']}" for c in data[FRAME_MIME]["columns"][:10])
        data["text/plain"] = f"DataFrame: {rows:,} rows x {width:,} columns ({kinds})"


def _visible_namespace(runner: Runner, visible: Any) -> dict[str, Any]:
    """What a cell would see if it ran now: as Runner.run builds its globals."""
    g: dict[str, Any] = {}
    for cell in visible if isinstance(visible, list) else []:
        g.update(runner.namespaces.get(str(cell), {}))
    return g


def _static_attr(obj: Any, name: str) -> Any:
    """obj.name without running code: the stored value, a function (not bound), or a
    DataFrame's column. A property or another descriptor is not followed."""
    import inspect

    try:
        value = inspect.getattr_static(obj, name)
    except AttributeError:
        if _is_frame(obj) and name in {str(c) for c in obj.columns}:
            return obj.iloc[:, _column_position(obj, name)]
        raise RequestFailed(f"no attribute {name}") from None
    if isinstance(value, staticmethod | classmethod):
        return value.__func__
    if inspect.isfunction(value) or inspect.isbuiltin(value) or isinstance(value, type):
        return value
    if inspect.ismethoddescriptor(value) or inspect.ismodule(value):
        return value
    if hasattr(type(value), "__get__") and not inspect.isclass(obj):
        raise RequestFailed(f"{name} is computed when read")
    return value


def _resolve(g: dict[str, Any], chain: list[str]) -> Any:
    head = chain[0]
    if head in g:
        obj = g[head]
    elif head in builtins.__dict__:
        obj = builtins.__dict__[head]
    else:
        raise RequestFailed(f"{head} is not visible to this cell")
    for name in chain[1:]:
        obj = _static_attr(obj, name)
    return obj


def _kind(value: Any) -> str:
    import inspect

    if inspect.isclass(value):
        return "class"
    if inspect.ismodule(value):
        return "namespace"
    if callable(value) or inspect.ismethoddescriptor(value):
        return "function"
    if isinstance(value, property) or inspect.isdatadescriptor(value):
        return "property"
    return "variable"


def _detail(value: Any) -> str:
    kind = type(value)
    if _is_frame(value):
        return f"DataFrame {value.shape[0]:,} x {value.shape[1]:,}"
    return (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )


def _item(label: str, value: Any) -> Json:
    return {"label": label, "type": _kind(value), "detail": _detail(value)[:80]}


def complete(runner: Runner, msg: Json) -> Json:
    import keyword
    import re

    text = str(msg.get("code") or "")[-CODE_SCANNED:]
    g = _visible_namespace(runner, msg.get("visible"))
    line = text.rsplit("\n", 1)[-1][-EXPRESSION_SCANNED:]  # the regexes below are O(n^2)
    items: list[Json] = []
    if m := re.search(r"^\s*(?:import|from)\s+([\w]*)$", line):
        import pkgutil

        prefix = m.group(1)
        names = {mod.name for mod in pkgutil.iter_modules()} | set(sys.builtin_module_names)
        items = [
            {"label": n, "type": "namespace", "detail": "module"}
            for n in sorted(names)
            if n.startswith(prefix) and not n.startswith("_")
        ]
    elif m := re.search(r"([A-Za-z_][\w]*(?:\.[A-Za-z_]\w*)*)\[(['\"])([^'\"]*)$", line):
        prefix = m.group(3)
        obj = _resolve(g, m.group(1).split("."))
        keys = (
            [str(c) for c in obj.columns]
            if _is_frame(obj)
            else ([k for k in obj if isinstance(k, str)] if isinstance(obj, dict) else [])
        )
        items = [
            {"label": k, "type": "property", "detail": "column" if _is_frame(obj) else "key"}
            for k in keys
            if k.startswith(prefix)
        ]
    elif m := re.search(r"([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)\.(\w*)$", line):
        prefix = m.group(2)
        obj = _resolve(g, m.group(1).split("."))
        columns = {str(c) for c in obj.columns} if _is_frame(obj) else set()
        ordered = [*sorted(columns), *sorted(set(dir(obj)) - columns)]
        for name in ordered:
            if not isinstance(name, str) or not name.startswith(prefix):
                continue
            if name.startswith("_") and not prefix.startswith("_"):
                continue
            if name in columns:
                column = obj.iloc[:, _column_position(obj, name)]
                items.append(
                    {"label": name, "type": "property", "detail": f"column {column.dtype}"}
                )
                continue
            try:
                items.append(_item(name, _static_attr(obj, name)))
            except RequestFailed:
                items.append({"label": name, "type": "property", "detail": "computed when read"})
    else:
        prefix = m.group(0) if (m := re.search(r"[A-Za-z_]\w*$", line)) else ""
        if prefix:
            for name, value in g.items():
                if name.startswith(prefix) and not _is_dunder(name):
                    items.append(_item(name, value))
            seen = set(g)
            for name, value in builtins.__dict__.items():
                if name.startswith(prefix) and not name.startswith("_") and name not in seen:
                    items.append(_item(name, value))
            items += [
                {"label": k, "type": "keyword", "detail": "keyword"}
                for k in keyword.kwlist
                if k.startswith(prefix)
            ]
    return {
        "prefix": prefix,
        "items": items[:COMPLETIONS_MAX],
        "more": len(items) > COMPLETIONS_MAX,
    }


def _open_call(text: str) -> tuple[str, int, str | None] | None:
    """The innermost call the cursor is inside: (callee text, argument index, keyword being
    given). Strings and comments are skipped; brackets are matched."""
    import re

    stack: list[tuple[str, int, int]] = []  # (bracket, position, commas)
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "#":
            end = text.find("\n", i)
            i = n if end < 0 else end
            continue
        if ch in "'\"":
            quote = text[i : i + 3] if text[i : i + 3] in ("'''", '"""') else ch
            end = text.find(quote, i + len(quote))
            while end > 0 and len(quote) == 1 and text[end - 1] == "\\":
                end = text.find(quote, end + 1)
            if end < 0:
                return None  # the cursor is in a string
            i = end + len(quote)
            continue
        if ch in "([{":
            stack.append((ch, i, 0))
        elif ch in ")]}" and stack:
            stack.pop()
        elif ch == "," and stack:
            bracket, pos, commas = stack[-1]
            stack[-1] = (bracket, pos, commas + 1)
        i += 1
    if not stack or stack[-1][0] != "(":
        return None
    _, pos, commas = stack[-1]
    before = text[max(0, pos - EXPRESSION_SCANNED) : pos]
    callee = re.search(r"([A-Za-z_]\w*(?:\s*\.\s*[A-Za-z_]\w*)*)\s*$", before)
    if callee is None or before[: callee.start()].rstrip().endswith("."):
        return None  # `f().g(`: knowing g would mean calling f
    argument = text[pos + 1 :].rsplit(",", 1)[-1][-EXPRESSION_SCANNED:]
    named = re.match(r"\s*([A-Za-z_]\w*)\s*(=(?!=)|$)", argument)
    if named is not None and not named.group(2):  # a bare word: maybe a keyword being typed
        return re.sub(r"\s+", "", callee.group(1)), commas, "?" + named.group(1)
    return re.sub(r"\s+", "", callee.group(1)), commas, named.group(1) if named else None


def signature(runner: Runner, msg: Json) -> Json:
    import inspect

    text = str(msg.get("code") or "")[-CODE_SCANNED:]
    call = _open_call(text)
    if call is None:
        return {"signature": None}
    callee, argument, keyword_name = call
    g = _visible_namespace(runner, msg.get("visible"))
    chain = callee.split(".")
    obj = _resolve(g, chain)
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        raise RequestFailed(f"{callee} has no signature Python can read") from None
    params = list(sig.parameters.values())
    if len(chain) > 1 and inspect.isfunction(obj) and params:
        owner = _resolve(g, chain[:-1])  # a method looked up on an instance: self is bound
        if not inspect.isclass(owner) and not inspect.ismodule(owner):
            params = params[1:]
    active: int | None = None
    typing = keyword_name[1:] if keyword_name and keyword_name[0] == "?" else None
    if typing is not None:
        keyword_name = None
    if keyword_name is not None:
        active = next((i for i, p in enumerate(params) if p.name == keyword_name), None)
    else:
        positional = [
            i
            for i, p in enumerate(params)
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
        ]
        if positional:
            active = positional[min(argument, len(positional) - 1)]
            if argument >= len(positional) and params[active].kind != params[active].VAR_POSITIONAL:
                active = None
    if active is None and typing is not None:  # past the positional ones: a keyword's start
        active = next(
            (
                i
                for i, p in enumerate(params)
                if p.name.startswith(typing) and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
            ),
            None,
        )
    doc = inspect.getdoc(obj) or ""
    first = next((line.strip() for line in doc.splitlines() if line.strip()), "")
    return {
        "signature": {
            "name": callee,
            "params": [str(p)[:200] for p in params[:60]],
            "active": active,
            "returns": None
            if sig.return_annotation is sig.empty
            else inspect.formatannotation(sig.return_annotation)[:200],
            "doc": first[:300],
        }
    }


def _bounded(value: Any, name: str, low: int, high: int, default: int) -> int:
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise RequestFailed(f"'{name}' must be a whole number from {low} to {high}")
    return value


def page_frame(msg: Json) -> Json:
    frame = FRAMES.get(str(msg.get("ref")))
    sort, filters = msg.get("sort") or [], msg.get("filter") or []
    if not isinstance(sort, list) or len(sort) > FRAME_SORT_KEYS:
        raise RequestFailed(f"'sort' must be a list of at most {FRAME_SORT_KEYS} keys")
    if not isinstance(filters, list) or len(filters) > FRAME_FILTERS:
        raise RequestFailed(f"'filter' must be a list of at most {FRAME_FILTERS} filters")
    size = _bounded(msg.get("page_size"), "page_size", 1, FRAME_PAGE_MAX, FRAME_PAGE_ROWS)
    page = _bounded(msg.get("page"), "page", 0, 10**12, 0)
    positions = FRAMES.positions(str(msg.get("ref")), frame, sort, filters)
    return {**frame_page(frame, positions, page * size, size), "page": page, "page_size": size}


def serve_request(runner: Runner, msg: Json) -> None:
    """Answer one request with a `response`: its result, or an error that says why."""
    request_id, kind = msg.get("request_id"), msg.get("kind")

    def over_budget(signum: int, frame: Any) -> None:
        raise _OverBudget

    previous = signal.signal(signal.SIGALRM, over_budget)
    signal.setitimer(signal.ITIMER_REAL, REQUEST_BUDGET_S)
    try:
        if kind in ("complete", "signature"):
            try:
                result = complete(runner, msg) if kind == "complete" else signature(runner, msg)
            except RequestFailed as exc:  # a name that is not there yet, while typing
                result = {"items": [], "prefix": "", "signature": None, "reason": str(exc)}
        elif kind == "frame_page":
            result = page_frame(msg)
        else:
            raise RequestFailed(f"unknown request kind {str(kind)[:40]!r}")
        signal.setitimer(signal.ITIMER_REAL, 0)
        reply: Json = {"ok": True, "result": result}
    except _OverBudget:
        reply = {
            "ok": False,
            "error": f"the kernel took more than {REQUEST_BUDGET_S:g} s to answer",
        }
    except RequestFailed as exc:
        reply = {"ok": False, "error": str(exc)}
    except Exception as exc:  # the objects' own code (dir, comparisons) raised
        reply = {"ok": False, "error": f"{type(exc).__name__}: {_safe_str(exc)[:300]}"}
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    runner.streams.emit({"type": "response", "request_id": request_id, **reply})


# ---------------------------------------------------------------------------- main loop


def main() -> int:
    # Keep the real stdin/stdout for the protocol and give user code /dev/null and pipes.
    # os.dup: not inherited by subprocesses. diag_fd (the real stderr) is for our own bugs.
    proto_fd, in_fd, diag_fd = os.dup(1), os.dup(0), os.dup(2)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    streams = Streams(ProtocolWriter(proto_fd))
    captures = [FdCapture(streams, "stdout", 1), FdCapture(streams, "stderr", 2)]
    runner = Runner(streams, captures)
    sys.stdout, sys.stderr = runner.stdout, runner.stderr
    # Explicit handlers: as a container's PID 1 we would otherwise ignore both signals.
    signal.signal(signal.SIGINT, runner.on_sigint)
    signal.signal(signal.SIGTERM, lambda signum, frame: os._exit(128 + signum))
    os.environ["MPLBACKEND"] = "Agg"  # no display in a container; figures become PNGs
    # plotly's fig.show() displays its JSON figure through IPython's display (patched above)
    # instead of opening a browser; the web client draws it in a sandboxed frame.
    os.environ.setdefault("PLOTLY_RENDERER", "plotly_mimetype")
    sys.meta_path.insert(0, _AfterImport(import_patches(runner)))
    if os.path.isdir("/workspace"):
        os.chdir("/workspace")
    streams.emit({"type": "ready", "python": platform.python_version(), "pid": os.getpid()})
    with os.fdopen(in_fd, "rb") as stdin:
        for line in stdin:
            if not line.strip():
                continue
            try:
                msg = json.loads(line)
                if not isinstance(msg, dict):
                    raise ValueError("a message must be a JSON object")
            except ValueError as exc:
                streams.emit({"type": "protocol_error", "detail": f"bad message: {exc}"})
                continue
            kind = msg.get("type")
            if kind == "shutdown":
                break
            try:
                if kind == "run":
                    runner.run(msg)
                elif kind == "forget":
                    runner.forget(list(msg.get("cell_ids") or []))
                elif kind == "request":
                    serve_request(runner, msg)
                else:
                    streams.emit({"type": "protocol_error", "detail": f"unknown type {kind!r}"})
            except Exception as exc:  # a bug of ours: say so, and never leave a run hanging
                os.write(diag_fd, "".join(traceback.format_exception(exc)).encode())
                if kind == "run":
                    streams.emit(
                        {
                            "type": "done",
                            "run_id": msg.get("run_id"),
                            "status": "error",
                            "defined": [],
                            "symbols": [],
                            "duration_ms": 0.0,
                            "detail": f"runner failure: {exc!r}",
                        }
                    )
    streams.flush()
    streams.out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
