"""Every WebSocket close code the server sends, in one table (docs/api.md, "Close codes",
lists the same codes: tests/collab/test_close_codes.py compares them, and the web client's
list of codes that stop its reconnecting, ``web/src/notebook/connection.js``).

Every sender (the connection, the room, its outbox, the access watch) closes with one of
these; the reason sent beside it says what happened in words.
"""

from __future__ import annotations

import enum


class CloseCode(enum.IntEnum):
    # RFC 6455's
    NORMAL = 1000  # the connection ended (the client left, or the server is stopping)
    PROTOCOL_ERROR = 1002  # a malformed frame, an update refused, invalid presence
    UNSUPPORTED_DATA = 1003  # a text frame
    TOO_SLOW = 1008  # the connection's send queue overflowed
    TOO_BIG = 1009  # a frame larger than WEFT_MAX_FRAME_BYTES
    INTERNAL_ERROR = 1011  # handling a frame failed on the server
    # "try again later": storage down, a stored document unreadable, or the room reloading
    # after the CRDT binding failed (y-websocket reconnects and syncs afresh)
    UNAVAILABLE = 1013
    # Weft's own (4000-4999), after the HTTP status they resemble
    UNAUTHORIZED = 4401  # no credential, or one revoked or expired
    FORBIDDEN = 4403  # the Origin is not allowed, access was removed, the role changed
    UNKNOWN_NOTEBOOK = 4404  # no such notebook (or the caller may not know of it)
    GONE = 4410  # the notebook was deleted
    DOCUMENT_FULL = 4413  # the edit would take the notebook past its size limits

    @property
    def stops_retrying(self) -> bool:
        """The client should not reconnect on its own (it tells the person why)."""
        return self in _FINAL


_FINAL = frozenset(
    {CloseCode.UNAUTHORIZED, CloseCode.FORBIDDEN, CloseCode.UNKNOWN_NOTEBOOK, CloseCode.GONE}
)
