"""Where the running server keeps its services on the app, and the one place that reads
them back.

Each layer reads them through a view of its own, naming only what it uses
(``collab.auth.access.AccessServices``, ``collab.sync.websocket.SocketServices``,
``collab.metrics.MetricsServices``), so no layer imports the services above it;
``collab.services.container.Services`` is all of them (mypy checks it there), and
``collab.services.container.services_of`` is the accessor for the layers above.
"""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.requests import HTTPConnection

from collab.errors import Unavailable


def keep_services(app: Starlette, services: object) -> None:
    """Called by the lifespan once the services are open."""
    app.state.services = services


def kept_services(conn: HTTPConnection) -> Any:
    """The services of the app serving ``conn``; for a layer's typed view to narrow."""
    services = getattr(conn.app.state, "services", None)
    if services is None:
        raise Unavailable("the server is starting or stopping; retry shortly")
    return services
