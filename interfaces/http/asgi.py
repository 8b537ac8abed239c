"""The API as an ASGI application built from the environment, for servers that start
several worker processes (``gomobile api --workers N``, or ``uvicorn interfaces.http.asgi:app``).
Each process builds its own container; they share only PostgreSQL and Redis."""

from __future__ import annotations

from interfaces.http.app import create_app


def _build() -> object:
    import os

    from infrastructure.bootstrap import Container
    from infrastructure.logs import configure_logging

    # A server's worker process starts afresh: JSON log lines there too.
    configure_logging(os.environ.get("GOMOBILE_LOG_LEVEL", "WARNING"))

    return create_app(Container())


app = _build()
