"""What a kernel may say: framing and validation of the runner's JSON lines.

Everything a kernel container sends is written by code the cell controls: the runner's
protocol descriptor is in reach of cell code (docs/runner-protocol.md, "Trust"), and even
the runner's own messages carry reprs and mime bundles that cell objects produce. So the
host parses it as hostile input: framing is linear with a cap per message, and every
message is checked against the shapes of the protocol before anything acts on it.

>>> framer = LineFramer(max_bytes=32 * 2**20)
>>> for line in framer.feed(chunk):
...     message = parse_message(line)
"""

from __future__ import annotations

import json
from typing import Any

# Identifiers (run ids, mime types, stream names) are short; anything longer is not ours.
MAX_ID_CHARS = 200
# Nesting of JSON values inside a message (vega-lite specs nest a few levels, not hundreds).
MAX_DEPTH = 64
RUN_MESSAGES = frozenset({"stream", "display", "result", "error", "done"})
STATUSES = frozenset({"ok", "error", "interrupted"})


class ProtocolViolation(Exception):
    """The kernel sent something the runner protocol does not allow; ``reason`` says what."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class MessageTooLarge(ProtocolViolation):
    def __init__(self, max_bytes: int) -> None:
        super().__init__(
            f"the kernel sent a message of more than {_mib(max_bytes)} "
            "(WEFT_KERNEL_MESSAGE_MAX_BYTES)"
        )


def _mib(size: int) -> str:
    return f"{size / 2**20:g} MiB" if size >= 2**20 else f"{size} bytes"


class LineFramer:
    """Splits a byte stream into lines in linear time, refusing a line past ``max_bytes``.

    Pieces of a line are kept in a list and joined once when its newline arrives, so a long
    line costs its length, not its length squared.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._parts: list[bytes] = []
        self._size = 0

    def feed(self, data: bytes) -> list[bytes]:
        lines: list[bytes] = []
        start = 0
        while (end := data.find(b"\n", start)) >= 0:
            piece = data[start:end]
            if self._size + len(piece) > self.max_bytes:
                raise MessageTooLarge(self.max_bytes)
            if self._parts:
                self._parts.append(piece)
                piece = b"".join(self._parts)
                self._parts, self._size = [], 0
            if piece.strip():
                lines.append(piece)
            start = end + 1
        if start < len(data):
            rest = data[start:]
            self._size += len(rest)
            if self._size > self.max_bytes:
                raise MessageTooLarge(self.max_bytes)
            self._parts.append(rest)
        return lines


def _no_constants(name: str) -> Any:
    raise ProtocolViolation(f"a message contains {name}, which is not JSON")


def parse_message(line: bytes) -> dict[str, Any]:
    """One line as a checked protocol message. Raises ProtocolViolation."""
    try:
        value = json.loads(line, parse_constant=_no_constants)
    except ProtocolViolation:
        raise
    except RecursionError:
        raise ProtocolViolation("a message nests JSON values too deeply") from None
    except ValueError as exc:
        raise ProtocolViolation(f"the kernel sent a line that is not JSON ({exc})") from None
    return check_message(value)


def _depth_ok(value: Any) -> bool:
    todo: list[tuple[Any, int]] = [(value, 0)]
    while todo:
        item, depth = todo.pop()
        if depth > MAX_DEPTH:
            return False
        if isinstance(item, dict):
            todo.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            todo.extend((v, depth + 1) for v in item)
    return True


def _field(msg: dict[str, Any], name: str, kind: type | tuple[type, ...], what: str) -> Any:
    value = msg.get(name)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ProtocolViolation(f"'{msg.get('type')}' message: '{name}' must be {what}")
    return value


def _short(msg: dict[str, Any], name: str) -> str:
    value: str = _field(msg, name, str, "a string")
    if len(value) > MAX_ID_CHARS:
        raise ProtocolViolation(f"'{msg.get('type')}' message: '{name}' is too long")
    return value


def _strings(msg: dict[str, Any], name: str) -> list[str]:
    value: list[Any] = _field(msg, name, list, "a list of strings")
    if not all(isinstance(item, str) for item in value):
        raise ProtocolViolation(f"'{msg.get('type')}' message: '{name}' must be a list of strings")
    return value


def _bundle(msg: dict[str, Any]) -> None:
    data: dict[str, Any] = _field(msg, "data", dict, "a mime bundle (an object)")
    for mime, value in data.items():
        if len(mime) > MAX_ID_CHARS or "/" not in mime:
            raise ProtocolViolation(f"'{msg['type']}' message: {mime[:40]!r} is not a mime type")
        if not isinstance(value, str) and not mime.endswith("json"):
            raise ProtocolViolation(
                f"'{msg['type']}' message: the value of {mime} must be a string"
            )
    _field(msg, "metadata", dict, "an object")


def _symbols(msg: dict[str, Any]) -> None:
    symbols: list[Any] = _field(msg, "symbols", list, "a list of symbols")
    for symbol in symbols:
        if not (
            isinstance(symbol, dict)
            and all(isinstance(symbol.get(key), str) for key in ("name", "type", "repr"))
            and isinstance(symbol.get("schema", {}), dict)
        ):
            raise ProtocolViolation(
                "'done' message: every symbol must be an object with 'name', 'type' and "
                "'repr' strings"
            )


def check_message(value: Any) -> dict[str, Any]:
    """``value`` if it is a message the runner protocol allows. Raises ProtocolViolation."""
    if not isinstance(value, dict):
        raise ProtocolViolation(f"a message must be a JSON object, not {type(value).__name__}")
    kind = value.get("type")
    if not isinstance(kind, str):
        raise ProtocolViolation("a message must have a 'type'")
    if not _depth_ok(value):
        raise ProtocolViolation("a message nests JSON values too deeply")
    if kind == "ready":
        _field(value, "python", str, "a string")
        _field(value, "pid", int, "an integer")
        return value
    if kind == "protocol_error":
        _field(value, "detail", str, "a string")
        return value
    if kind == "response":  # to a kernel request (executor.kernel_requests)
        _short(value, "request_id")
        if _field(value, "ok", bool, "true or false"):
            _field(value, "result", dict, "an object")
        else:
            _field(value, "error", str, "a string")
        return value
    if kind not in RUN_MESSAGES:
        raise ProtocolViolation(f"unknown message type {kind[:40]!r}")
    # Text written before the first run has no run (the host drops it).
    if not (kind == "stream" and value.get("run_id") is None):
        _short(value, "run_id")
    if kind == "stream":
        if value.get("name") not in ("stdout", "stderr"):
            raise ProtocolViolation("'stream' message: 'name' must be stdout or stderr")
        _field(value, "text", str, "a string")
    elif kind in ("display", "result"):
        _bundle(value)
    elif kind == "error":
        _field(value, "ename", str, "a string")
        _field(value, "evalue", str, "a string")
        _strings(value, "traceback")
    else:  # done
        if value.get("status") not in STATUSES:
            raise ProtocolViolation("'done' message: 'status' must be ok, error or interrupted")
        _strings(value, "defined")
        if "changed" in value:
            _strings(value, "changed")
        _symbols(value)
        _field(value, "duration_ms", (int, float), "a number")
        if "detail" in value:
            _field(value, "detail", str, "a string")
    return value
