"""Room hooks: what happens to the rooms of this server, for the parts that follow along.

The room manager calls them (``RoomManager.hooks``); the document feed (presence across
servers) and the search indexer implement them, and an extension may too
(``services.rooms.hooks.add(...)`` in its lifespan). Override the hooks you need: each is
a no-op here. They run synchronously, inside the room manager's call, in the order they
were added: keep them short and start a task for anything that waits. One that raises is
logged; the others and the room go on.

>>> class Watcher(RoomHooks):
...     def room_loaded(self, room: Room) -> None:
...         room.doc.observe(...)
>>> rooms.hooks.add(Watcher())
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable

from collab.auth.access import Principal
from collab.sync.room import Room

log = logging.getLogger(__name__)


class RoomHooks:
    def room_loaded(self, room: Room) -> None:
        """The room was loaded from the store and is about to be served (also for every
        room already loaded when the hooks are added)."""

    def update_persisted(self, room: Room) -> None:
        """A round of the room's updates is in the log (the writer's group commit); its
        clients have been sent them."""

    def log_applied(self, room: Room) -> None:
        """Updates other servers appended to the notebook's log were applied to the room
        (replication's catch-up). With ``update_persisted`` this covers every change of a
        room's document, without observing it (an observer runs for every transaction)."""

    def room_unloaded(self, notebook_id: uuid.UUID) -> None:
        """The room is no longer served here: idle past the grace period, its notebook
        deleted, or dropped to be loaded afresh after a panic."""

    def person_joined(self, room: Room, principal: Principal) -> None:
        """A person opened the notebook: their socket joined its room here, with this
        role (the executor starts the kernel for someone who may run code)."""

    def presence_changed(self, room: Room, payload: bytes) -> None:
        """Presence was accepted in the room (an awareness payload of the entries that
        changed): replication sends it to the other servers."""


class RoomHookList(RoomHooks):
    """Every registered ``RoomHooks``, called in order."""

    def __init__(self) -> None:
        self._hooks: list[RoomHooks] = []

    def add(self, hooks: RoomHooks, loaded: list[Room] | None = None) -> None:
        """Register ``hooks``; ``loaded`` are the rooms already served (each gets
        ``room_loaded`` now)."""
        self._hooks.append(hooks)
        for room in loaded or ():
            _call(hooks, hooks.room_loaded, room.notebook_id, room)

    def remove(self, hooks: RoomHooks) -> None:
        if hooks in self._hooks:
            self._hooks.remove(hooks)

    def room_loaded(self, room: Room) -> None:
        for hooks in list(self._hooks):
            _call(hooks, hooks.room_loaded, room.notebook_id, room)

    def update_persisted(self, room: Room) -> None:
        for hooks in list(self._hooks):
            _call(hooks, hooks.update_persisted, room.notebook_id, room)

    def log_applied(self, room: Room) -> None:
        for hooks in list(self._hooks):
            _call(hooks, hooks.log_applied, room.notebook_id, room)

    def room_unloaded(self, notebook_id: uuid.UUID) -> None:
        for hooks in list(self._hooks):
            _call(hooks, hooks.room_unloaded, notebook_id, notebook_id)

    def person_joined(self, room: Room, principal: Principal) -> None:
        for hooks in list(self._hooks):
            _call(hooks, hooks.person_joined, room.notebook_id, room, principal)

    def presence_changed(self, room: Room, payload: bytes) -> None:
        for hooks in list(self._hooks):
            _call(hooks, hooks.presence_changed, room.notebook_id, room, payload)


def _call(
    hooks: RoomHooks, hook: Callable[..., None], notebook_id: uuid.UUID, *args: object
) -> None:
    try:
        hook(*args)
    except Exception:
        log.exception(
            "room hook failed",
            extra={
                "hook": f"{type(hooks).__name__}.{hook.__name__}",
                "notebook_id": str(notebook_id),
            },
        )
