"""The long-lived services a running server holds, built and closed by the app's lifespan."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import asyncpg

from collab.auth.access_watch import AccessWatch, LiveSockets, announce
from collab.auth.accounts import Accounts
from collab.auth.links import Links
from collab.auth.members import Members
from collab.metrics import Metrics
from collab.search.indexer import SearchIndexer
from collab.settings import Settings
from collab.storage.catalog import Catalog
from collab.storage.database import open_pool
from collab.storage.document_store import DocumentStore
from collab.sync.replication import Replication
from collab.sync.room_manager import RoomManager


class WorkspaceFiles(Protocol):
    """A workspace's file store as other extensions may read it (the executor owns it)."""

    def list(
        self, workspace_id: uuid.UUID, relative: str = "", schema: bool = False
    ) -> list[dict[str, Any]]: ...


@dataclass
class Offered:
    """What extensions offer each other through collab, typed (collab itself never reads it):
    so the assistant reads the workspace's files without importing the executor."""

    workspace_files: WorkspaceFiles | None = None


@dataclass(frozen=True)
class Services:
    settings: Settings
    pool: asyncpg.Pool
    catalog: Catalog
    store: DocumentStore
    rooms: RoomManager
    metrics: Metrics
    accounts: Accounts
    members: Members
    links: Links
    sockets: LiveSockets
    replication: Replication
    # Run when a workspace is copied (source id, copy's id): extensions copy what they own
    # (the executor, the file store).
    workspace_copied: list[Callable[[uuid.UUID, uuid.UUID], Awaitable[None]]]
    # What extensions publish for their own routes (e.g. "executor"): collab never reads it.
    extras: dict[str, Any] = field(default_factory=dict)
    offered: Offered = field(default_factory=Offered)


@contextlib.asynccontextmanager
async def open_services(settings: Settings) -> AsyncIterator[Services]:
    async with contextlib.AsyncExitStack() as stack:
        pool = await stack.enter_async_context(open_pool(settings))
        catalog = Catalog(pool)
        store = DocumentStore(pool)
        metrics = Metrics()
        rooms = await stack.enter_async_context(RoomManager(settings, store, catalog, metrics))
        metrics.gauge("weft_rooms", "Notebooks loaded in memory", lambda: rooms.count)
        metrics.gauge(
            "weft_clients",
            "WebSocket clients connected",
            lambda: sum(len(room.clients) for room in rooms.all()),
        )
        replication = await stack.enter_async_context(
            Replication(pool, store, rooms, metrics, poll_seconds=settings.feed_poll_seconds)
        )
        await stack.enter_async_context(SearchIndexer(pool, store, rooms))
        accounts = Accounts(pool, settings)

        async def access_changed(scope: str) -> None:
            await announce(pool, scope)

        sockets = LiveSockets()
        await stack.enter_async_context(AccessWatch(pool, accounts, sockets).running())
        yield Services(
            settings=settings,
            pool=pool,
            catalog=catalog,
            store=store,
            rooms=rooms,
            metrics=metrics,
            accounts=accounts,
            members=Members(pool, access_changed),
            links=Links(pool, accounts, access_changed),
            sockets=sockets,
            replication=replication,
            workspace_copied=[],
        )
