"""Turning runner messages into notebook outputs, live, with a cap on stream text."""

from __future__ import annotations

from typing import Any

from collab.peers import NotebookPeer


class OutputWriter:
    """Writes one run's outputs into its cell (as peer edits) and keeps a copy for the API."""

    def __init__(self, notebook: NotebookPeer, cell_id: str, cap_bytes: int) -> None:
        self._notebook = notebook
        self._cell_id = cell_id
        self._cap = cap_bytes
        self._streamed = 0
        self._truncated = False
        self.outputs: list[dict[str, Any]] = []

    def stream(self, name: str, text: str) -> None:
        if self._truncated:
            return
        size = len(text.encode())
        if self._streamed + size > self._cap:
            keep = max(self._cap - self._streamed, 0)
            text = text.encode()[:keep].decode(errors="ignore")
            text += f"\n[output truncated: more than {self._cap} bytes; later output dropped]\n"
            self._truncated = True
        self._streamed += size
        self._notebook.append_stream(self._cell_id, name, text)
        last = self.outputs[-1] if self.outputs else None
        if last and last["output_type"] == "stream" and last["name"] == name:
            last["text"] += text
        else:
            self.outputs.append({"output_type": "stream", "name": name, "text": text})

    def add(self, output: dict[str, Any]) -> None:
        self._notebook.add_output(self._cell_id, output)
        self.outputs.append(output)

    def error(self, ename: str, evalue: str, traceback: list[str]) -> None:
        self.add({"output_type": "error", "ename": ename, "evalue": evalue, "traceback": traceback})
