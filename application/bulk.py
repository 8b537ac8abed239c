"""Loading many aggregates at once.

``Repository.get`` reads one stream per round trip: fine for a command, far too slow for
a bulk import that must know, for thousands of numbers, which contacts already exist and
what they hold. ``load_many`` reads every stream of a batch in one query (the recorder's
own table and columns, on PostgreSQL or SQLite) and replays each through the mapper, the
same reconstruction the repository does (these applications keep no snapshots).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.persistence import StoredEvent

CHUNK = 1000


def select_streams(app: Application[Any], ids: Iterable[UUID]) -> dict[UUID, list[StoredEvent]]:
    """The stored events of each of ``ids`` that has any, in version order."""
    recorder: Any = app.recorder
    table = recorder.events_table_name
    wanted = list(dict.fromkeys(ids))
    out: dict[UUID, list[StoredEvent]] = {}
    postgres = type(recorder).__module__.startswith("eventsourcing.postgres")
    for i in range(0, len(wanted), CHUNK):
        chunk = wanted[i : i + CHUNK]
        if postgres:
            from psycopg.sql import SQL, Identifier

            statement = SQL(
                "SELECT originator_id, originator_version, topic, state FROM {schema}.{table} "
                "WHERE originator_id = ANY(%s) ORDER BY originator_id, originator_version"
            ).format(schema=Identifier(recorder.datastore.schema), table=Identifier(table))
            with recorder.datastore.get_connection() as conn, conn.cursor() as curs:
                curs.execute(statement, [chunk])
                rows = curs.fetchall()
            for row in rows:
                oid = row["originator_id"]
                out.setdefault(oid, []).append(
                    StoredEvent(oid, row["originator_version"], row["topic"], bytes(row["state"]))
                )
        else:
            marks = ", ".join("?" for _ in chunk)
            statement = (
                f"SELECT originator_id, originator_version, topic, state FROM {table} "
                f"WHERE originator_id IN ({marks}) ORDER BY originator_id, originator_version"
            )
            with recorder.datastore.transaction(commit=False) as c:
                c.execute(statement, [u.hex for u in chunk])
                rows = c.fetchall()
            for row in rows:
                oid = recorder.convert_originator_id(row["originator_id"])
                out.setdefault(oid, []).append(
                    StoredEvent(oid, row["originator_version"], row["topic"], row["state"])
                )
    return out


def load_many(app: Application[Any], ids: Iterable[UUID], kind: type | None = None) -> dict[UUID, Any]:
    """The current state of each existing aggregate of ``ids`` (of type ``kind`` when given)."""
    found: dict[UUID, Any] = {}
    for oid, stored in select_streams(app, ids).items():
        aggregate: Any = None
        for s in stored:
            aggregate = app.mapper.to_domain_event(s).mutate(aggregate)
        if aggregate is not None and (kind is None or isinstance(aggregate, kind)):
            found[oid] = aggregate
    return found
