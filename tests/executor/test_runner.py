"""The in-kernel runner, as a real subprocess speaking its JSON-lines protocol."""

from __future__ import annotations

import base64
import importlib
import itertools
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

RUNNER = Path(__file__).resolve().parents[2] / "executor" / "runner.py"
Msg = dict[str, Any]


def _strict_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")  # NaN/Infinity break browsers


class Run:
    def __init__(self, messages: list[tuple[float, Msg]]) -> None:
        self.timed = messages
        self.messages = [m for _, m in messages]
        self.done = self.messages[-1]

    @property
    def status(self) -> str:
        return str(self.done["status"])

    @property
    def defined(self) -> list[str]:
        return list(self.done["defined"])

    def of(self, kind: str) -> list[Msg]:
        return [m for m in self.messages if m["type"] == kind]

    def text(self, name: str = "stdout") -> str:
        return "".join(m["text"] for m in self.of("stream") if m["name"] == name)

    @property
    def error(self) -> Msg:
        (error,) = self.of("error")
        return error

    def symbol(self, name: str) -> Msg:
        matches: list[Msg] = [s for s in self.done["symbols"] if s["name"] == name]
        (sym,) = matches
        return sym


class Kernel:
    """Drives one runner process; every wait is bounded."""

    _ids = itertools.count(1)

    def __init__(
        self, cwd: Path, env: dict[str, str] | None = None, prefix: Sequence[str] = ()
    ) -> None:
        self.proc = subprocess.Popen(
            [*prefix, sys.executable, "-u", str(RUNNER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env=env,
        )
        self.inbox: queue.Queue[tuple[float, Msg]] = queue.Queue()
        self.bad_lines: list[bytes] = []
        self.diagnostics: list[bytes] = []
        self._threads = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for t in self._threads:
            t.start()
        self.ready = self.next(timeout=30)

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                msg = json.loads(line, parse_constant=_strict_constant)
                assert isinstance(msg, dict)
            except (ValueError, AssertionError):
                self.bad_lines.append(line)
                continue
            self.inbox.put((time.monotonic(), msg))

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.diagnostics.append(line)

    def send(self, msg: Msg) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(msg).encode() + b"\n")
        self.proc.stdin.flush()

    def next(self, timeout: float = 30) -> Msg:
        try:
            return self.inbox.get(timeout=timeout)[1]
        except queue.Empty:
            raise AssertionError(f"no message within {timeout} s") from None

    def start(
        self,
        code: str,
        cell: str = "c",
        visible: Sequence[str] = (),
        language: str = "python",
        output_name: str | None = None,
        **extra: Any,
    ) -> str:
        run_id = f"run-{next(self._ids)}"
        self.send(
            {
                "type": "run",
                "run_id": run_id,
                "cell_id": cell,
                "code": code,
                "language": language,
                "visible": list(visible),
                "output_name": output_name,
                **extra,
            }
        )
        return run_id

    def collect(self, run_id: str, timeout: float = 30) -> Run:
        deadline = time.monotonic() + timeout
        got: list[tuple[float, Msg]] = []
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{run_id} did not finish in {timeout} s: {got[-5:]}")
            try:
                at, msg = self.inbox.get(timeout=remaining)
            except queue.Empty:
                continue
            assert msg.get("run_id") == run_id, msg
            got.append((at, msg))
            if msg["type"] == "done":
                assert not self.bad_lines, self.bad_lines[:3]
                return Run(got)

    def run(self, code: str, cell: str = "c", visible: Sequence[str] = (), **kw: Any) -> Run:
        return self.collect(self.start(code, cell, visible, **kw))

    def close(self) -> None:
        try:
            if self.proc.poll() is None:
                self.send({"type": "shutdown"})
                self.proc.wait(10)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait(10)
        for t in self._threads:
            t.join(5)
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


@pytest.fixture
def kernel(tmp_path: Path) -> Iterator[Kernel]:
    k = Kernel(tmp_path)
    try:
        yield k
    finally:
        k.close()


# ---------------------------------------------------------------------------- lifecycle


def test_ready_and_shutdown(kernel: Kernel) -> None:
    assert kernel.ready["type"] == "ready"
    assert kernel.ready["python"].startswith("3.")
    assert kernel.ready["pid"] == kernel.proc.pid
    kernel.send({"type": "shutdown"})
    assert kernel.proc.wait(10) == 0


def test_bad_messages_are_reported_and_survived(kernel: Kernel) -> None:
    assert kernel.proc.stdin is not None
    kernel.proc.stdin.write(b"this is not json\n")
    kernel.proc.stdin.flush()
    assert kernel.next()["type"] == "protocol_error"
    kernel.send({"type": "dance"})
    assert kernel.next()["type"] == "protocol_error"
    assert kernel.run("1 + 1").status == "ok"


# ---------------------------------------------------------------------------- namespaces


def test_cells_see_only_the_cells_above_them(kernel: Kernel) -> None:
    a = kernel.run("x = 41", cell="A")
    assert (a.status, a.defined) == ("ok", ["x"])
    b = kernel.run("y = x + 1\ny", cell="B", visible=["A"])
    assert b.status == "ok"
    assert b.of("result")[0]["data"]["text/plain"] == "42"
    assert b.defined == ["y"]

    # A deleted or moved below B: the host no longer lists it, so x is not there.
    b = kernel.run("z = 0\ny = x + 1", cell="B", visible=[])
    assert b.status == "error"
    assert b.error["ename"] == "NameError"
    assert "'x'" in b.error["evalue"]
    tb = "\n".join(b.error["traceback"])
    assert '"<cell B>", line 2' in tb
    assert "y = x + 1" in tb

    # Forgotten (deleted) cells are gone even if a host still listed them.
    kernel.send({"type": "forget", "cell_ids": ["A"]})
    b = kernel.run("y = x + 1", cell="B", visible=["A"])
    assert b.error["ename"] == "NameError"


def test_later_binding_wins_and_rerun_replaces_the_namespace(kernel: Kernel) -> None:
    kernel.run("x = 1\nkeep = 'a'", cell="A")
    kernel.run("x = 2", cell="B", visible=["A"])
    c = kernel.run("(x, keep)", cell="C", visible=["A", "B"])
    assert c.of("result")[0]["data"]["text/plain"] == "(2, 'a')"

    kernel.run("w = 0", cell="A")  # A no longer binds x or keep
    c = kernel.run("x", cell="C", visible=["A", "B"])
    assert c.of("result")[0]["data"]["text/plain"] == "2"
    c = kernel.run("keep", cell="C", visible=["A", "B"])
    assert c.error["ename"] == "NameError"


def test_a_cell_does_not_see_its_own_previous_run(kernel: Kernel) -> None:
    assert kernel.run("n = 1", cell="A").status == "ok"
    again = kernel.run("n += 1", cell="A")
    assert again.error["ename"] == "NameError"


def test_rebinding_to_the_same_object_still_belongs_to_the_cell(kernel: Kernel) -> None:
    kernel.run("import os\nx = object()", cell="A")
    b = kernel.run("import os\nx = x", cell="B", visible=["A"])
    assert sorted(b.defined) == ["os", "x"]
    kernel.send({"type": "forget", "cell_ids": ["A"]})
    c = kernel.run("os.sep, type(x).__name__", cell="C", visible=["B"])
    assert c.status == "ok"


def test_failed_run_keeps_names_bound_before_the_failure(kernel: Kernel) -> None:
    r = kernel.run("a = 1\n1 / 0\nb = 2", cell="A")
    assert r.status == "error"
    assert r.defined == ["a"]
    assert kernel.run("a", cell="B", visible=["A"]).status == "ok"


def test_del_removes_a_name_from_the_deleting_cell_only(kernel: Kernel) -> None:
    kernel.run("x = 1", cell="A")
    b = kernel.run("del x", cell="B", visible=["A"])
    assert (b.status, b.defined) == ("ok", [])
    c = kernel.run("x", cell="C", visible=["A", "B"])
    assert c.of("result")[0]["data"]["text/plain"] == "1"


def test_functions_resolve_names_where_they_were_defined(kernel: Kernel) -> None:
    kernel.run("scale = 10\ndef f(v):\n    return v * scale", cell="A")
    b = kernel.run("f(4)", cell="B", visible=["A"])
    assert b.of("result")[0]["data"]["text/plain"] == "40"
    c = kernel.run("def g():\n    return missing\n", cell="C")
    d = kernel.run("g()", cell="D", visible=["C"])
    assert c.status == "ok"
    tb = "\n".join(d.error["traceback"])
    assert '"<cell D>", line 1' in tb
    assert '"<cell C>", line 2' in tb
    assert "return missing" in tb


# ---------------------------------------------------------------------------- streams


def test_slow_output_is_streamed_while_the_cell_runs(kernel: Kernel) -> None:
    # The cell prints time.monotonic(): CLOCK_MONOTONIC is shared by both processes.
    r = kernel.run(
        "import time\nfor i in range(5):\n    print(time.monotonic())\n    time.sleep(0.2)"
    )
    streams = [(at, m) for at, m in r.timed if m["type"] == "stream"]
    done_at = r.timed[-1][0]
    assert len(streams) >= 3
    assert streams[0][0] < done_at - 0.5  # the first line arrived long before the end
    printed = [(at, float(line)) for at, m in streams for line in m["text"].split()]
    assert len(printed) == 5
    assert max(at - when for at, when in printed) < 0.3  # ~50 ms expected; slack for CI


def test_fast_output_is_coalesced(kernel: Kernel) -> None:
    r = kernel.run("for i in range(200_000):\n    print(i % 10)")
    assert r.status == "ok"
    assert 1 < len(r.of("stream")) < 200
    assert r.text() == "".join(f"{i % 10}\n" for i in range(200_000))


def test_fd_level_and_subprocess_output_is_captured(kernel: Kernel) -> None:
    code = (
        "import os, subprocess, sys\n"
        "print('py')\n"
        "os.system('echo from-shell')\n"
        "subprocess.run(['echo', 'from-subprocess'], check=True)\n"
        "os.write(1, b'raw-bytes\\n')\n"
        "os.write(2, b'raw-err\\n')\n"
        "print('to-stderr', file=sys.stderr)\n"
        "sys.stdout.buffer.write(b'buffer-bytes\\n')\n"
        "subprocess.run([sys.executable, '-c', 'print(\"y\" * 100000)'], check=True)\n"
        "os.system('cat')  # stdin is /dev/null: must not eat the protocol\n"
        "sys.stdout.fileno()"
    )
    r = kernel.run(code)
    assert r.status == "ok", r.messages
    out = r.text("stdout")
    pieces = ["py\n", "from-shell\n", "from-subprocess\n", "raw-bytes\n", "buffer-bytes\n"]
    for piece in [*pieces, "y" * 100000]:
        assert piece in out
    assert "raw-err\n" in r.text("stderr")
    assert "to-stderr\n" in r.text("stderr")
    assert r.of("result")[0]["data"]["text/plain"] == "1"
    assert kernel.run("'still talking'").status == "ok"


def test_output_order_is_kept_across_display_and_subprocesses(kernel: Kernel) -> None:
    r = kernel.run("import os\nprint('a')\ndisplay('b')\nos.system('echo c')\ndisplay('d')")
    seq = [
        m["text"].strip() if m["type"] == "stream" else m["data"]["text/plain"]
        for m in r.messages
        if m["type"] in ("stream", "display")
    ]
    assert seq == ["a", "'b'", "c", "'d'"]


# ---------------------------------------------------------------------------- results, display


def test_trailing_expression_is_the_result(kernel: Kernel) -> None:
    assert kernel.run("1 + 1").of("result")[0]["data"] == {"text/plain": "2"}
    assert kernel.run("x = 3").of("result") == []
    assert kernel.run("None").of("result") == []
    assert kernel.run("print('p')").of("result") == []
    assert kernel.run("3;").of("result") == []
    assert kernel.run("'x' * 20000").of("result")[0]["data"]["text/plain"].__len__() <= 10_000


def test_top_level_await(kernel: Kernel) -> None:
    r = kernel.run("import asyncio\nawait asyncio.sleep(0.01)\n42")
    assert r.of("result")[0]["data"]["text/plain"] == "42"


def test_display_and_mime_bundles(kernel: Kernel) -> None:
    code = """
class Html:
    def _repr_html_(self):
        return '<b>hi</b>'
    def __repr__(self):
        return 'Html()'

class Chart:
    def _repr_mimebundle_(self, include=None, exclude=None):
        return {'application/vnd.vegalite.v5+json': {'mark': 'bar'}, 'text/plain': 'Chart'}

spec = {'$schema': 'https://vega.github.io/schema/vega-lite/v5.json',
        'data': {'values': [{'a': float('nan')}]}}
display(1, 'two')
display(Html())
display(Chart())
display(spec)
display({'text/markdown': '# raw'}, raw=True)
"""
    r = kernel.run(code)
    assert r.status == "ok", r.messages
    shown = [m["data"] for m in r.of("display")]
    assert shown[0] == {"text/plain": "1"}
    assert shown[1] == {"text/plain": "'two'"}
    assert shown[2] == {"text/html": "<b>hi</b>", "text/plain": "Html()"}
    assert shown[3]["application/vnd.vegalite.v5+json"] == {"mark": "bar"}
    assert shown[3]["text/plain"] == "Chart"
    vega = shown[4]["application/vnd.vegalite.v5+json"]
    assert vega["data"]["values"] == [{"a": None}]  # strict JSON: NaN becomes null
    assert shown[5] == {"text/markdown": "# raw", "text/plain": "<text/markdown output>"}


def test_symbols(kernel: Kernel) -> None:
    r = kernel.run(
        "import math\n_hidden = 1\nbig = list(range(100000))\ndef f(): pass\nclass K: pass\n"
    )
    assert sorted(r.defined) == ["K", "_hidden", "big", "f", "math"]
    names = [s["name"] for s in r.done["symbols"]]
    assert "_hidden" not in names
    assert r.symbol("math")["type"] == "builtins.module"
    assert r.symbol("f")["type"] == "builtins.function"
    assert r.symbol("K")["type"] == "builtins.type"
    assert r.symbol("big")["type"] == "builtins.list"
    assert len(r.symbol("big")["repr"]) <= 200


def test_dataframe_result_and_schema(kernel: Kernel) -> None:
    importlib.import_module("pandas")  # the dev extras install it: never skip
    r = kernel.run(
        "import pandas as pd\n"
        "df = pd.DataFrame({'a': [1.5, 2.0, None, 4.0], 'b': ['x', 'y', 'z', 'w']})\n"
        "df"
    )
    assert r.status == "ok", r.messages
    data = r.of("result")[0]["data"]
    assert "<table" in data["text/html"]
    assert "text/plain" in data
    schema = r.symbol("df")["schema"]
    assert schema["rows"] == 4
    assert [c["name"] for c in schema["columns"]] == ["a", "b"]
    assert schema["columns"][0]["dtype"] == "float64"
    assert schema["sample"] == [[1.5, "x"], [2.0, "y"], [None, "z"]]
    assert r.symbol("df")["type"] == "pandas.DataFrame"


def test_pyarrow_table_schema(kernel: Kernel) -> None:
    importlib.import_module("pyarrow")  # the dev extras install it: never skip
    r = kernel.run("import pyarrow as pa\nt = pa.table({'n': [1, 2, 3, 4], 's': list('abcd')})")
    schema = r.symbol("t")["schema"]
    assert schema["rows"] == 4
    assert schema["columns"] == [{"name": "n", "dtype": "int64"}, {"name": "s", "dtype": "string"}]
    assert schema["sample"] == [[1, "a"], [2, "b"], [3, "c"]]


def _is_png(b64: str) -> bool:
    return base64.b64decode(b64).startswith(b"\x89PNG\r\n\x1a\n")


def test_matplotlib_figures_become_png(kernel: Kernel) -> None:
    importlib.import_module("matplotlib")  # the dev extras install it: never skip
    r = kernel.run(
        "import matplotlib.pyplot as plt\n"
        "plt.plot([1, 2, 3])\n"
        "plt.show()\n"
        "plt.figure()\n"
        "plt.plot([3, 2, 1])\n"
        "None"
    )
    assert r.status == "ok", r.messages
    images = [m["data"]["image/png"] for m in r.of("display")]
    assert len(images) == 2  # one from show(), one open at the end of the cell
    assert all(_is_png(i) for i in images)
    assert r.text("stderr") == ""  # no "non-interactive" warning

    r = kernel.run("fig, ax = plt.subplots()\nax.plot([1])\nfig", cell="e", visible=["c"])
    assert [m["type"] for m in r.messages if m["type"] in ("result", "display")] == ["result"]
    assert _is_png(r.of("result")[0]["data"]["image/png"])
    r = kernel.run("len(plt.get_fignums())", cell="d", visible=["c"])
    assert r.of("result")[0]["data"]["text/plain"] == "0"  # figures were closed


# ---------------------------------------------------------------------------- errors


def test_error_traceback_shows_only_the_cell(kernel: Kernel) -> None:
    r = kernel.run("a = 1\nb = 2\nraise ValueError('boom')", cell="cell-7")
    assert r.status == "error"
    err = r.error
    assert (err["ename"], err["evalue"]) == ("ValueError", "boom")
    tb = "\n".join(err["traceback"])
    assert '"<cell cell-7>", line 3' in tb
    assert "raise ValueError('boom')" in tb
    assert "runner.py" not in tb
    assert sorted(r.defined) == ["a", "b"]


def test_library_frames_are_dropped(kernel: Kernel) -> None:
    r = kernel.run("import json\n\njson.loads('{nope')")
    tb = "\n".join(r.error["traceback"])
    assert r.error["ename"] == "JSONDecodeError"
    assert '"<cell c>", line 3' in tb
    assert "json/decoder.py" not in tb
    assert "runner.py" not in tb


@pytest.mark.parametrize(
    ("code", "line", "text"),
    [
        ("x = 1\ny = (\n", 2, "y = ("),
        ("x = 1\n\nreturn x\n", 3, "return x"),  # found by compile(), not by the parser
    ],
)
def test_syntax_errors_point_at_the_cell_line(
    kernel: Kernel, code: str, line: int, text: str
) -> None:
    r = kernel.run(code, cell="S")
    assert r.status == "error"
    assert r.error["ename"] == "SyntaxError"
    tb = "\n".join(r.error["traceback"])
    assert f'"<cell S>", line {line}' in tb
    assert text in tb
    assert "runner.py" not in tb
    assert r.defined == []


def test_sys_exit_ends_the_cell_not_the_runner(kernel: Kernel) -> None:
    r = kernel.run("import sys\nsys.exit(3)")
    assert (r.status, r.error["ename"]) == ("error", "SystemExit")
    assert kernel.run("1").status == "ok"


# ---------------------------------------------------------------------------- interrupt


def _interrupt_after(kernel: Kernel, run_id: str, delay: float = 0.5) -> Run:
    time.sleep(delay)
    os.kill(kernel.proc.pid, signal.SIGINT)
    return kernel.collect(run_id, timeout=15)


def test_sigint_interrupts_the_cell_and_the_runner_survives(kernel: Kernel) -> None:
    kernel.run("x = 'kept'", cell="A")
    r = _interrupt_after(kernel, kernel.start("y = 1\nwhile True: pass", cell="B", visible=["A"]))
    assert r.status == "interrupted"
    assert r.error["ename"] == "KeyboardInterrupt"
    assert r.defined == ["y"]
    assert "runner.py" not in "\n".join(r.error["traceback"])

    after = kernel.run("x", cell="C", visible=["A", "B"])
    assert after.of("result")[0]["data"]["text/plain"] == "'kept'"

    r = _interrupt_after(kernel, kernel.start("import time\ntime.sleep(60)", cell="D"))
    assert r.status == "interrupted"


def test_sigint_between_runs_is_ignored(kernel: Kernel) -> None:
    os.kill(kernel.proc.pid, signal.SIGINT)
    time.sleep(0.2)
    assert kernel.proc.poll() is None
    assert kernel.run("'alive'").status == "ok"


# ---------------------------------------------------------------------------- sql


def test_sql_cells_query_visible_dataframes(kernel: Kernel, tmp_path: Path) -> None:
    importlib.import_module("duckdb")  # the dev extras install it: never skip
    importlib.import_module("pandas")  # the dev extras install it: never skip
    kernel.run("import pandas as pd\nsales = pd.DataFrame({'n': [1, 2, 3]})", cell="A")
    s = kernel.run(
        "select n * 10 as m from sales where n > 1",
        cell="S",
        visible=["A"],
        language="sql",
        output_name="big",
    )
    assert s.status == "ok", s.messages
    assert s.defined == ["big"]
    assert "<table" in s.of("result")[0]["data"]["text/html"]
    assert s.symbol("big")["schema"]["sample"] == [[20], [30]]
    c = kernel.run("big['m'].tolist()", cell="C", visible=["A", "S"])
    assert c.of("result")[0]["data"]["text/plain"] == "[20, 30]"

    (tmp_path / "x.csv").write_text("k,v\na,1\nb,2\n")
    d = kernel.run("select sum(v) as total from read_csv('x.csv')", cell="D", language="sql")
    assert d.status == "ok", d.messages
    assert d.defined == ["_sql"]  # the default output name
    assert d.done["symbols"] == []

    e = kernel.run("select * from sales", cell="E", language="sql")  # A not visible
    assert e.status == "error"
    assert "sales" in e.error["evalue"]


def test_sql_query_can_be_interrupted(kernel: Kernel) -> None:
    importlib.import_module("duckdb")  # the dev extras install it: never skip
    importlib.import_module("pandas")  # the dev extras install it: never skip
    run_id = kernel.start(
        "select count(*) from range(1000000000000) a where a.range % 7 = 3", language="sql"
    )
    r = _interrupt_after(kernel, run_id, delay=1.0)
    assert r.status == "interrupted"
    assert kernel.run("1").status == "ok"


def test_sql_without_duckdb_names_the_package(tmp_path: Path) -> None:
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "duckdb.py").write_text("raise ImportError('not here')\n")
    k = Kernel(tmp_path, env={**os.environ, "PYTHONPATH": str(shadow)})
    try:
        r = k.run("select 1", language="sql")
        assert r.status == "error"
        assert r.error["ename"] == "ModuleNotFoundError"
        assert "'duckdb'" in r.error["evalue"]
    finally:
        k.close()


def test_sigterm_and_end_of_input_end_the_runner(tmp_path: Path) -> None:
    k = Kernel(tmp_path)
    try:
        k.start("import time\ntime.sleep(60)")
        time.sleep(0.3)
        k.proc.send_signal(signal.SIGTERM)
        assert k.proc.wait(10) == 128 + signal.SIGTERM
    finally:
        k.close()
    k = Kernel(tmp_path)
    try:
        assert k.proc.stdin is not None
        k.proc.stdin.close()
        assert k.proc.wait(10) == 0
    finally:
        k.close()


def _can_unshare_pid() -> bool:
    try:
        return subprocess.run(["unshare", "--pid", "--fork", "true"], timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.skipif(not _can_unshare_pid(), reason="needs unshare --pid (root)")
def test_sigint_reaches_the_runner_as_pid_1(tmp_path: Path) -> None:
    # The kernel drops signals to a PID namespace's init unless it installed a handler:
    # this is the situation of the runner as a container's PID 1.
    k = Kernel(tmp_path, prefix=["unshare", "--pid", "--fork", "--kill-child"])
    try:
        assert k.ready["pid"] == 1
        run_id = k.start("while True: pass")
        time.sleep(0.5)
        children = Path(f"/proc/{k.proc.pid}/task/{k.proc.pid}/children").read_text().split()
        os.kill(int(children[0]), signal.SIGINT)
        assert k.collect(run_id, timeout=15).status == "interrupted"
        assert k.run("1").status == "ok"
    finally:
        k.close()


MAGICS_CELL = """\
%timeit -n 5 -r 3 sum(range(n))
%time total = sum(range(n))
!echo from-the-shell $((6 * 7))
for i in range(2):
    !echo loop
text = '''
%timeit not a magic in a string
'''
print('after', total)
"""


def test_magics_timeit_time_and_shell_see_only_the_cells_above(kernel: Kernel) -> None:
    assert kernel.run("n = 1000", cell="a").status == "ok"
    r = kernel.run(MAGICS_CELL, cell="b", visible=["a"])
    assert r.status == "ok", r.messages
    out = r.text()
    assert "per loop (mean ± std. dev. of 3 runs, 5 loops each)" in out
    assert "Wall time:" in out
    assert "from-the-shell 42\nloop\nloop\n" in out
    assert out.rstrip().endswith("after 499500")
    assert {"total", "i", "text"} <= set(r.defined)
    # Position semantics hold for magics: a cell that does not see `n` cannot time it.
    r = kernel.run("%timeit n + 1", cell="c")
    assert r.status == "error"
    assert r.error["ename"] == "NameError"


def test_cell_magics_and_a_failing_command(kernel: Kernel) -> None:
    r = kernel.run("%%bash\necho one\necho two >&2\n", cell="a")
    assert r.status == "ok", r.messages
    assert r.text() == "one\n"
    assert r.text("stderr") == "two\n"
    r = kernel.run("%%timeit -n 2 -r 2\nx = [i for i in range(10)]\n", cell="b")
    assert "2 runs, 2 loops each" in r.text()
    r = kernel.run("!exit 3", cell="c")
    assert r.of("result")[0]["data"]["text/plain"] == "exit status 3"


def test_pip_magic_prints_what_the_host_did_and_unknown_magics_say_what_exists(
    kernel: Kernel,
) -> None:
    note = "Added tabulate to this notebook's dependencies."
    r = kernel.run("%pip install tabulate\nprint('next')", cell="a", pip_note=note)
    assert r.status == "ok", r.messages
    assert r.text() == note + "\nnext\n"
    r = kernel.run("%pip freeze", cell="b")
    assert r.status == "ok"
    assert "==" in r.text()
    r = kernel.run("%load_ext autoreload", cell="c")
    assert r.status == "error"
    assert r.error["ename"] == "UsageError"
    assert "%load_ext is not available in Weft" in r.error["evalue"]
    r = kernel.run("%pip uninstall numpy", cell="d")
    assert r.error["ename"] == "UsageError"
