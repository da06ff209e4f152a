"""``%pip install X`` (and ``!pip install X``) in a cell: the habit from Jupyter, done the
Weft way. The kernel has no network and installs nothing; instead, before the cell runs,
the executor adds X to the notebook's dependencies (everyone sees it in the Configuration
panel), prepares the environment, and the line prints what it did. The rest of the cell
then runs with X importable.

Only requirements are taken: options that choose where packages come from (``-i``,
``--index-url``, ``-r``, ``-e``, a URL) are refused, since the index is a server setting;
options that change nothing here (``-q``, ``-U``) are ignored.
"""

from __future__ import annotations

import re
import shlex

from executor.environments.errors import EnvironmentFailure

_LINE = re.compile(r"^[ \t]*[%!]\s*pip3?\s+install\b(.*)$", re.MULTILINE)
_HARMLESS = {"-q", "--quiet", "-U", "--upgrade", "--user", "--no-cache-dir", "-qq", "-v"}


def pip_installs(source: str) -> list[str]:
    """The requirements a cell's ``%pip install`` lines ask for, in order."""
    out: list[str] = []
    for match in _LINE.finditer(source):
        try:
            words = shlex.split(match.group(1), comments=True)
        except ValueError as exc:
            raise EnvironmentFailure(
                "invalid", f"%pip install {match.group(1).strip()}: {exc}"
            ) from None
        for word in words:
            if word in _HARMLESS:
                continue
            if word.startswith("-"):
                raise EnvironmentFailure(
                    "invalid",
                    f"%pip install {word}: options are not available here (packages come "
                    "from the server's package index); write only package names and versions",
                    word,
                )
            out.append(word)
    return out


def installed_note(added: list[str], replaced: list[str]) -> str:
    """What the %pip line prints in the cell."""
    parts = [f"Added {', '.join(added)} to this notebook's dependencies"] if added else []
    if replaced:
        parts.append(f"(replacing {', '.join(replaced)})")
    if not parts:
        return "Already in this notebook's dependencies: nothing to add.\n"
    return (
        " ".join(parts)
        + ". The server installed them for everyone who runs this notebook; see the "
        "Configuration panel.\n"
    )
