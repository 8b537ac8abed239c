"""The API as an ASGI application built from the environment, for servers that start
several worker processes (``gomobile api --workers N``, or ``uvicorn interfaces.http.asgi:app``).
Each process builds its own container; they share only PostgreSQL and Redis."""

from __future__ import annotations

from interfaces.http.app import create_app


def _build() -> object:
    from infrastructure.bootstrap import Container

    return create_app(Container())


app = _build()
