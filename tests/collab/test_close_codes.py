"""One table of close codes: collab.close_codes, which docs/api.md and the web client follow
(and no sender writes a code of its own)."""

from __future__ import annotations

import re
from pathlib import Path

from collab.close_codes import CloseCode

ROOT = Path(__file__).resolve().parents[2]


def _docs_codes() -> set[int]:
    text = (ROOT / "docs" / "api.md").read_text()
    section = text.split("### Close codes", 1)[1].split("\n## ", 1)[0]
    return {int(code) for code in re.findall(r"^\| (\d{4}) \|", section, re.MULTILINE)}


def test_the_api_docs_list_every_close_code_the_server_sends() -> None:
    # 1000 is the ordinary end, not a refusal: the table lists what a client must handle.
    assert _docs_codes() == {int(code) for code in CloseCode if code is not CloseCode.NORMAL}


def test_the_web_client_stops_retrying_on_exactly_the_final_codes() -> None:
    text = (ROOT / "web" / "src" / "notebook" / "connection.js").read_text()
    table = text.split("const CLOSE_REASONS = {", 1)[1].split("}", 1)[0]
    listed = {int(code) for code in re.findall(r"^\s*(\d{4}):", table, re.MULTILINE)}
    assert listed == {int(code) for code in CloseCode if code.stops_retrying}


def test_no_sender_closes_with_a_number_of_its_own() -> None:
    sent = re.compile(r"(?:close|revoke|_refuse)\(\s*\d{4}|CLOSE_[A-Z_]+\s*=\s*\d{4}")
    for path in sorted((ROOT / "collab").rglob("*.py")):
        found = sent.findall(path.read_text())
        assert not found, f"{path.relative_to(ROOT)}: {found} (use collab.close_codes)"
