"""From a model's streamed answer to the code that goes into the cell, as it streams.

Models wrap code in Markdown fences and talk around it however they are asked. The filter
keeps the code of fenced blocks in the cell's language (or untagged), drops the prose and
blocks in other languages (``bash``, ``text``), and passes through an answer that is code
with no fence at all. Text is let through as soon as it cannot be part of a fence line, so
the cell still fills in token by token; only a line that might be a fence, the answer's
first line (code or prose?) and trailing blank lines wait.

>>> f = CodeFilter("python")
>>> f.feed("Here you go:\\n```python\\nimport pa") + f.feed("ndas as pd\\n```\\nDone.") + f.finish()
'import pandas as pd'
"""

from __future__ import annotations

import codeop
import warnings

FENCE = "```"

_ALIASES = {
    "python": {"", "python", "py", "python3", "ipython", "pycon"},
    "sql": {"", "sql", "duckdb", "postgresql", "postgres", "sqlite"},
}

_SQL_STARTS = {
    "SELECT",
    "WITH",
    "FROM",
    "INSERT",
    "UPDATE",
    "DELETE",
    "CREATE",
    "DROP",
    "ALTER",
    "PIVOT",
    "UNPIVOT",
    "SUMMARIZE",
    "DESCRIBE",
    "SHOW",
    "VALUES",
    "EXPLAIN",
    "COPY",
    "ATTACH",
    "INSTALL",
    "LOAD",
    "SET",
    "TABLE",
}


def comment_prefix(language: str) -> str:
    return "-- " if language == "sql" else "# "


def looks_like_code(line: str, language: str) -> bool:
    """Whether an answer's first line is code rather than prose ("Here is the code:")."""
    stripped = line.strip()
    if language == "sql":
        if stripped.startswith(("--", "(", "/*")):
            return True
        word = stripped.split(None, 1)[0].upper().rstrip(";(") if stripped else ""
        return word in _SQL_STARTS
    if stripped.startswith(("#", "@", "%", "!")):
        return True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            codeop.compile_command(stripped, "<answer>", "exec")
        except (SyntaxError, ValueError, OverflowError):
            return False
    return True


class CodeFilter:
    def __init__(self, language: str) -> None:
        self.language = language
        self._tags = _ALIASES.get(language, {"", language})
        # start: before the first line; preamble: prose, waiting for a fence; code: an
        # unfenced answer; fence: inside a block we keep; skip: inside one we drop;
        # after: between blocks.
        self.state = "start"
        self._line = ""  # the current line's text not yet let through
        self._line_started = False  # part of the current line was already let through
        self._newlines = ""  # line breaks waiting for more code (none at the very end)
        self._prose: list[str] = []
        self.emitted = False

    def _emit(self, text: str) -> str:
        if not text:
            return ""
        out = (self._newlines if self.emitted else "") + text
        self._newlines = ""
        self.emitted = True
        return out

    def _fence(self, line: str) -> str | None:
        """The tag of a fence line, or None if it is not one."""
        stripped = line.strip()
        if not stripped.startswith(FENCE):
            return None
        return stripped.lstrip("`").strip().lower()

    def _complete_line(self, line: str, newline: bool) -> str:
        """Handle one whole line (``line`` is what was not let through yet)."""
        out = ""
        if self.state in ("start", "preamble", "after", "skip"):
            tag = self._fence(line)
            if self.state == "skip":
                if tag is not None:
                    self.state = "after"
            elif tag is not None:
                self.state = "fence" if tag in self._tags else "skip"
            elif self.state == "start" and not line.strip():
                pass  # leading blank lines
            elif self.state == "start" and looks_like_code(line, self.language):
                self.state = "code"
                out = self._emit(line)
                if newline:
                    self._newlines += "\n"
            elif self.state in ("start", "preamble"):
                self.state = "preamble"
                self._prose.append(line)
            return out
        # code or fence
        if not self._line_started and self._fence(line) is not None:
            self.state = "after"
            return ""
        out = self._emit(line) if line else ""
        if newline:
            self._newlines += "\n"
        return out

    def _holding(self, line: str) -> bool:
        """Whether the start of a line must wait: it might still become a fence line."""
        stripped = line.lstrip()
        return FENCE.startswith(stripped) or stripped.startswith(FENCE)

    def feed(self, piece: str) -> str:
        out = []
        parts = piece.split("\n")
        for index, part in enumerate(parts):
            newline = index < len(parts) - 1
            self._line += part
            if newline:
                out.append(self._complete_line(self._line.removesuffix("\r"), True))
                self._line, self._line_started = "", False
            elif self.state in ("code", "fence") and self._line:
                if self._line_started or not self._holding(self._line):
                    # A "\r" may be the first half of a "\r\n": it waits for the next piece.
                    ready, held = (
                        (self._line[:-1], "\r") if self._line.endswith("\r") else (self._line, "")
                    )
                    out.append(self._emit(ready))
                    self._line, self._line_started = held, True
        return "".join(out)

    def finish(self) -> str:
        """What is left at the end of the stream."""
        out = ""
        if self._line:
            out = self._complete_line(self._line, False)
            self._line = ""
        if self.state == "preamble" and not self.emitted and self._prose:
            # An answer with no code at all (a refusal, a question): keep it as a comment
            # so the person sees why nothing else came.
            prefix = comment_prefix(self.language)
            out += self._emit("\n".join(prefix + line.strip() for line in self._prose))
        self._newlines = ""
        return out


def clean(answer: str, language: str = "python") -> str:
    """The whole answer at once (the same result as streaming it)."""
    f = CodeFilter(language)
    return f.feed(answer) + f.finish()
