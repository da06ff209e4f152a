"""One document schema: the web client names the keys, run states and kernel states that
collab.document.schema defines, and the run state machine holds."""

from __future__ import annotations

import re
import typing
from pathlib import Path

import pytest

from collab.document import schema
from collab.document.schema import (
    FINISHED,
    TRANSITIONS,
    KernelState,
    KernelStatus,
    RunRecord,
    RunState,
    may_become,
    run_record,
)
from collab.sync import update_check

WEB = Path(__file__).resolve().parents[2] / "web" / "src" / "notebook"


def _read(name: str) -> str:
    return (WEB / name).read_text()


def _found(pattern: str, text: str) -> set[str]:
    return set(re.findall(pattern, text))


def test_the_web_client_opens_exactly_the_documents_roots() -> None:
    model = _read("model.js")
    arrays = _found(r"doc\.getArray\('(\w+)'\)", model)
    maps = _found(r"doc\.getMap\('(\w+)'\)", model)
    assert arrays == {schema.CELLS}
    assert maps == set(schema.MAP_ROOTS)
    assert update_check.MAP_ROOTS == schema.MAP_ROOTS
    assert update_check.ARRAY_ROOTS == {schema.CELLS}


def test_the_web_client_writes_only_the_schemas_cell_keys() -> None:
    model = _read("model.js")
    used = _found(r"cell\.(?:get|set|has|delete)\('(\w+)'\)", model)
    assert used <= set(schema.CELL_KEYS), used - set(schema.CELL_KEYS)
    # and it writes every key a new cell has
    written = _found(r"cell\.set\('(\w+)'", model)
    assert written == set(schema.CELL_KEYS)
    assert _found(r"this\.meta\.(?:get|set)\('(\w+)'\)", model) == {schema.METADATA}
    cell_metadata = _found(r"(?<!this\.)meta\.(?:get|set|delete)\('(\w+)'\)", model)
    assert cell_metadata == {schema.LANGUAGE}
    assert _found(r"metadata\.get\('(\w+)'\)", model) == {schema.LANGUAGE, schema.TITLE}


def test_the_web_client_knows_every_run_state_and_only_those() -> None:
    runs = _read("runs.js")
    cases = _found(r"case '(\w+)':", runs)
    compared = _found(r"run\.state [!=]== '(\w+)'", runs) | _found(
        r"run\.state [!=]== '(\w+)'", _read("kernel.js") + _read("cell.js") + _read("model.js")
    )
    shown = _found(r"state: '(\w+)'", runs)
    values = {s.value for s in RunState}
    assert cases | compared <= values, (cases | compared) - values
    # Every state has its own words in describeRun (done and error in the default branch).
    assert cases == values - {RunState.DONE, RunState.ERROR}
    assert {RunState.DONE, RunState.ERROR} <= shown
    active = _found(r"ACTIVE = new Set\(\[(.*)\]\)", runs)
    assert {s.strip(" '") for a in active for s in a.split(",")} == set(schema.ACTIVE)


def test_the_web_client_reads_only_run_record_fields() -> None:
    fields = set(typing.get_type_hints(RunRecord))
    text = _read("runs.js") + _read("kernel.js") + _read("cell.js")
    read = _found(r"(?<![\w-])run\.(\w+)", text)
    assert read <= fields, read - fields
    assert {"state", "run_id", "source_hash", "stale", "previous_kernel"} <= read


def test_the_web_client_knows_every_kernel_state() -> None:
    kernel = _read("kernel.js")
    labels = re.search(r"const LABELS = \{(.*?)\}", kernel, re.S)
    assert labels is not None
    shown = set(re.findall(r"^\s*(\w+):", labels.group(1), re.M))
    # disconnected and none are the client's own: no kernel state the server writes
    assert shown - {"disconnected", "none"} == {s.value for s in KernelState}
    read = _found(r"model\.kernel\.get\('(\w+)'\)", kernel)
    assert read <= set(typing.get_type_hints(KernelStatus)), read


@pytest.mark.parametrize(
    ("before", "after", "allowed"),
    [
        (None, RunState.QUEUED, True),
        (RunState.QUEUED, RunState.RUNNING, True),
        (RunState.QUEUED, RunState.CANCELLED, True),
        (RunState.RUNNING, RunState.DONE, True),
        (RunState.RUNNING, RunState.ERROR, True),
        (RunState.DONE, RunState.ERROR, True),  # a forged `done`, found out
        (RunState.DONE, RunState.DONE, True),  # a stale mark: fields change, not the state
        (RunState.RUNNING, RunState.QUEUED, False),
        (RunState.DONE, RunState.RUNNING, False),
        (RunState.ERROR, RunState.DONE, False),  # a lease expired: the late end is refused
        (RunState.CANCELLED, RunState.RUNNING, False),
    ],
)
def test_the_run_state_machine(before: RunState | None, after: RunState, allowed: bool) -> None:
    assert may_become(before, after) is allowed


def test_finished_states_lead_nowhere_but_a_found_out_forgery() -> None:
    assert all(not TRANSITIONS[s] for s in FINISHED - {RunState.DONE})
    assert set(TRANSITIONS) == set(RunState)


@pytest.mark.parametrize(
    "value", [None, "done", [], {"state": "finished"}, {"state": 3}, {"run_id": "x"}]
)
def test_what_is_no_run_record_reads_as_none(value: object) -> None:
    assert run_record(value) is None


def test_a_run_record_reads_as_itself() -> None:
    record = {"state": "done", "run_id": "r", "stale": True}
    assert run_record(record) == record
