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
- rooted only in the schema's top-level names, with map entries only in maps, and only
  maps as entries of ``cells`` where the update itself shows an entry is in ``cells`` (one
  placed beside a cell only the document has is seen by the room as it is applied, see
  ``Room.apply_client_update``);
- complete: every change it builds on is in the document already or earlier in this
  update (no gaps in a client's clocks, no reference to an unknown item, deletions only of
  known items), so nothing is ever left pending;
- small enough in work: at most ``MAX_UPDATE_CHANGES`` changes (items and deletion ranges)
  and ``MAX_UPDATE_VALUES`` values. The check and the binding both run on the event loop
  that serves every notebook; what they cost grows with these counts (measured in
  docs/performance.md, "One large update"), not with the bytes of text, so these bound how
  long any one frame can hold the loop. Honest clients stay far below: yjs merges typing
  into one item per run of characters, and a whole notebook of 2,000 cells with outputs (the
  cell limit) is ~33,000 changes.

The check walks the update once (linear in its size), in one function with the lib0
readers inlined: it costs ~1 µs per change and ~0.1 µs per value, and text costs one
``bytes`` operation per string however long it is. It never allocates more than the
update's own size.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from collab.document import schema
from collab.errors import ProtocolError
from collab.sync.protocol import Reader

# Top-level names of the notebook document (DESIGN.md "The document") and their kinds.
ARRAY_ROOTS = frozenset({schema.CELLS})
MAP_ROOTS = schema.MAP_ROOTS

# How deep a value may nest (a cell's metadata needs a handful of levels; browsers and yrs
# decode values recursively, so depth is a stack an attacker would otherwise choose).
MAX_DEPTH = 48
# yrs counts clocks in u32; browsers pick client ids below 2^32 too (53 bits are safe in JS).
MAX_CLOCK = 2**32 - 1
MAX_CLIENT = 2**53 - 1
# Work one update may ask of the server (see above; settings cannot raise them, as they
# are what keeps one frame from stalling everyone).
MAX_UPDATE_CHANGES = 40_000
MAX_UPDATE_VALUES = 200_000

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
# Value tags of lib0's "any" encoding that carry nothing more, and the fixed sizes of others.
_BARE_TAGS = frozenset({127, 126, 121, 120})  # undefined, null, false, true
_FIXED_TAGS = {124: 4, 123: 8, 122: 8}  # float32, float64, bigint64
_TAG_VARINT, _TAG_STRING, _TAG_OBJECT, _TAG_ARRAY, _TAG_BYTES = 125, 119, 118, 117, 116
# Top-level names as they are sent -> whether the root is a map.
_ROOTS = {name.encode(): True for name in MAP_ROOTS} | {
    name.encode(): False for name in ARRAY_ROOTS
}
# UTF-8 lead bytes of characters outside the BMP (two UTF-16 code units each).
_ASTRAL_LEADS = tuple(bytes([lead]) for lead in range(0xF0, 0xF5))


class UpdateRefused(ProtocolError):
    """The update is malformed, uses what the schema does not, or depends on missing changes."""


@dataclass(slots=True)
class UpdateFacts:
    """What an accepted update holds: per client the clocks it reaches, and its size."""

    ends: dict[int, int] = field(default_factory=dict)
    items: int = 0
    deletes: int = 0
    values: int = 0
    # Bytes of text and values it inserts.
    inserted_bytes: int = 0
    # New maps that may be elements of a list (a cell is one): an upper bound on the cells it
    # adds, for the cell limit. Elements whose list is named by id are not counted (nested).
    new_list_maps: int = 0

    @property
    def empty(self) -> bool:
        return self.items == 0 and self.deletes == 0


class _Reader(Reader):
    """The protocol's lib0 reader, refusing the update (for state vectors)."""

    __slots__ = ()
    error = UpdateRefused


def _var_uint_tail(buf: bytes, pos: int, first: int) -> tuple[int, int]:
    """The rest of a lib0 unsigned varint whose first byte (``first``) had the high bit."""
    value = first & 0x7F
    shift = 7
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise UpdateRefused("variable-length integer too long")


def _skip_var_int(buf: bytes, pos: int) -> int:
    """Past a lib0 signed varint (6 bits, then 7 a byte; at most 9 bytes)."""
    byte = buf[pos]
    pos += 1
    length = 1
    while byte & 0x80:
        byte = buf[pos]
        pos += 1
        length += 1
        if length > 9:
            raise UpdateRefused("number too long in update")
    return pos


def _span(buf: bytes, pos: int) -> tuple[int, int]:
    """A length-prefixed byte string: (start, end), checked to lie inside the update."""
    length = buf[pos]
    pos += 1
    if length >= 0x80:
        length, pos = _var_uint_tail(buf, pos, length)
    end = pos + length
    if end > len(buf):
        raise UpdateRefused("length prefix runs past the end of the frame")
    return pos, end


def _utf8(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UpdateRefused("string is not valid UTF-8") from None


def _text(buf: bytes, pos: int) -> tuple[str, int]:
    start, end = _span(buf, pos)
    return _utf8(buf[start:end]), end


def _count(buf: bytes, pos: int) -> tuple[int, int]:
    """A count of things that follow: each takes at least one byte, so it is bounded."""
    count = buf[pos]
    pos += 1
    if count >= 0x80:
        count, pos = _var_uint_tail(buf, pos, count)
    if count > len(buf) - pos:
        raise UpdateRefused("a count in the update is larger than the update")
    return count, pos


def _values(buf: bytes, pos: int, count: int, budget: int) -> tuple[int, int]:
    """Past ``count`` lib0 "any" values at depth 1: (position, values read, nested ones
    included). Iterative, so an attacker's depth is a list here, never our stack."""
    read = 0
    stack: list[tuple[int, bool]] = []  # enclosing containers: (entries left, keyed)
    left, keyed, depth = count, False, 1
    while True:
        while not left:
            if not stack:
                return pos, read
            left, keyed = stack.pop()
            depth -= 1
        left -= 1
        if keyed:
            _, pos = _text(buf, pos)
        if depth > MAX_DEPTH:
            raise UpdateRefused(f"a value nests deeper than {MAX_DEPTH} levels")
        read += 1
        if read > budget:
            raise UpdateRefused(
                f"update holds more than {MAX_UPDATE_VALUES} values: send it in smaller edits"
            )
        tag = buf[pos]
        pos += 1
        if tag in _BARE_TAGS:
            continue
        if tag == _TAG_STRING:
            _, pos = _text(buf, pos)
        elif tag == _TAG_VARINT:
            pos = _skip_var_int(buf, pos)
        elif tag in _FIXED_TAGS:
            pos += _FIXED_TAGS[tag]
            if pos > len(buf):
                raise UpdateRefused("update ends in the middle of a value")
        elif tag == _TAG_OBJECT or tag == _TAG_ARRAY:
            entries, pos = _count(buf, pos)
            if entries:
                stack.append((left, keyed))
                left, keyed = entries, tag == _TAG_OBJECT
                depth += 1
        elif tag == _TAG_BYTES:
            _, pos = _span(buf, pos)
        else:
            raise UpdateRefused(f"unknown value tag {tag} in update")


def check_update(update: bytes, state: dict[int, int]) -> UpdateFacts:
    """Check an update against the document's state vector (client -> next clock).

    Raises ``UpdateRefused`` naming the first problem; returns what the update holds.
    """
    try:
        return _check(update, state)
    except IndexError:
        # Every single-byte read goes past the end only here: the update is cut short.
        raise UpdateRefused("update ends in the middle of a change") from None


def _check(buf: bytes, state: dict[int, int]) -> UpdateFacts:
    facts = UpdateFacts()
    # Per client: its items in order as (clock, end, references still to resolve).
    groups: dict[int, list[tuple[int, int, tuple[tuple[int, int], ...]]]] = {}
    # List elements of unknown list placed beside another item of this update:
    # (client, clock, left origin, right origin, is a map); and the ids of known cells.
    placed: list[tuple[int, int, tuple[int, int] | None, tuple[int, int] | None, bool]] = []
    cell_ids: set[tuple[int, int]] = set()
    changes = 0
    values_left = MAX_UPDATE_VALUES
    # Whether any change needs another of this update first (a keystroke's never does).
    waits = False
    n_groups, pos = _count(buf, 0)
    for _ in range(n_groups):
        structs, pos = _count(buf, pos)
        changes += structs
        if changes > MAX_UPDATE_CHANGES:
            _within_changes(changes)
        (client, clock), pos = _id(buf, pos)
        if client in groups:
            raise UpdateRefused("update lists one client twice")
        if structs == 0:
            raise UpdateRefused("update lists a client with no changes")
        known_clock = state.get(client, 0)
        if clock > known_clock:
            raise UpdateRefused(
                "update builds on changes this notebook does not have (a gap in a client's "
                "clock): sync first"
            )
        items: list[tuple[int, int, tuple[tuple[int, int], ...]]] = []
        for _ in range(structs):
            info = buf[pos]
            pos += 1
            ref = info & 0x1F
            if ref == _GC:
                length = buf[pos]
                pos += 1
                if length >= 0x80:
                    length, pos = _var_uint_tail(buf, pos, length)
                if length == 0:
                    raise UpdateRefused("an empty collected range in update")
                items.append((clock, clock + length, ()))
                clock += length
                if clock > MAX_CLOCK:
                    raise UpdateRefused("a clock in the update is out of range")
                continue
            if ref == _SKIP:
                raise UpdateRefused("update holds a gap (skip), which clients never send")
            refs: list[tuple[int, int]] = []
            left = right = None
            if info & 0x80:
                left, pos = _id(buf, pos)
                refs.append(left)
            if info & 0x40:
                right, pos = _id(buf, pos)
                refs.append(right)
            in_cells = False
            # A list element whose list may be ``cells``: one placed by a neighbour, or
            # named at the root. (Map entries carry a key: bit 0x20.)
            list_element = not info & 0x20 and bool(info & 0xC0)
            if not info & 0xC0:
                # No neighbours to take the parent from: it is named here.
                named = buf[pos]
                pos += 1
                if named >= 0x80:
                    named, pos = _var_uint_tail(buf, pos, named)
                if named == 1:
                    start, end = _span(buf, pos)
                    pos = end
                    is_map_root = _ROOTS.get(buf[start:end])
                    if is_map_root is None:
                        root = _utf8(buf[start:end])
                        raise UpdateRefused(f"update writes an unknown top-level {root!r}")
                    if is_map_root != bool(info & 0x20):
                        root = _utf8(buf[start:end])
                        raise UpdateRefused(f"update writes {root!r} as the wrong kind")
                    list_element = in_cells = not is_map_root
                else:
                    parent, pos = _id(buf, pos)
                    refs.append(parent)
                if info & 0x20:  # the key
                    start, pos = _span(buf, pos)
                    key = buf[start:pos]
                    if not key.isascii():
                        _utf8(key)
            # The content, and its length in clock units.
            is_map = False
            if ref == _STRING:
                size = buf[pos]  # _span, inline
                pos += 1
                if size >= 0x80:
                    size, pos = _var_uint_tail(buf, pos, size)
                start, end = pos, pos + size
                if end > len(buf):
                    raise UpdateRefused("length prefix runs past the end of the frame")
                raw = buf[start:end]
                pos = end
                if raw.isascii():
                    length = len(raw)
                else:
                    # Yjs counts text in UTF-16 code units, and so do clocks.
                    length = len(_utf8(raw)) + sum(raw.count(lead) for lead in _ASTRAL_LEADS)
                if length == 0:
                    raise UpdateRefused("an empty text insertion in update")
                facts.inserted_bytes += end - start
            elif ref == _ANY:
                start = pos
                length, pos = _count(buf, pos)
                if length == 0:
                    raise UpdateRefused("an empty value list in update")
                if length == 1 and buf[pos] in _BARE_TAGS and values_left:
                    pos += 1  # the common map entry: one null, true or false
                    values_left -= 1
                else:
                    pos, read = _values(buf, pos, length, values_left)
                    values_left -= read
                facts.inserted_bytes += pos - start
            elif ref == _TYPE:
                kind = buf[pos]
                pos += 1
                if kind >= 0x80:
                    kind, pos = _var_uint_tail(buf, pos, kind)
                if kind not in (_TYPE_ARRAY, _TYPE_MAP, _TYPE_TEXT):
                    raise UpdateRefused("update creates a shared type the notebook does not use")
                is_map = kind == _TYPE_MAP
                if is_map and list_element:
                    facts.new_list_maps += 1
                length = 1
            elif ref == _DELETED:
                length = buf[pos]
                pos += 1
                if length >= 0x80:
                    length, pos = _var_uint_tail(buf, pos, length)
                if length == 0:
                    raise UpdateRefused("an empty deletion in update")
            elif ref == _BINARY:
                start, pos = _span(buf, pos)
                facts.inserted_bytes += pos - start
                length = 1
            else:
                name = _CONTENT_NAMES.get(ref, f"unknown content {ref}")
                raise UpdateRefused(f"update holds {name}, which the notebook does not use")
            if in_cells and ref != _DELETED:  # a cell deleted before it was sent stays
                if not is_map:
                    raise UpdateRefused("update puts something other than a cell in 'cells'")
                cell_ids.add((client, clock))
            elif list_element and ref != _DELETED:
                placed.append((client, clock, left, right, is_map))
            # What integrating it needs: references this update has not made certain (the
            # same client's earlier changes come first; the document has everything below
            # its state). Only those are left for the integration below.
            if refs:
                # (A loop, not a generator expression: this runs for nearly every change.)
                pending: tuple[tuple[int, int], ...] = ()
                for r in refs:
                    if r[1] >= state.get(r[0], 0) and not (r[0] == client and r[1] < clock):
                        pending = (*pending, r)
                items.append((clock, clock + length, pending))
                if pending:
                    waits = True
            else:
                items.append((clock, clock + length, ()))
            facts.items += 1
            clock += length
            if clock > MAX_CLOCK:
                raise UpdateRefused("a clock in the update is out of range")
        groups[client] = items
        facts.ends[client] = clock

    if waits:
        _integrate(groups, state)

    ranges, pos = _count(buf, pos)
    for _ in range(ranges):
        client, pos = _uint(buf, pos)
        count, pos = _count(buf, pos)
        changes += count
        _within_changes(changes)
        end_known = max(state.get(client, 0), facts.ends.get(client, 0))
        for _ in range(count):
            clock, pos = _uint(buf, pos)
            length, pos = _uint(buf, pos)
            if length == 0 or clock + length > end_known:
                raise UpdateRefused("update deletes changes this notebook does not have")
            facts.deletes += 1
    if pos != len(buf):
        raise UpdateRefused("update has bytes past its end")
    facts.values = MAX_UPDATE_VALUES - values_left
    _check_cells(placed, cell_ids)
    return facts


def _uint(buf: bytes, pos: int) -> tuple[int, int]:
    """A lib0 unsigned varint (the hottest reads inline this)."""
    value = buf[pos]
    pos += 1
    if value >= 0x80:
        value, pos = _var_uint_tail(buf, pos, value)
    return value, pos


def _id(buf: bytes, pos: int) -> tuple[tuple[int, int], int]:
    """An item id (client, clock): the hottest read (every change has one to three), so
    the varints' first bytes are read inline."""
    client = buf[pos]
    pos += 1
    if client >= 0x80:
        client, pos = _var_uint_tail(buf, pos, client)
    clock = buf[pos]
    pos += 1
    if clock >= 0x80:
        clock, pos = _var_uint_tail(buf, pos, clock)
    if client > MAX_CLIENT or clock > MAX_CLOCK:
        raise UpdateRefused("an id in the update is out of range")
    return (client, clock), pos


def _within_changes(changes: int) -> None:
    if changes > MAX_UPDATE_CHANGES:
        raise UpdateRefused(
            f"update holds more than {MAX_UPDATE_CHANGES} changes: send it in smaller edits"
        )


def _integrate(
    groups: dict[int, list[tuple[int, int, tuple[tuple[int, int], ...]]]],
    state: dict[int, int],
) -> None:
    """Integrate in thought, as yrs will: every reference must point at an item the document
    has or one this update adds before it is needed. Anything else would be left pending.

    A client's items are taken in order until one needs what is not there yet; that client
    then waits on the one it needs, and is woken when that one reaches the clock (a heap per
    client waited on), so the work is linear in the items whatever their order."""
    known = dict(state)
    positions = dict.fromkeys(groups, 0)
    waiting: dict[int, list[tuple[int, int]]] = {}  # client -> heap of (clock needed, waiter)
    ready = list(groups)
    while ready:
        client = ready.pop()
        items = groups[client]
        index = start = positions[client]
        blocked: tuple[int, int] | None = None
        while index < len(items):
            _clock, end, refs = items[index]
            for owner, clock in refs:
                if clock >= known.get(owner, 0):
                    blocked = (owner, clock)
                    break
            if blocked is not None:
                break
            if end > known.get(client, 0):
                known[client] = end
            index += 1
        positions[client] = index
        if index != start:
            heap = waiting.get(client)
            while heap and heap[0][0] < known[client]:
                ready.append(heapq.heappop(heap)[1])
        if blocked is not None:
            heapq.heappush(waiting.setdefault(blocked[0], []), (blocked[1], client))
    if any(positions[client] < len(items) for client, items in groups.items()):
        raise UpdateRefused("update refers to changes this notebook does not have: sync first")


def _check_cells(
    placed: list[tuple[int, int, tuple[int, int] | None, tuple[int, int] | None, bool]],
    cell_ids: set[tuple[int, int]],
) -> None:
    """Entries of ``cells`` are maps. An element placed beside a cell is in ``cells`` too:
    follow the neighbours from the cells this update names. (One placed beside a cell only
    the document has is seen by the room as it is applied: ``Room.apply_client_update``.)"""
    if not placed or not cell_ids:
        return
    beside: dict[tuple[int, int], list[int]] = {}
    for index, (_client, _clock, left, right, _is_map) in enumerate(placed):
        for origin in (left, right):
            if origin is not None:
                beside.setdefault(origin, []).append(index)
    frontier = [cell for cell in cell_ids if cell in beside]
    seen: set[int] = set()
    while frontier:
        for index in beside.get(frontier.pop(), ()):
            if index in seen:
                continue
            seen.add(index)
            client, clock, _, _, is_map = placed[index]
            if not is_map:
                raise UpdateRefused("update puts something other than a cell in 'cells'")
            frontier.append((client, clock))


def decode_state_vector(state: bytes) -> dict[int, int]:
    """A state vector (client -> next clock), strictly; also checks one a client sent."""
    reader = _Reader(state)
    result: dict[int, int] = {}
    count = reader.var_uint()
    if count > len(state) - reader.pos:
        raise UpdateRefused("a count in the update is larger than the update")
    for _ in range(count):
        client = reader.var_uint()
        clock = reader.var_uint()
        if client > MAX_CLIENT or clock > MAX_CLOCK:
            raise UpdateRefused("a state vector entry is out of range")
        result[client] = clock
    if reader.pos != len(state):
        raise UpdateRefused("state vector has bytes past its end")
    return result
