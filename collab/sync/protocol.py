"""The y-protocols wire format: sync (step 1, step 2, update) and awareness messages.

The format is small enough to own (lib0 variable-length integers and byte strings). The
decoder is strict, because every byte comes from an untrusted client: anything malformed
raises ``ProtocolError`` and never an ``IndexError`` from deep inside a parser. What a sync
message carries (a state vector or an update) is checked by ``collab.sync.update_check`` before
the CRDT binding sees it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import IntEnum
from typing import NamedTuple

from collab.errors import ProtocolError

__all__ = [
    "AwarenessEntry",
    "MessageType",
    "SyncType",
    "create_sync_step1_message",
    "create_sync_step2_message",
    "create_update_message",
    "decode_awareness",
    "encode_awareness",
    "encode_awareness_message",
    "parse_message",
    "write_var_uint",
]


class MessageType(IntEnum):
    SYNC = 0
    AWARENESS = 1
    AUTH = 2
    QUERY_AWARENESS = 3


class SyncType(IntEnum):
    STEP1 = 0
    STEP2 = 1
    UPDATE = 2


def write_var_uint(number: int) -> bytes:
    """lib0's unsigned variable-length integer: 7 bits a byte, low bits first."""
    out = bytearray()
    while number > 0x7F:
        out.append(0x80 | (number & 0x7F))
        number >>= 7
    out.append(number)
    return bytes(out)


# The two bytes that open each kind of sync message, made once: one is made for every
# update a room broadcasts.
_SYNC_PREFIXES = {sync_type: bytes((MessageType.SYNC, sync_type)) for sync_type in SyncType}
# Wire values -> members, looked up for every frame (calling an IntEnum costs more).
_MESSAGE_TYPES = {kind.value: kind for kind in MessageType}
_SYNC_TYPES = {sync_type.value: sync_type for sync_type in SyncType}


def _sync_message(sync_type: SyncType, payload: bytes) -> bytes:
    size = len(payload)
    length = bytes((size,)) if size < 0x80 else write_var_uint(size)
    return _SYNC_PREFIXES[sync_type] + length + payload


def create_sync_step1_message(state_vector: bytes) -> bytes:
    return _sync_message(SyncType.STEP1, state_vector)


def create_sync_step2_message(update: bytes) -> bytes:
    return _sync_message(SyncType.STEP2, update)


def create_update_message(update: bytes) -> bytes:
    return _sync_message(SyncType.UPDATE, update)


class Reader:
    """Reads lib0 encodings from a buffer; raises ``error`` (ProtocolError) past the end."""

    __slots__ = ("buf", "pos")
    error: type[ProtocolError] = ProtocolError

    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.pos = 0

    def var_uint(self) -> int:
        buf = self.buf
        pos = self.pos
        if pos < len(buf) and buf[pos] < 0x80:  # the common case: one byte
            self.pos = pos + 1
            return buf[pos]
        value = 0
        shift = 0
        while True:
            if self.pos >= len(buf):
                raise self.error("truncated variable-length integer")
            byte = buf[self.pos]
            self.pos += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value
            shift += 7
            if shift > 63:
                raise self.error("variable-length integer too long")

    def var_bytes(self) -> bytes:
        length = self.var_uint()
        end = self.pos + length
        if end > len(self.buf):
            raise self.error("length prefix runs past the end of the frame")
        data = self.buf[self.pos : end]
        self.pos = end
        return data

    def var_string(self) -> str:
        try:
            return self.var_bytes().decode("utf-8")
        except UnicodeDecodeError:
            raise self.error("string is not valid UTF-8") from None


class Message(NamedTuple):
    """One parsed frame (a tuple: made for every frame a client sends)."""

    kind: MessageType
    sync_type: SyncType | None
    payload: bytes


def parse_message(frame: bytes) -> Message:
    """Split one binary frame into its message type and payload."""
    reader = Reader(frame)
    raw_kind = reader.var_uint()
    kind = _MESSAGE_TYPES.get(raw_kind)
    if kind is None:
        raise ProtocolError(f"unknown message type {raw_kind}")
    if kind is MessageType.SYNC:
        raw_sync = reader.var_uint()
        sync_type = _SYNC_TYPES.get(raw_sync)
        if sync_type is None:
            raise ProtocolError(f"unknown sync message type {raw_sync}")
        payload = reader.var_bytes()
        return Message(kind, sync_type, payload)
    if kind is MessageType.AWARENESS:
        return Message(kind, None, reader.var_bytes())
    return Message(kind, None, b"")


@dataclass(frozen=True, slots=True)
class AwarenessEntry:
    client_id: int
    clock: int
    # The JSON text exactly as sent; "null" means the client's state is gone.
    state: str

    @property
    def removed(self) -> bool:
        return self.state == "null"


def decode_awareness(payload: bytes) -> list[AwarenessEntry]:
    """Decode an awareness update; every state must be valid JSON, as peers will parse it."""
    reader = Reader(payload)
    count = reader.var_uint()
    if count > 10_000:
        raise ProtocolError("awareness update lists too many clients")
    entries = []
    for _ in range(count):
        client_id = reader.var_uint()
        clock = reader.var_uint()
        state = reader.var_string()
        try:
            json.loads(state)
        except ValueError:
            raise ProtocolError("awareness state is not valid JSON") from None
        entries.append(AwarenessEntry(client_id, clock, state))
    return entries


def encode_awareness(entries: list[AwarenessEntry]) -> bytes:
    parts = [write_var_uint(len(entries))]
    for entry in entries:
        state = entry.state.encode("utf-8")
        parts += [
            write_var_uint(entry.client_id),
            write_var_uint(entry.clock),
            write_var_uint(len(state)),
            state,
        ]
    return b"".join(parts)


def encode_awareness_message(entries: list[AwarenessEntry]) -> bytes:
    payload = encode_awareness(entries)
    return bytes([MessageType.AWARENESS]) + write_var_uint(len(payload)) + payload
