"""The assistant: generations that write code into a cell as it streams, as a peer of the
document, and stay pending suggestions until their requester accepts or rejects them.

A generation's task holds the notebook's room from its start until its suggestion is
resolved (accepted, rejected, expired, or failed), so the suggestion's tracking of the
cell's text never misses an edit. Generations live in the memory of the server that
started them; every state change is also written to PostgreSQL (ai/shared.py), so any
server can show one and pass accept, reject or cancel on to the server running it.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskStatus
from prometheus_client import Counter, Histogram

from ai.answer import Answer
from ai.cleaner import CodeFilter
from ai.prompt import Cell, PromptInput, build_prompt
from ai.provider import CompletionStream, ProviderError, make_client
from ai.settings import AssistantSettings
from ai.shared import ACTIVE, HEARTBEAT_S, SharedGeneration, SharedGenerations
from ai.tokens import Tokenizer, load_tokenizer
from ai.tracking import Suggestion
from collab.auth.access import Principal
from collab.background import BackgroundService
from collab.document.schema import RunState
from collab.errors import BadRequest, Conflict, NotFound, Unavailable, WeftError
from collab.services.container import Services
from collab.storage.database import DATABASE_ERRORS
from collab.sync.peers import NotebookPeer, open_notebook

if TYPE_CHECKING:
    from openai import AsyncOpenAI

log = logging.getLogger(__name__)

MODES = ("generate", "edit", "fix")
ACTIONS = ("accept", "reject", "cancel")
MAX_FILES_LISTED = 100
# How long a server waits for another to carry out an action on a generation it runs.
REMOTE_ACTION_S = 10.0
# How often, at most, the mark's ranges follow the assistant's text (while it streams, and
# while others type in a pending suggestion).
RANGES_S = 0.1
ASSISTANT_COLOR = "#7c3aed"


class TooManyRequests(WeftError):
    status = 429
    code = "rate_limited"


def _now() -> str:
    return datetime.now(UTC).isoformat()


@dataclass
class Request:
    """What a person asked for, validated."""

    notebook_id: uuid.UUID
    cell_id: str
    mode: str
    instruction: str
    selection: tuple[int, int] | None  # UTF-16 offsets, as a browser editor counts
    resolve_pending: str  # accept | reject: what to do with the requester's pending one


@dataclass
class Generation:
    id: uuid.UUID
    request: Request
    requester: Principal
    state: str = "starting"
    finish_reason: str | None = None
    error: dict[str, str] | None = None
    note: str | None = None
    created_at: str = field(default_factory=_now)
    finished_at: str | None = None
    resolved_at: str | None = None
    context: dict[str, int] = field(default_factory=dict)
    usage: dict[str, int] = field(default_factory=dict)
    code: str = ""
    # Runtime: the notebook held by the task, the suggestion, and the signals between the
    # routes and the task.
    notebook: NotebookPeer | None = None
    suggestion: Suggestion | None = None
    scope: anyio.CancelScope | None = None
    settled: anyio.Event = field(default_factory=anyio.Event)  # streaming is over
    resolved: anyio.Event = field(default_factory=anyio.Event)  # the task may let go
    ended: float | None = None  # monotonic time it reached a final state
    ranges: list[dict[str, Any]] | None = None  # the ranges last written into the mark

    def public(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "notebook_id": str(self.request.notebook_id),
            "cell_id": self.request.cell_id,
            "mode": self.request.mode,
            "instruction": self.request.instruction,
            "state": self.state,
            "finish_reason": self.finish_reason,
            "error": self.error,
            "note": self.note,
            "requested_by": {"id": str(self.requester.user_id), "name": self.requester.name},
            "created_at": self.created_at,
            "finished_at": self.finished_at,
            "resolved_at": self.resolved_at,
            "code": self.suggestion.own_text()
            if self.state in ACTIVE and self.suggestion
            else self.code,
            "context": self.context,
            "usage": self.usage,
        }


def utf16_to_index(text: str, offset: int) -> int:
    units = 0
    for index, char in enumerate(text):
        if units >= offset:
            return index
        units += 2 if ord(char) > 0xFFFF else 1
    return len(text)


def _bytes_at(text: str, index: int) -> int:
    return len(text[:index].encode("utf-8"))


class Assistant:
    """
    >>> async with Assistant(settings, services).running() as assistant:
    ...     generation = await assistant.start(request, principal)
    """

    def __init__(self, settings: AssistantSettings, services: Services) -> None:
        self.settings = settings
        self.services = services
        self.generations: dict[uuid.UUID, Generation] = {}
        self.shared = SharedGenerations(services.pool, services.store.node)
        self._versions: dict[uuid.UUID, int] = {}
        self._by_cell: dict[tuple[uuid.UUID, str], Generation] = {}
        self._recent: dict[uuid.UUID, deque[float]] = {}
        self.tokenizer: Tokenizer | None = None
        self.client: AsyncOpenAI | None = None
        # Its tasks (generations, saving rows, answering other servers), collab's way.
        self._tasks = _AssistantTasks(self)
        self._presence_clock = 0
        registry = services.metrics.registry
        self._requests = Counter(
            "weft_assistant_requests",
            "Generations started, by mode",
            ["mode"],
            registry=registry,
        )
        self._outcomes = Counter(
            "weft_assistant_generations",
            "Generations ended, by outcome (accepted, rejected, failed, cancelled, expired)",
            ["outcome"],
            registry=registry,
        )
        self._tokens = Counter(
            "weft_assistant_tokens",
            "Tokens sent to and received from the model",
            ["kind"],
            registry=registry,
        )
        self._first_token = Histogram(
            "weft_assistant_first_token_seconds",
            "From a request to the first code written into the cell",
            buckets=(0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60),
            registry=registry,
        )
        services.metrics.gauge(
            "weft_assistant_streaming",
            "Generations writing into a cell now",
            lambda: sum(1 for g in self._by_cell.values() if g.state == "streaming"),
        )

    # -- lifecycle ---------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Assistant]:
        if self.settings.configured:
            # Both only when there is a model to talk to: they cost every start ~1 s.
            self.tokenizer = await anyio.to_thread.run_sync(load_tokenizer, self.settings.model)
            self.client = make_client(self.settings)
            log.info(
                "assistant ready",
                extra={
                    "model": self.settings.model,
                    "base_url": self.settings.base_url or "(OpenAI)",
                    "tokenizer": self.tokenizer.name,
                },
            )
        else:
            log.warning("assistant not configured: OPENAI_API_KEY is not set")
        try:
            async with self._tasks, self.shared.listening(self._asked):
                yield self
        finally:
            if self.client is not None:
                await self.client.close()

    async def forget_finished(self) -> None:
        """Forever: drop generations finished long ago, refresh the shared rows."""
        while True:
            await anyio.sleep(min(HEARTBEAT_S, self.settings.keep_finished_s))
            now = time.monotonic()
            for gen_id, gen in list(self.generations.items()):
                if gen.ended is not None and now - gen.ended > self.settings.keep_finished_s:
                    del self.generations[gen_id]
                    self._versions.pop(gen_id, None)
            active = [g.id for g in self.generations.values() if g.state in ACTIVE]
            try:
                await self.shared.touch(active)
                await self.shared.forget(self.settings.keep_finished_s)
            except DATABASE_ERRORS as exc:
                log.warning("assistant: could not refresh shared generations: %s", exc)
            for user, recent in list(self._recent.items()):
                while recent and now - recent[0] > self.settings.rate_window_s:
                    recent.popleft()
                if not recent:
                    del self._recent[user]

    # -- starting ------------------------------------------------------------------------

    def _take_rate(self, user: uuid.UUID) -> float:
        """Record one request for ``user``; raise TooManyRequests past the limit."""
        now = time.monotonic()
        recent = self._recent.setdefault(user, deque())
        while recent and now - recent[0] > self.settings.rate_window_s:
            recent.popleft()
        if len(recent) >= self.settings.rate_limit:
            wait = max(1, round(self.settings.rate_window_s - (now - recent[0])))
            raise TooManyRequests(
                f"at most {self.settings.rate_limit} assistant requests per "
                f"{self.settings.rate_window_s:g} s per person; try again in {wait} s"
            )
        recent.append(now)
        return now

    async def start(self, request: Request, requester: Principal) -> Generation:
        """Start a generation; returns once its text has a place in the cell (the 202)."""
        assert self._tasks.started, "the assistant is not running"
        stamp = self._take_rate(requester.user_id)
        generation = Generation(uuid.uuid4(), request, requester)
        try:
            await self._tasks.task_started(self._run, generation)
        except BaseException:
            recent = self._recent.get(requester.user_id)
            if recent is not None and stamp in recent:
                recent.remove(stamp)
            raise
        # Written before the 202: the next request may reach another server.
        await self._save(*self._row(generation))
        return generation

    # -- shared with other servers (ai/shared.py) -----------------------------------------

    def _row(self, generation: Generation) -> tuple[SharedGeneration, int]:
        version = self._versions.get(generation.id, 0) + 1
        self._versions[generation.id] = version
        row = SharedGeneration(
            id=generation.id,
            notebook_id=generation.request.notebook_id,
            cell_id=generation.request.cell_id,
            node=self.shared.node,
            requester_id=generation.requester.user_id,
            state=generation.state,
            public=generation.public(),
        )
        return row, version

    async def _save(self, row: SharedGeneration, version: int) -> None:
        try:
            await self.shared.save(row, version)
        except DATABASE_ERRORS as exc:
            # Other servers see an older state until the next change; this one is right.
            log.warning(
                "assistant: could not share a generation's state: %s",
                exc,
                extra={"notebook_id": str(row.notebook_id), "generation_id": str(row.id)},
            )

    def _publish(self, generation: Generation) -> None:
        if self._tasks.started and generation.id in self.generations:
            self._tasks.task(self._save, *self._row(generation))

    def _asked(self, generation_id: uuid.UUID, action: str) -> None:
        """Another server passed on an action on a generation this one runs."""
        generation = self.generations.get(generation_id)
        if generation is not None and self._tasks.started and action in ACTIONS:
            self._tasks.task(self._answer, generation, action)

    async def _answer(self, generation: Generation, action: str) -> None:
        try:
            await self.act(generation, action)
        except Conflict:
            pass  # already settled otherwise: the row says how
        self._publish(generation)

    async def act(self, generation: Generation, action: str) -> None:
        """Accept, reject (stopping the stream first) or cancel a generation running here;
        asking again for what was already done is fine. Raises Conflict otherwise."""
        await self.stop_streaming(generation)
        if action == "cancel":
            return
        if generation.state == "pending":
            if action == "accept":
                self.accept(generation)
            else:
                self.reject(generation)
        elif generation.state != f"{action}ed":
            raise Conflict(f"cannot {action}: the generation is already {generation.state}")

    async def act_remotely(self, row: SharedGeneration, action: str) -> dict[str, Any]:
        """``act`` on a generation another server runs: ask it, wait for its row to show
        the outcome. Returns the generation as that server describes it."""
        settled: tuple[str, ...] = ("streaming",) if action == "cancel" else ACTIVE
        if row.state in settled:
            await self.shared.ask(row, action)
            with anyio.move_on_after(REMOTE_ACTION_S):
                row = await self.shared.wait_for(row.id, lambda state: state not in settled)
            if row.state in settled:
                raise Unavailable(
                    "the server running this generation did not answer; try again shortly"
                )
        if action != "cancel" and row.state != f"{action}ed":
            raise Conflict(f"cannot {action}: the generation is already {row.state}")
        return row.public

    def _claim_cell(self, notebook: NotebookPeer, generation: Generation) -> None:
        """At most one generation per cell; the requester's own pending suggestion is
        resolved first. Synchronous from check to claim: nothing can slip in between."""
        request = generation.request
        key = (request.notebook_id, request.cell_id)
        current = self._by_cell.get(key)
        if current is not None and current.state == "streaming":
            raise Conflict(
                f"the assistant is already writing in this cell for {current.requester.name}; "
                "wait for it or cancel it"
            )
        if current is not None and current.state == "pending":
            if current.requester.user_id != generation.requester.user_id:
                raise Conflict(
                    f"this cell has a suggestion pending for {current.requester.name}; "
                    "they must accept or reject it first"
                )
            if request.resolve_pending == "reject":
                self.reject(current)
            else:
                self.accept(current)
        mark = notebook.assist().get(request.cell_id)
        if mark is not None and key not in self._by_cell:
            # Left by a server that stopped (or another server): nobody tracks it any more.
            notebook.set_assist(request.cell_id, None)
        self._by_cell[key] = generation

    async def _files(self, notebook_id: uuid.UUID) -> list[dict[str, Any]]:
        row = await self.services.catalog.get_notebook(notebook_id)
        workspace_id = uuid.UUID(str(row["workspace_id"]))
        store = self.services.extensions.workspace_files()
        if store is None:
            return []  # no executor here: no file store to describe

        def walk() -> list[dict[str, Any]]:
            found: list[dict[str, Any]] = []
            folders = [""]
            while folders and len(found) < MAX_FILES_LISTED:
                folder = folders.pop(0)
                try:
                    entries = store.list(workspace_id, folder, schema=True)
                except Exception as exc:
                    log.warning("could not list workspace files: %s", exc)
                    continue
                for entry in entries:
                    if str(entry.get("name", "")).startswith("."):
                        continue
                    if entry.get("type") == "dir":
                        folders.append(str(entry["path"]))
                    found.append(entry)
            return found[:MAX_FILES_LISTED]

        return await anyio.to_thread.run_sync(walk)

    def _prompt_input(
        self, notebook: NotebookPeer, generation: Generation, files: list[dict[str, Any]]
    ) -> tuple[PromptInput, tuple[int, int]]:
        """The prompt's data, and the byte range of the cell to replace (or where to
        insert)."""
        request = generation.request
        cells = notebook.cells()
        index = next((c.index for c in cells if c.id == request.cell_id), None)
        if index is None:
            raise NotFound(f"no cell {request.cell_id} in this notebook")
        target = cells[index]
        if target.cell_type != "code":
            raise BadRequest("the assistant writes code cells only")
        source = target.source
        error = None
        if request.mode == "fix":
            errors = [
                o for o in notebook.outputs(request.cell_id) if o.get("output_type") == "error"
            ]
            if errors:
                error = errors[-1]
            else:
                run = notebook.run(request.cell_id) or {}
                if run.get("state") != RunState.ERROR:
                    raise BadRequest(
                        "this cell has no error to fix: run it first, or use mode 'edit'"
                    )
                error = {"ename": "Error", "evalue": str(run.get("error") or "the run failed")}
        selection = None
        if request.selection is not None:
            start = utf16_to_index(source, request.selection[0])
            end = utf16_to_index(source, request.selection[1])
            selection = (min(start, end), max(start, end))
        symbols = notebook.symbols()
        if not self.settings.schemas:
            # Tables keep their name and type only (their repr shows the columns too).
            symbols = {
                cell: [
                    {**{k: v for k, v in sym.items() if k != "schema"}, "repr": "(a table)"}
                    if "schema" in sym
                    else sym
                    for sym in syms
                ]
                for cell, syms in symbols.items()
            }
            files = [{k: v for k, v in entry.items() if k != "schema"} for entry in files]
        data = PromptInput(
            mode=request.mode,
            instruction=request.instruction,
            cells=[Cell(c.id, c.cell_type, c.language, c.source) for c in cells],
            target=index,
            selection=selection,
            symbols=symbols,
            error=error,
            files=files,
            packages=_environment_packages(notebook.metadata()),
        )
        size = len(source.encode("utf-8"))
        if selection is not None:
            where = (_bytes_at(source, selection[0]), _bytes_at(source, selection[1]))
        elif request.mode == "generate":
            where = (size, size)
        else:
            where = (0, size)
        return data, where

    # -- the generation's task ---------------------------------------------------------------

    def _presence(self, notebook: NotebookPeer, generation: Generation, on: bool) -> None:
        self._presence_clock += 1
        client_id = generation.id.int & 0x3FFFFFFF
        if not on:
            notebook.set_presence(client_id, self._presence_clock, None)
            return
        name = generation.requester.name
        notebook.set_presence(
            client_id,
            self._presence_clock,
            {
                "user": {
                    "id": f"assistant:{generation.requester.user_id}",
                    "name": f"Assistant (for {name})",
                    "color": ASSISTANT_COLOR,
                    "colorLight": ASSISTANT_COLOR + "33",
                    "assistant": True,
                },
                "cell": generation.request.cell_id,
                "assistant": {
                    "generation_id": str(generation.id),
                    "for": {"id": str(generation.requester.user_id), "name": name},
                    "state": "writing",
                },
            },
        )

    def _mark(self, notebook: NotebookPeer, generation: Generation, moved: bool = False) -> None:
        """Write the cell's mark in ``assist``, with the exact ranges of the assistant's text
        as relative positions. ``moved``: only if those ranges changed since the last."""
        suggestion = generation.suggestion
        ranges = suggestion.relative_ranges() if suggestion is not None else []
        if moved and ranges == generation.ranges:
            return
        generation.ranges = ranges
        notebook.set_assist(
            generation.request.cell_id,
            {
                "generation_id": str(generation.id),
                "state": generation.state,
                "mode": generation.request.mode,
                "by": {"id": str(generation.requester.user_id), "name": generation.requester.name},
                "started_at": generation.created_at,
                "ranges": ranges,
            },
        )

    async def _follow_ranges(self, generation: Generation, notebook: NotebookPeer) -> None:
        """Keep the mark's ranges on the assistant's text, at most every ``RANGES_S``, for as
        long as the generation streams or is pending (relative positions follow others'
        typing by themselves; a new range is needed when the text grows, or someone types
        inside it)."""
        seen = -1
        while True:
            await anyio.sleep(RANGES_S)
            suggestion = generation.suggestion
            if (
                generation.state not in ACTIVE
                or generation.notebook is not notebook
                or suggestion is None
                or suggestion.lost
            ):
                return
            if suggestion.version != seen:
                seen = suggestion.version
                try:
                    self._mark(notebook, generation, moved=True)
                except Exception:
                    log.exception("assistant: could not update a suggestion's ranges")

    async def _run(self, generation: Generation, *, task_status: TaskStatus[None]) -> None:
        request = generation.request
        key = (request.notebook_id, request.cell_id)
        claimed = False
        async with open_notebook(self.services.rooms, request.notebook_id) as notebook:
            try:
                if notebook.cell(request.cell_id) is None:
                    raise NotFound(f"no cell {request.cell_id} in this notebook")
                elsewhere = await self.shared.busy(request.notebook_id, request.cell_id)
                if elsewhere is not None:
                    name = elsewhere.public.get("requested_by", {}).get("name", "someone")
                    raise Conflict(
                        f"the assistant is already working in this cell for {name} (through "
                        "another server); wait for it, or they accept, reject or cancel it"
                    )
                self._claim_cell(notebook, generation)
                claimed = True
                files = await self._files(request.notebook_id)
                data, (start, end) = self._prompt_input(notebook, generation, files)
                text = notebook.cell_text(request.cell_id)
                if text is None:
                    raise NotFound(f"no cell {request.cell_id} in this notebook")
                assert self.tokenizer is not None
                prompt = build_prompt(data, self.tokenizer, self.settings.context_tokens)
                generation.context = prompt.report
                generation.notebook = notebook
                generation.suggestion = Suggestion(
                    notebook,
                    text,
                    start,
                    end,
                    on_lost=lambda reason: self._lost(generation, reason),
                )
                generation.state = "streaming"
                self._mark(notebook, generation)
                self._presence(notebook, generation, True)
            except BaseException:
                if claimed and self._by_cell.get(key) is generation:
                    del self._by_cell[key]
                raise
            self.generations[generation.id] = generation
            self._requests.labels(mode=request.mode).inc()
            log.info(
                "assistant generation started",
                extra={
                    "notebook_id": str(request.notebook_id),
                    "generation_id": str(generation.id),
                    "cell_id": request.cell_id,
                    "mode": request.mode,
                    "user_id": str(generation.requester.user_id),
                    **prompt.report,
                },
            )
            self._tasks.task(self._follow_ranges, generation, notebook)
            task_status.started()
            try:
                await self._stream(generation, notebook, prompt.messages, prompt.tokens)
                if generation.state == "pending":
                    with anyio.move_on_after(self.settings.pending_ttl_s):
                        await generation.resolved.wait()
                    if generation.state == "pending":
                        self.accept(generation, outcome="expired")
            finally:
                # Shutdown (or a bug): leave the document clean, never half-written.
                if generation.state == "streaming":
                    self._fail(
                        generation,
                        ProviderError("shutdown", "the server stopped while the assistant wrote"),
                    )
                elif generation.state == "pending":
                    self.accept(generation, outcome="shutdown")
                generation.notebook = None
                generation.settled.set()

    async def _stream(
        self,
        generation: Generation,
        notebook: NotebookPeer,
        messages: list[dict[str, str]],
        prompt_tokens: int,
    ) -> None:
        """Write the model's code into the cell as it arrives; then leave a suggestion to
        review, or nothing and why (failed, cancelled, no code)."""
        assert self.client is not None
        answer = self._new_answer(generation, notebook)
        completion = CompletionStream(self.client, self.settings)
        with anyio.CancelScope() as scope:
            generation.scope = scope
            try:
                await self._receive(completion, messages, answer)
            except ProviderError as exc:
                self._fail(generation, exc)
                return
            except Exception as exc:
                log.exception("assistant generation failed")
                self._fail(generation, ProviderError("internal", f"the assistant failed: {exc}"))
                return
            finally:
                generation.scope = None
                self._count_usage(generation, completion.usage, prompt_tokens, answer.tokens)
        if scope.cancelled_caught:
            if not answer.suggestion.lost:
                answer.finish()
            finish_reason = "cancelled"
        else:
            finish_reason = completion.finish_reason or "stop"
        self._settle_stream(generation, notebook, answer, finish_reason)

    def _new_answer(self, generation: Generation, notebook: NotebookPeer) -> Answer:
        suggestion = generation.suggestion
        assert suggestion is not None
        assert self.tokenizer is not None
        request = generation.request
        started = time.monotonic()
        return Answer(
            suggestion,
            CodeFilter((notebook.cell(request.cell_id) or _NO_CELL).language),
            self.tokenizer.count,
            appending=request.mode == "generate" and request.selection is None,
            on_first_code=lambda: self._first_token.observe(time.monotonic() - started),
        )

    async def _receive(
        self, completion: CompletionStream, messages: list[dict[str, str]], answer: Answer
    ) -> None:
        """The model's pieces into the answer, up to the output cap; ProviderError when the
        cell goes away meanwhile."""
        async with contextlib.aclosing(completion.pieces(messages)) as pieces:
            async for piece in pieces:
                if answer.suggestion.lost:
                    raise ProviderError("cell_gone", _GONE)
                answer.feed(piece)
                if answer.tokens >= self.settings.max_output_tokens:
                    completion.finish_reason = "length"
                    break
        if answer.suggestion.lost:
            raise ProviderError("cell_gone", _GONE)
        answer.finish()

    def _count_usage(
        self, generation: Generation, usage: dict[str, int], prompt_tokens: int, output: int
    ) -> None:
        """The provider's token counts when it sent them, else ours."""
        generation.usage = {
            "prompt_tokens": usage.get("prompt_tokens") or prompt_tokens,
            "completion_tokens": usage.get("completion_tokens") or output,
        }
        self._tokens.labels(kind="prompt").inc(generation.usage["prompt_tokens"])
        self._tokens.labels(kind="completion").inc(generation.usage["completion_tokens"])

    def _settle_stream(
        self, generation: Generation, notebook: NotebookPeer, answer: Answer, finish_reason: str
    ) -> None:
        generation.finish_reason = finish_reason
        generation.finished_at = _now()
        self._presence(notebook, generation, False)
        if answer.suggestion.lost:
            self._fail(generation, ProviderError("cell_gone", _GONE))
        elif answer.suggestion.changed:
            generation.state = "pending"
            self._mark(notebook, generation)
            self._publish(generation)
        elif finish_reason == "cancelled":
            self._end(generation, "cancelled")
        else:
            self._fail(
                generation,
                ProviderError("empty", "the model's answer had no code: " + answer.excerpt()),
            )
        generation.settled.set()

    # -- endings -----------------------------------------------------------------------

    def _release(self, generation: Generation) -> None:
        key = (generation.request.notebook_id, generation.request.cell_id)
        if self._by_cell.get(key) is generation:
            del self._by_cell[key]
            if generation.notebook is not None:
                generation.notebook.set_assist(generation.request.cell_id, None)

    def _end(self, generation: Generation, state: str, outcome: str | None = None) -> None:
        if generation.suggestion is not None and not generation.code:
            generation.code = generation.suggestion.own_text()
        generation.state = state
        generation.resolved_at = _now()
        generation.finished_at = generation.finished_at or generation.resolved_at
        generation.ended = time.monotonic()
        self._release(generation)
        self._outcomes.labels(outcome=outcome or state).inc()
        generation.resolved.set()
        self._publish(generation)
        log.info(
            "assistant generation ended",
            extra={
                "notebook_id": str(generation.request.notebook_id),
                "generation_id": str(generation.id),
                "state": state,
                "outcome": outcome or state,
                "error_code": (generation.error or {}).get("code"),
            },
        )

    def _fail(self, generation: Generation, error: ProviderError) -> None:
        """Remove whatever was written, put back what was replaced, say why."""
        suggestion = generation.suggestion
        if suggestion is not None:
            generation.code = suggestion.own_text()
            suggestion.reject()
        if generation.notebook is not None:
            self._presence(generation.notebook, generation, False)
        generation.error = {"code": error.code, "message": error.message}
        generation.finished_at = generation.finished_at or _now()
        log.warning(
            "assistant generation failed: %s",
            error.message,
            extra={
                "notebook_id": str(generation.request.notebook_id),
                "generation_id": str(generation.id),
                "error_code": error.code,
            },
        )
        self._end(generation, "failed")

    def _lost(self, generation: Generation, reason: str) -> None:
        """The cell went away under the suggestion (the tracking's callback)."""
        if generation.state == "pending":
            generation.note = f"{reason}: its text stays as it is"
            self._end(generation, "accepted", outcome="lost")
        # While streaming, the stream loop notices and fails the generation.

    def accept(self, generation: Generation, outcome: str = "accepted") -> None:
        if generation.suggestion is not None:
            generation.code = generation.suggestion.own_text()
            generation.suggestion.accept()
        if outcome == "expired":
            generation.note = "nobody accepted or rejected it in time: its text stays"
        self._end(generation, "accepted", outcome)

    def reject(self, generation: Generation) -> None:
        if generation.suggestion is not None:
            generation.code = generation.suggestion.own_text()
            generation.suggestion.reject()
        self._end(generation, "rejected")

    async def stop_streaming(self, generation: Generation) -> None:
        """Stop the stream (if it still runs) and wait until the task has settled it."""
        if generation.state == "streaming":
            if generation.scope is not None:
                generation.scope.cancel()
            with anyio.fail_after(10):
                await generation.settled.wait()


_GONE = "the cell was deleted or moved while the assistant wrote in it"


@dataclass(frozen=True)
class _NoCell:
    language: str = "python"


_NO_CELL = _NoCell()


def _environment_packages(metadata: dict[str, Any]) -> list[str]:
    """The notebook's packages beyond the runtime image, as its resolved environment lists
    them (executor.environments.record); document content, so only short strings pass."""
    record = metadata.get("environment")
    packages = record.get("packages") if isinstance(record, dict) else None
    out = []
    for item in packages if isinstance(packages, list) else []:
        if isinstance(item, dict) and not item.get("in_runtime"):
            name, version = item.get("name"), item.get("version")
            if isinstance(name, str) and isinstance(version, str) and len(name + version) < 100:
                out.append(f"{name} {version}")
    return out


class _AssistantTasks(BackgroundService):
    """The assistant's tasks (collab.background): the loop that forgets finished
    generations, and every generation's (``task_started``: one that fails before it has a
    place in the cell raises to its request). Apart from the Assistant, whose ``start``
    starts a generation."""

    name = "assistant"

    def __init__(self, assistant: Assistant) -> None:
        self._assistant = assistant

    async def start(self) -> None:
        self.loop(self._assistant.forget_finished)
