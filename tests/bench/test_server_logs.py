"""The sync bench reads a Weft server's log for the run only, and keeps the file only when
there is something in it to read: a bench session of many runs left hundreds in /tmp."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import sync_latency as sl


def _line(level: str, event: str) -> str:
    return json.dumps({"ts": "2026-12-03T16:00:00.000Z", "level": level, "event": event})


def test_only_what_the_run_wrote_counts(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    # The startup banner is not JSON and is written before the run: not a problem.
    log.write_text("weft: web client at http://127.0.0.1:1/\n" + _line("warning", "old") + "\n")
    offset = log.stat().st_size
    with log.open("a") as out:
        out.write(_line("info", "fine") + "\n")
        out.write(_line("error", "append failed") + "\n")
        out.write("Traceback (most recent call last):\n")
        out.write("[1, 2]\n")  # JSON, but not a log entry
    problems = sl.read_log_problems(log, offset)
    assert [p.get("event", p.get("raw")) for p in problems] == [
        "append failed",
        "Traceback (most recent call last):",
        "[1, 2]",
    ]
    assert sl.read_log_problems(log, log.stat().st_size) == []
    assert sl.read_log_problems(tmp_path / "missing.log", 0) == []


def test_the_log_is_deleted_unless_kept(tmp_path: Path) -> None:
    quiet = sl.WeftServer(name="weft", init_cell=True, log_path=tmp_path / "quiet.log")
    quiet.log_path.write_text(_line("info", "listening") + "\n")  # type: ignore[union-attr]
    quiet.stop()
    assert not (tmp_path / "quiet.log").exists()

    failed = sl.WeftServer(name="weft", init_cell=True, log_path=tmp_path / "failed.log")
    failed.log_path.write_text(_line("info", "listening") + "\n")  # type: ignore[union-attr]
    result: dict[str, object] = {"error": "clients never converged"}
    sl.keep_log_if_failed(failed, result)
    failed.stop()
    assert (tmp_path / "failed.log").exists()
    assert result["server_log"] == str(tmp_path / "failed.log")
