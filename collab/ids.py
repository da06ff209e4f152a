"""Typed ids, so a notebook id is never passed where a workspace id belongs."""

from __future__ import annotations

import uuid
from typing import NewType

WorkspaceId = NewType("WorkspaceId", uuid.UUID)
NotebookId = NewType("NotebookId", uuid.UUID)
CellId = NewType("CellId", str)


def parse_uuid(raw: str) -> uuid.UUID | None:
    """The UUID in ``raw``, or None when it is not one (callers turn None into a 404)."""
    try:
        return uuid.UUID(raw)
    except (ValueError, AttributeError):
        return None
