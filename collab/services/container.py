"""The long-lived services a running server holds, built and closed by the app's lifespan."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import asyncpg
from starlette.requests import HTTPConnection

from collab.app_services import kept_services
from collab.auth.access import AccessServices
from collab.auth.access_watch import AccessWatch, LiveSockets
from collab.auth.accounts import Accounts
from collab.auth.links import Links
from collab.auth.members import Members
from collab.metrics import Metrics, MetricsServices
from collab.search.indexer import SearchIndexer
from collab.services.extensions import Extension, Extensions
from collab.settings import Settings
from collab.storage.catalog import Catalog
from collab.storage.database import open_pool
from collab.storage.document_store import DocumentStore
from collab.sync.other_nodes import OtherNodes
from collab.sync.replication import Replication
from collab.sync.room_manager import RoomManager
from collab.sync.websocket import SocketServices


@dataclass(frozen=True)
class Services:
    """What a running server holds; handlers reach it with ``services_of(request)``.

    >>> services = services_of(request)
    >>> await services.catalog.get_notebook(notebook_id)
    """

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
    # Told of every change that can take access away; tells every node (AccessHooks).
    access: AccessWatch
    replication: Replication
    # The hooks of every extension (Extension.workspace_copied, ...).
    extensions: Extensions


def services_of(conn: HTTPConnection) -> Services:
    """The services of the server handling ``conn`` (the typed accessor for the layers
    from here up; the layers below read their own view: collab.app_services)."""
    services: Services = kept_services(conn)
    return services


def _views(services: Services) -> tuple[AccessServices, SocketServices, MetricsServices]:
    """Not called: mypy checks here that Services is every lower layer's view of it."""
    return services, services, services


@contextlib.asynccontextmanager
async def open_services(
    settings: Settings, extensions: Sequence[Extension] = ()
) -> AsyncIterator[Services]:
    async with contextlib.AsyncExitStack() as stack:
        pool = await stack.enter_async_context(open_pool(settings))
        catalog = Catalog(pool)
        store = DocumentStore(pool)
        metrics = Metrics()
        # What this server hears of the others: it announces appends and presence only
        # while one may be there (the feed keeps it current).
        others = OtherNodes(interval_s=settings.feed_poll_seconds)
        rooms = await stack.enter_async_context(
            RoomManager(settings, store, catalog, metrics, others)
        )
        metrics.gauge("weft_rooms", "Notebooks loaded in memory", lambda: rooms.count)
        metrics.gauge(
            "weft_other_servers",
            "Other servers on this database heard from lately (0: this one sends no notices)",
            lambda: others.heard_from,
        )
        metrics.gauge(
            "weft_clients",
            "WebSocket clients connected",
            lambda: sum(len(room.clients) for room in rooms.all()),
        )
        replication = await stack.enter_async_context(
            Replication(
                pool, store, rooms, metrics, poll_seconds=settings.feed_poll_seconds, others=others
            )
        )
        await stack.enter_async_context(SearchIndexer(pool, store, rooms))
        accounts = Accounts(pool, settings)
        sockets = LiveSockets()
        access = await stack.enter_async_context(AccessWatch(pool, accounts, sockets))
        yield Services(
            settings=settings,
            pool=pool,
            catalog=catalog,
            store=store,
            rooms=rooms,
            metrics=metrics,
            accounts=accounts,
            members=Members(pool, access),
            links=Links(pool, accounts, access),
            sockets=sockets,
            access=access,
            replication=replication,
            extensions=Extensions(extensions),
        )
