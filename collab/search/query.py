"""Search as you type: notebooks the caller may see, by title and by cell source.

The index is one ``notebook_search`` row per notebook (infra/migrations/021_search.sql): the
title (kept by a trigger on ``notebooks``, so creating, importing and renaming need nothing
here), every cell's source, and a tsvector with title words weighted above cell words. A
query term matches a word it is a prefix of (people are still typing it) or, when no word
the caller may see starts with it, a word one or two edits away (Levenshtein distance).
Results are ranked by ``ts_rank`` plus bonuses for exact words and for matches in the title.
Keeping the index current: collab.search.indexer.

Nothing a caller cannot see changes their answer (issue 11, item 3: typo candidates drawn
from every notebook on the server let a word of another workspace be read letter by letter).
Whether a term gets typo candidates, and which, is decided on the caller's share of the
lexicon only (``query_terms``): ``search_words`` holds each workspace's words, and a notebook
seen without its workspace (a grant, a notebook link) contributes its own words
(``notebook_search.lexicon``), not its workspace's. Candidates are all such words within the
allowed edits that keep the start or the end of the term, ordered by distance, then by how
many of those notebooks hold them, then alphabetically: no cut-off or tie in between
depends on anyone else's words.

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
from typing import Any

import asyncpg

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

# The query's words as the index tokenizes them, each with its typo candidates when none of
# the words the caller may see starts with it. $1 the query, $2 the user, $3 and $4 the
# guest's scope: the same rule as search_notebooks (021_search.sql) decides what they see,
# here split into whole workspaces (their lexicons in search_words) and notebooks seen
# without their workspace (their own lexicons). Only the caller's rows are read: ranges of
# an index per workspace. The lexicon's key is in the "C" collation, so a prefix is a range.
#
# Candidates: a word one edit away keeps the term's first or its second half intact; two
# edits away, its first or its last third, unless an edit fell in each (such words get no
# candidate). So candidates are the words that start with that first part or end with that
# last part (ranges of the key and of the reversed word: for "tempreature", words starting
# "tem" or ending "ure"), checked with Levenshtein distance.
_TERMS_SQL = f"""
WITH scope AS MATERIALIZED (
    SELECT
        CASE WHEN $3::uuid IS NULL AND $4::uuid IS NULL THEN ARRAY(
                 SELECT m.workspace_id FROM workspace_members m WHERE m.user_id = $2)
             WHEN $4::uuid IS NULL THEN ARRAY[$3::uuid]
             ELSE '{{}}'::uuid[]
        END AS workspaces,
        CASE WHEN $3::uuid IS NULL AND $4::uuid IS NULL THEN ARRAY(
                 SELECT g.notebook_id FROM notebook_grants g
                 JOIN notebook_search ns ON ns.notebook_id = g.notebook_id
                 WHERE g.user_id = $2 AND ns.workspace_id NOT IN (
                     SELECT m.workspace_id FROM workspace_members m WHERE m.user_id = $2))
             WHEN $4::uuid IS NULL THEN '{{}}'::uuid[]
             ELSE ARRAY(SELECT ns.notebook_id FROM notebook_search ns
                        WHERE ns.notebook_id = $4 AND ($3::uuid IS NULL OR ns.workspace_id = $3))
        END AS notebooks
), alone AS MATERIALIZED (
    SELECT w.word COLLATE "C" AS word, count(*)::integer AS notebooks
    FROM scope, notebook_search ns, unnest(ns.lexicon) AS w (word)
    WHERE ns.notebook_id = ANY(scope.notebooks)
    GROUP BY 1
), terms AS (
    SELECT t.term, e.edits,
           left(t.term, CASE e.edits WHEN 1 THEN (length(t.term) + 1) / 2
                                      ELSE length(t.term) / 3 END) AS head,
           reverse(right(t.term, CASE e.edits WHEN 1 THEN length(t.term) / 2
                                              ELSE length(t.term) / 3 END)) AS tail
    FROM unnest(tsvector_to_array(to_tsvector('simple', search_normalize($1)))) AS t (term),
         LATERAL (SELECT CASE WHEN length(t.term) >= {_TWO_EDITS_LENGTH} THEN 2 ELSE 1 END)
             AS e (edits)
    ORDER BY length(t.term) DESC, t.term
    LIMIT {MAX_TERMS}
)
SELECT t.term,
       CASE WHEN length(t.term) < {_TYPO_MIN_LENGTH} OR EXISTS (
                SELECT 1 FROM scope, search_words w
                WHERE w.workspace_id = ANY(scope.workspaces)
                  AND w.word >= t.term COLLATE "C" AND w.word < (t.term || chr(1114111)) COLLATE "C"
            ) OR EXISTS (
                SELECT 1 FROM alone a
                WHERE a.word >= t.term COLLATE "C" AND a.word < (t.term || chr(1114111)) COLLATE "C"
            ) THEN '{{}}'::text[]
            ELSE ARRAY(
                SELECT c.word FROM (
                    (SELECT w.workspace_id, w.word, w.notebooks FROM scope, search_words w
                     WHERE w.workspace_id = ANY(scope.workspaces)
                       AND w.word >= t.head COLLATE "C"
                       AND w.word < (t.head || chr(1114111)) COLLATE "C"
                       AND abs(length(w.word) - length(t.term)) <= t.edits
                       AND levenshtein_less_equal(w.word, t.term, t.edits) <= t.edits
                     UNION
                     SELECT w.workspace_id, w.word, w.notebooks FROM scope, search_words w
                     WHERE w.workspace_id = ANY(scope.workspaces)
                       AND reverse(w.word) >= t.tail COLLATE "C"
                       AND reverse(w.word) < (t.tail || chr(1114111)) COLLATE "C"
                       AND abs(length(w.word) - length(t.term)) <= t.edits
                       AND levenshtein_less_equal(w.word, t.term, t.edits) <= t.edits)
                    UNION ALL
                    SELECT NULL, a.word, a.notebooks FROM alone a
                    WHERE (starts_with(a.word, t.head) OR starts_with(reverse(a.word), t.tail))
                      AND abs(length(a.word) - length(t.term)) <= t.edits
                      AND levenshtein_less_equal(a.word, t.term, t.edits) <= t.edits
                ) AS c
                GROUP BY c.word
                ORDER BY levenshtein(c.word, t.term), sum(c.notebooks) DESC, c.word
                LIMIT {_TYPO_CANDIDATES}
            )
       END AS typos
FROM terms t
ORDER BY length(t.term) DESC, t.term
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


async def query_terms(
    conn: asyncpg.Pool | asyncpg.Connection,
    user_id: uuid.UUID,
    query: str,
    workspace_scope: uuid.UUID | None = None,
    notebook_scope: uuid.UUID | None = None,
) -> list[Term]:
    """The words ``search`` looks for (at most MAX_TERMS, longest first), each with its typo
    candidates, drawn only from what the caller may see (the arguments are ``search``'s)."""
    records = await conn.fetch(
        _TERMS_SQL, query[:MAX_QUERY_CHARS], user_id, workspace_scope, notebook_scope
    )
    return [Term(r["term"], tuple(r["typos"])) for r in records]


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
        terms = await query_terms(conn, user_id, query, workspace_scope, notebook_scope)
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
