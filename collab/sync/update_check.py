"""Every Yjs update from a client is decoded and checked here before the CRDT binding sees it.

The binding (yrs, through pycrdt) is not safe against hostile input on its own: measured on
pycrdt 0.14.13, a 200 KB update holding a value nested 100,000 deep overflows its stack and
kills the process (SIGSEGV, not an exception), some mutated updates panic it in the middle
of integrating, and others are accepted with references to changes the document does not
have, which yrs parks as "pending" and tries again on every later update (the state that
later panicked it or spun it at 100% CPU). So an update is accepted only if it is, exactly:

- well formed (lib0 update v1: every length and count inside the frame, valid UTF-8,
  clocks and client ids within the ranges yrs and browsers use);
- made only of content our document schema uses (strings, values, deletions, and the
  Array, Map and Text types; no sub-documents, XML, formatting or legacy JSON content), with
  values nested at most ``MAX_DEPTH`` deep;
- rooted only in the schema's top-level names, with map entries only in maps;
- complete: every change it builds on is in the document already or earlier in this
  update (no gaps in a client's clocks, no reference to an unknown item, deletions only of
  known items), so nothing is ever left pending.

The check walks the update once (linear in its size) and never allocates more than the
update's own size.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from collab.errors import ProtocolError
from collab.sync.protocol import Reader

# Top-level names of the notebook document (DESIGN.md "The document") and their kinds.
ARRAY_ROOTS = frozenset({"cells"})
MAP_ROOTS = frozenset({"meta", "runs", "symbols", "kernel", "assist"})

# How deep a value may nest (a cell's metadata needs a handful of levels; browsers and yrs
# decode values recursively, so depth is a stack an attacker would otherwise choose).
MAX_DEPTH = 48
# yrs counts clocks in u32; browsers pick client ids below 2^32 too (53 bits are safe in JS).
MAX_CLOCK = 2**32 - 1
MAX_CLIENT = 2**53 - 1

# Content kinds (yjs's "content refs").
_GC, _DELETED, _JSON, _BINARY, _STRING, _EMBED, _FORMAT, _TYPE, _ANY, _DOC, _SKIP = range(11)
_TYPE_ARRAY, _TYPE_MAP, _TYPE_TEXT = 0, 1, 2
_CONTENT_NAMES = {
    _JSON: "legacy JSON content",
    _EMBED: "a text embed",
    _FORMAT: "text formatting",
    _DOC: "a sub-document",
    _SKIP: "a gap (skip)",
}


class UpdateRefused(ProtocolError):
    """The update is malformed, uses what the schema does not, or depends on missing changes."""


@dataclass(slots=True)
class UpdateFacts:
    """What an accepted update holds: per client the clocks it reaches, and its size."""

    ends: dict[int, int] = field(default_factory=dict)
    items: int = 0
    deletes: int = 0
    # Characters of text and values it inserts.
    inserted_bytes: int = 0
    # New maps that may be elements of a list (a cell is one): an upper bound on the cells it
    # adds, for the cell limit. Elements whose list is named by id are not counted (nested).
    new_list_maps: int = 0

    @property
    def empty(self) -> bool:
        return self.items == 0 and self.deletes == 0


class _Reader(Reader):
    """The protocol's lib0 reader, refusing the update, plus what updates also hold."""

    __slots__ = ()
    error = UpdateRefused

    def uint8(self) -> int:
        if self.pos >= len(self.buf):
            raise UpdateRefused("update ends in the middle of a change")
        byte = self.buf[self.pos]
        self.pos += 1
        return byte

    def var_int(self) -> int:
        byte = self.uint8()
        value = byte & 0x3F
        negative = bool(byte & 0x40)
        shift = 6
        while byte & 0x80:
            byte = self.uint8()
            value |= (byte & 0x7F) << shift
            shift += 7
            if shift > 63:
                raise UpdateRefused("number too long in update")
        return -value if negative else value

    def fixed(self, size: int) -> bytes:
        end = self.pos + size
        if end > len(self.buf):
            raise UpdateRefused("update ends in the middle of a value")
        data = self.buf[self.pos : end]
        self.pos = end
        return data


def _any(reader: _Reader, depth: int) -> None:
    """Skip one lib0 "any" value, refusing what nests too deep."""
    if depth > MAX_DEPTH:
        raise UpdateRefused(f"a value nests deeper than {MAX_DEPTH} levels")
    tag = reader.uint8()
    if tag in (126, 127, 120, 121):  # null, undefined, true, false
        return
    if tag == 125:
        reader.var_int()
    elif tag == 124:
        reader.fixed(4)
    elif tag in (123, 122):  # float64, bigint64
        reader.fixed(8)
    elif tag == 119:
        reader.var_string()
    elif tag == 118:
        for _ in range(_count(reader)):
            reader.var_string()
            _any(reader, depth + 1)
    elif tag == 117:
        for _ in range(_count(reader)):
            _any(reader, depth + 1)
    elif tag == 116:
        reader.var_bytes()
    else:
        raise UpdateRefused(f"unknown value tag {tag} in update")


def _count(reader: _Reader) -> int:
    """A count of things that follow: each takes at least one byte, so it is bounded."""
    count = reader.var_uint()
    if count > len(reader.buf) - reader.pos:
        raise UpdateRefused("a count in the update is larger than the update")
    return count


def _id(reader: _Reader) -> tuple[int, int]:
    client = reader.var_uint()
    clock = reader.var_uint()
    if client > MAX_CLIENT or clock > MAX_CLOCK:
        raise UpdateRefused("an id in the update is out of range")
    return client, clock


@dataclass(slots=True)
class _Item:
    clock: int
    length: int
    refs: tuple[tuple[int, int], ...]


def _content(reader: _Reader, ref: int, facts: UpdateFacts, list_element: bool) -> int:
    """Read one item's content; return its length in clock units."""
    if ref == _DELETED:
        length = reader.var_uint()
        if length == 0:
            raise UpdateRefused("an empty deletion in update")
        return length
    if ref == _STRING:
        text = reader.var_string()
        facts.inserted_bytes += len(text)
        # Yjs counts text in UTF-16 code units, and so do clocks.
        length = len(text) + sum(1 for ch in text if ord(ch) > 0xFFFF)
        if length == 0:
            raise UpdateRefused("an empty text insertion in update")
        return length
    if ref == _ANY:
        start = reader.pos
        count = _count(reader)
        if count == 0:
            raise UpdateRefused("an empty value list in update")
        for _ in range(count):
            _any(reader, 1)
        facts.inserted_bytes += reader.pos - start
        return count
    if ref == _BINARY:
        facts.inserted_bytes += len(reader.var_bytes())
        return 1
    if ref == _TYPE:
        kind = reader.var_uint()
        if kind not in (_TYPE_ARRAY, _TYPE_MAP, _TYPE_TEXT):
            raise UpdateRefused("update creates a shared type the notebook does not use")
        if kind == _TYPE_MAP and list_element:
            facts.new_list_maps += 1
        return 1
    name = _CONTENT_NAMES.get(ref, f"unknown content {ref}")
    raise UpdateRefused(f"update holds {name}, which the notebook does not use")


def check_update(update: bytes, state: dict[int, int]) -> UpdateFacts:
    """Check an update against the document's state vector (client -> next clock).

    Raises ``UpdateRefused`` naming the first problem; returns what the update holds.
    """
    reader = _Reader(update)
    facts = UpdateFacts()
    groups: dict[int, list[_Item]] = {}
    for _ in range(_count(reader)):
        structs = _count(reader)
        client = reader.var_uint()
        clock = reader.var_uint()
        if client > MAX_CLIENT or clock > MAX_CLOCK:
            raise UpdateRefused("an id in the update is out of range")
        if client in groups:
            raise UpdateRefused("update lists one client twice")
        if structs == 0:
            raise UpdateRefused("update lists a client with no changes")
        if clock > state.get(client, 0):
            raise UpdateRefused(
                "update builds on changes this notebook does not have (a gap in a client's "
                "clock): sync first"
            )
        items: list[_Item] = []
        for _ in range(structs):
            info = reader.uint8()
            ref = info & 0x1F
            if ref == _GC:
                length = reader.var_uint()
                if length == 0:
                    raise UpdateRefused("an empty collected range in update")
                items.append(_Item(clock, length, ()))
            elif ref == _SKIP:
                raise UpdateRefused("update holds a gap (skip), which clients never send")
            else:
                refs: list[tuple[int, int]] = []
                # A list element whose list may be ``cells``: one placed by a neighbour, or
                # named at the root. (Map entries carry a key: bit 0x20.)
                list_element = not info & 0x20 and bool(info & 0xC0)
                if info & 0x80:
                    refs.append(_id(reader))
                if info & 0x40:
                    refs.append(_id(reader))
                if not info & 0xC0:
                    # No neighbours to take the parent from: it is named here.
                    if reader.var_uint() == 1:
                        root = reader.var_string()
                        if root not in ARRAY_ROOTS and root not in MAP_ROOTS:
                            raise UpdateRefused(f"update writes an unknown top-level {root!r}")
                        if (root in MAP_ROOTS) != bool(info & 0x20):
                            raise UpdateRefused(f"update writes {root!r} as the wrong kind")
                        list_element = root in ARRAY_ROOTS
                    else:
                        refs.append(_id(reader))
                    if info & 0x20:
                        reader.var_string()
                length = _content(reader, ref, facts, list_element)
                items.append(_Item(clock, length, tuple(refs)))
                facts.items += 1
            clock += items[-1].length
            if clock > MAX_CLOCK:
                raise UpdateRefused("a clock in the update is out of range")
        groups[client] = items
        facts.ends[client] = clock

    # Integrate in thought, as yrs will: every reference must point at an item the document
    # has or one this update adds before it is needed. Anything else would be left pending.
    known = dict(state)
    positions = dict.fromkeys(groups, 0)
    remaining = sum(len(items) for items in groups.values())
    while remaining:
        progressed = False
        for client, items in groups.items():
            index = positions[client]
            while index < len(items):
                item = items[index]
                if any(clock >= known.get(owner, 0) for owner, clock in item.refs):
                    break
                end = item.clock + item.length
                if end > known.get(client, 0):
                    known[client] = end
                index += 1
                remaining -= 1
                progressed = True
            positions[client] = index
        if not progressed:
            raise UpdateRefused("update refers to changes this notebook does not have: sync first")

    for _ in range(_count(reader)):
        client = reader.var_uint()
        for _ in range(_count(reader)):
            clock = reader.var_uint()
            length = reader.var_uint()
            if length == 0 or clock + length > known.get(client, 0):
                raise UpdateRefused("update deletes changes this notebook does not have")
            facts.deletes += 1
    if reader.pos != len(update):
        raise UpdateRefused("update has bytes past its end")
    return facts


def decode_state_vector(state: bytes) -> dict[int, int]:
    """A state vector (client -> next clock), strictly; also checks one a client sent."""
    reader = _Reader(state)
    result: dict[int, int] = {}
    for _ in range(_count(reader)):
        client = reader.var_uint()
        clock = reader.var_uint()
        if client > MAX_CLIENT or clock > MAX_CLOCK:
            raise UpdateRefused("a state vector entry is out of range")
        result[client] = clock
    if reader.pos != len(state):
        raise UpdateRefused("state vector has bytes past its end")
    return result
