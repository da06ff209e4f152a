"""Search as you type: notebooks the caller may see, by title and by cell source.

The index is one ``notebook_search`` row per notebook (infra/migrations/021_search.sql): the
title (kept by a trigger on ``notebooks``, so creating, importing and renaming need nothing
here), every cell's source, and a tsvector with title words weighted above cell words. A
query term matches a word it is a prefix of (people are still typing it) or, when no indexed
word starts with it, a word one or two edits away: the candidates come from a trigram
nearest-neighbour scan of ``search_words``, the lexicon of every indexed word, and are
checked with Levenshtein distance. Results are ranked by ``ts_rank`` plus bonuses for exact
words and for matches in the title. Keeping the index current: collab.search_index.

>>> results = await search(pool, user_id, "groupby", limit=20)
>>> results[0].title, results[0].snippet
"""

from __future__ import annotations

import functools
import logging
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import asyncpg
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from collab.access import current_principal
from collab.errors import BadRequest

if TYPE_CHECKING:
    from collab.services import Services

log = logging.getLogger(__name__)

# Between cells in notebook_search.body (a word separator for the text search too).
SEPARATOR = "\x1e"
MAX_QUERY_CHARS = 200
MAX_TERMS = 8
DEFAULT_LIMIT = 20
MAX_LIMIT = 50
SNIPPET_CHARS = 160
# When more visible notebooks match, these many (title matches, then the most recently
# changed) are ranked and the rest left out: a common word or a short prefix stays fast.
RANK_CANDIDATES = 500
# Typos: words of at least this length get candidates; from this length two edits are allowed.
_TYPO_MIN_LENGTH = 4
_TWO_EDITS_LENGTH = 6
_TYPO_CANDIDATES = 6
# A word as the index sees it: a run of letters and digits (see search_normalize in SQL).
_WORD = re.compile(r"[^\W_]+")

# The query's words as the index tokenizes them, each with its typo candidates (if no
# indexed word starts with it). The lexicon's key is in the "C" collation, so the prefix
# test is a range on its primary key.
_TERMS_SQL = f"""
SELECT t.term,
       CASE WHEN length(t.term) < {_TYPO_MIN_LENGTH} OR EXISTS (
                SELECT 1 FROM search_words w
                WHERE w.word >= t.term COLLATE "C" AND w.word < (t.term || chr(1114111)) COLLATE "C"
            ) THEN '{{}}'::text[]
            ELSE ARRAY(
                SELECT c.word FROM (
                    SELECT w.word, w.notebooks FROM search_words w
                    ORDER BY w.word <-> t.term LIMIT 40
                ) AS c
                WHERE levenshtein_less_equal(c.word, t.term, 2)
                      <= CASE WHEN length(t.term) >= {_TWO_EDITS_LENGTH} THEN 2 ELSE 1 END
                ORDER BY levenshtein(c.word, t.term), c.notebooks DESC, c.word
                LIMIT {_TYPO_CANDIDATES}
            )
       END AS typos
FROM unnest(tsvector_to_array(to_tsvector('simple', search_normalize($1)))) AS t(term)
ORDER BY length(t.term) DESC, t.term
LIMIT {MAX_TERMS}
"""

# $1 the match, $2 the exact words (to_tsquery text), $3 titles only; $4 the user; $5, $6
# the guest's scope; $7 the limit; $8 the candidates to rank (see search_notebooks in SQL).
_SEARCH_SQL = """
SELECT s.found AS notebook_id, s.score, ns.title, ns.workspace_id, w.name AS workspace_name,
       ns.body, ns.cell_ids
FROM search_notebooks(to_tsquery('simple', $1), to_tsquery('simple', $2), $3, $4, $5, $6, $7, $8)
     WITH ORDINALITY AS s(found, score, ord)
JOIN notebook_search ns ON ns.notebook_id = s.found
JOIN workspaces w ON w.id = ns.workspace_id
ORDER BY s.ord
"""

# -- the query --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Term:
    """One word of the query: matches words it starts, or one of ``typos``."""

    text: str
    typos: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SearchResult:
    notebook_id: uuid.UUID
    title: str
    workspace_id: uuid.UUID
    workspace_name: str
    score: float
    cell_id: str | None
    snippet: str
    # [start, end) of each matching word in the snippet.
    highlights: list[tuple[int, int]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "notebook_id": str(self.notebook_id),
            "title": self.title,
            "workspace_id": str(self.workspace_id),
            "workspace_name": self.workspace_name,
            "cell_id": self.cell_id,
            "snippet": self.snippet,
            "highlights": [list(h) for h in self.highlights],
            "score": round(self.score, 6),
        }


def _lexeme(word: str) -> str:
    escaped = word.replace("\\", "\\\\").replace("'", "''")
    return f"'{escaped}'"


def _tsqueries(terms: Sequence[Term]) -> tuple[str, str]:
    """(match, exact) as to_tsquery text: every term as a prefix or one of its typo
    candidates; any term as typed, or its likeliest correction (ranked higher)."""
    match, exact = [], []
    for term in terms:
        options = [f"{_lexeme(term.text)}:*", *(_lexeme(typo) for typo in term.typos)]
        match.append("(" + " | ".join(options) + ")")
        exact += [_lexeme(term.text), *(_lexeme(typo) for typo in term.typos[:1])]
    return " & ".join(match), " | ".join(exact)


@functools.lru_cache(maxsize=256)
def _pattern(terms: tuple[Term, ...]) -> re.Pattern[str]:
    """Whole words that a term matches, one group per term (as a prefix, or a typo)."""
    groups = []
    for term in terms:
        options = [re.escape(term.text) + r"[^\W_]*", *(re.escape(t) for t in term.typos)]
        groups.append("(" + "|".join(options) + ")")
    return re.compile(r"(?<![^\W_])(?:" + "|".join(groups) + r")(?![^\W_])", re.IGNORECASE)


# (start, end, term index, exact) of a word a term matches.
_Match = tuple[int, int, int, bool]


def _word_matches(text: str, terms: Sequence[Term]) -> list[_Match]:
    """(start, end, term index, exact) for every word of ``text`` a term matches."""
    if not terms:
        return []
    found = []
    for m in _pattern(tuple(terms)).finditer(text):
        index = (m.lastindex or 1) - 1
        found.append((m.start(), m.end(), index, m.group().lower() == terms[index].text))
    return found


def _quality(found: Sequence[_Match]) -> tuple[int, int]:
    """How well some text matches: distinct terms, then exact words."""
    return len({f[2] for f in found}), sum(1 for f in found if f[3])


def snippet(
    body: str, cell_ids: Sequence[str], terms: Sequence[Term]
) -> tuple[str | None, str, list[tuple[int, int]]]:
    """(cell id, one line of text, highlights): the best line of the best cell (the most
    terms, then exact words; the first of equals), or the first line with text if no cell
    matches (a title match)."""
    cells = body.split(SEPARATOR)
    best: tuple[int, list[_Match]] | None = None
    for index, text in enumerate(cells):
        found = _word_matches(text, terms)
        if found and (best is None or _quality(found) > _quality(best[1])):
            best = (index, found)
    if best is None:
        for index, text in enumerate(cells):
            line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
            if line:
                cell_id = cell_ids[index] if index < len(cell_ids) else None
                return cell_id, _cut(line, 0)[0], []
        return None, "", []
    index, found = best
    text = cells[index]
    lines: dict[int, list[_Match]] = {}
    for match in found:
        lines.setdefault(text.rfind("\n", 0, match[0]) + 1, []).append(match)
    line_start, on_line = max(lines.items(), key=lambda item: (_quality(item[1]), -item[0]))
    line_end = text.find("\n", line_start)
    raw = text[line_start : len(text) if line_end < 0 else line_end]
    stripped = raw.lstrip()
    offset = line_start + len(raw) - len(stripped)
    shown, shift = _cut(stripped.rstrip(), on_line[0][0] - offset)
    highlights = []
    for s, e, _, _ in on_line:
        s, e = s - offset + shift, e - offset + shift
        if 0 <= s and e <= len(shown):
            highlights.append((s, e))
    cell_id = cell_ids[index] if index < len(cell_ids) else None
    return cell_id, shown, highlights


def _cut(line: str, focus: int) -> tuple[str, int]:
    """At most SNIPPET_CHARS of ``line`` around ``focus``; and how far the text moved."""
    if len(line) <= SNIPPET_CHARS:
        return line, 0
    start = max(0, min(focus - SNIPPET_CHARS // 3, len(line) - SNIPPET_CHARS))
    end = start + SNIPPET_CHARS
    head = "…" if start > 0 else ""
    tail = "…" if end < len(line) else ""
    return head + line[start:end] + tail, len(head) - start


async def search(
    pool: asyncpg.Pool,
    user_id: uuid.UUID,
    query: str,
    limit: int = DEFAULT_LIMIT,
    workspace_scope: uuid.UUID | None = None,
    notebook_scope: uuid.UUID | None = None,
) -> list[SearchResult]:
    """The notebooks ``user_id`` may see that match ``query``, best first: those of the
    workspaces they are a member of and those granted to them. A guest passes the scope of
    the share link that is their access instead (its workspace, and its notebook for a
    notebook link): exactly what the link covers. Pass a scope only from a verified
    credential (``Principal.scope_workspace``/``scope_notebook``), never from a request."""
    query = query[:MAX_QUERY_CHARS]
    if not _WORD.search(query):
        return []
    async with pool.acquire() as conn:
        terms = [Term(r["term"], tuple(r["typos"])) for r in await conn.fetch(_TERMS_SQL, query)]
        if not terms:
            return []
        match, exact = _tsqueries(terms)
        # A prefix of one letter would match nearly every notebook's cells: titles only.
        only_titles = all(len(t.text) == 1 for t in terms)
        rows = await conn.fetch(
            _SEARCH_SQL,
            match,
            exact,
            only_titles,
            user_id,
            workspace_scope,
            notebook_scope,
            limit,
            RANK_CANDIDATES,
        )
    in_cells = [] if only_titles else terms
    results = []
    for row in rows:
        cell_id, text, highlights = snippet(row["body"], row["cell_ids"], in_cells)
        results.append(
            SearchResult(
                notebook_id=row["notebook_id"],
                title=row["title"],
                workspace_id=row["workspace_id"],
                workspace_name=row["workspace_name"],
                score=float(row["score"]),
                cell_id=cell_id,
                snippet=text,
                highlights=highlights,
            )
        )
    return results


# -- the endpoint -----------------------------------------------------------------------


async def search_endpoint(request: Request) -> Response:
    principal = await current_principal(request)
    query = request.query_params.get("q", "")
    if len(query) > MAX_QUERY_CHARS:
        raise BadRequest(f"'q' must be at most {MAX_QUERY_CHARS} characters")
    raw_limit = request.query_params.get("limit", str(DEFAULT_LIMIT))
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_LIMIT:
        raise BadRequest(f"'limit' must be a whole number from 1 to {MAX_LIMIT}")
    services: Services = request.app.state.services
    results = await search(
        services.pool,
        principal.user_id,
        query,
        int(raw_limit),
        workspace_scope=principal.scope_workspace,
        notebook_scope=principal.scope_notebook,
    )
    return JSONResponse({"query": query, "results": [r.to_json() for r in results]})


def routes() -> list[BaseRoute]:
    return [Route("/api/search", search_endpoint, methods=["GET"])]
