"""The model's answer as it streams into a cell: its text kept for the record, its code
(what the filter lets through) written into the suggestion."""

from __future__ import annotations

from collections.abc import Callable

from ai.cleaner import CodeFilter
from ai.tracking import Suggestion


class Answer:
    """Feed it the model's pieces, then ``finish()``; ``tokens`` counts what was fed, in the
    model's tokens; ``on_first_code`` runs when the first code reaches the cell.

    ``appending``: the code goes after the cell's last line, so it starts on a line of its
    own (the separator is decided at the first code, against the cell as it is then).
    """

    def __init__(
        self,
        suggestion: Suggestion,
        code_filter: CodeFilter,
        count_tokens: Callable[[str], int],
        *,
        appending: bool,
        on_first_code: Callable[[], None],
    ) -> None:
        self.suggestion = suggestion
        self.pieces: list[str] = []
        self.tokens = 0
        self._filter = code_filter
        self._count_tokens = count_tokens
        self._appending = appending
        self._on_first_code = on_first_code
        self._separator: str | None = None

    def feed(self, piece: str) -> None:
        self.pieces.append(piece)
        self.tokens += self._count_tokens(piece)
        self._write(self._filter.feed(piece))

    def finish(self) -> None:
        """Write what the filter still holds (the end of a line, a closing fence...)."""
        self._write(self._filter.finish())

    def excerpt(self) -> str:
        """The answer's start, on one line, for an error message."""
        text = " ".join("".join(self.pieces).split())
        return repr(text[:200] + ("…" if len(text) > 200 else ""))

    def _write(self, code: str) -> None:
        if not code:
            return
        if self._separator is None:
            newline = self._appending and not self.suggestion.ends_with_newline
            self._separator = "\n" if newline else ""
            code = self._separator + code
            self._on_first_code()
        self.suggestion.write(code)
