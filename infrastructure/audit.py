"""The tamper-evident audit trail (issue 7): a hash chain per organization, written by
the event recorder in the same transaction as the events, and its verification.

Why in the recorder: a chain computed afterwards (by a projection) would chain a row
forged with SQL just as well as a real one. Here each save appends, in the transaction
that inserts its events and under eventsourcing's table lock (so chain order is the
commit order), one chain row per organization touched by the save::

    entry      = originator id (16 bytes) | version (int64) | notification id (int64)
                 | sha256(topic || "\\n" || state)                    (64 bytes, big endian)
    row digest = sha256("gomobile-audit/1" | org (16 bytes) | seq (int64) | entries)
    chain_hash = HMAC-SHA256(server audit key, previous chain_hash || row digest)

(the first row of an organization has 32 zero bytes as its previous hash). Each
application's chain lives beside its events (same database, same SQLite file): one
transaction covers both, and the hot Call table never waits on the campaigns table's
lock. An event's organization is its Created event's ``organization_id`` (an
Organization's own id for its stream, else ``meta.organizationId``), kept in an
originator -> organization table filled in the same transaction and cached in memory.

A database that existed before the chain was enabled: the chain covers the events
stored after that moment (the "genesis" row, signed with the key, records the last
notification id before it); ``verify`` says how many older events it does not cover.

``verify`` streams both logs in notification order and names every stored event that
was altered (hash mismatch), inserted (no chain entry), deleted (a chain entry whose
event is gone) or reordered (stored under another notification id than chained), and
every chain row whose own hash or sequence does not hold.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import struct
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any
from uuid import UUID

from eventsourcing.persistence import (
    InterfaceError,
    OperationalError,
    ProgrammingError,
    StoredEvent,
)
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.sqlite import SQLiteApplicationRecorder
from eventsourcing.utils import register_topic, retry
from psycopg.pq import TransactionStatus

from infrastructure.group_commit import GroupCommit

FORMAT = b"gomobile-audit/1"
SCALAR_SAVE = 64  # saves (and group commits) of up to this many events: each value a literal (see _small_save)
SQL_BEGIN = b"BEGIN; "
SQL_COMMIT = b"; COMMIT"
ENTRY = struct.Struct(">16sqq32s")
ZERO = bytes(32)
# Events of no organization (none known yet for the stream) are chained here.
SYSTEM_ORG = UUID(int=0)
_ORG_MARK = b'"organization_id":{"_type_":"uuid_hex","_data_":"'
_META_MARK = b'"organizationId":"'
_ORGANIZATION_TOPIC = "domain.organization:Organization."
# Originator -> organization, per process: the older half is dropped when it grows past
# this. A process saves again few of the streams it reads (the calls in flight: 6,000 at
# 200 calls/s for 30 s); at 500,000 (and cleared whole), the dispatcher of a million-call
# launch kept two such maps (the calls it made, the contacts it read), 486 MB at its peak.
ORIGIN_CACHE_SIZE = 50_000


def event_digest(topic: str, state: bytes) -> bytes:
    return hashlib.sha256(topic.encode() + b"\n" + bytes(state)).digest()


def row_digest(org: UUID, seq: int, entries: bytes) -> bytes:
    return hashlib.sha256(FORMAT + org.bytes + seq.to_bytes(8, "big") + entries).digest()


def chain_hash(key: bytes, prev: bytes, org: UUID, seq: int, entries: bytes) -> bytes:
    return hmac.new(key, prev + row_digest(org, seq, entries), hashlib.sha256).digest()


def genesis_mac(key: bytes, table: str, started_after: int) -> bytes:
    return hmac.new(
        key,
        FORMAT + b"|genesis|" + table.encode() + b"|" + str(started_after).encode(),
        hashlib.sha256,
    ).digest()


def check_genesis(key: bytes, table: str, started_after: int, mac: bytes) -> None:
    """Refuse to chain with a key other than the one the chain started with: each process
    would otherwise chain under its own key (say, a data dir of its own per container)
    and every verify would fail. Loud at startup rather than a broken trail found later."""
    if not hmac.compare_digest(mac, genesis_mac(key, table, started_after)):
        raise ProgrammingError(
            f"the audit key differs from the one this store's audit chain ({table}) started with, or its "
            "genesis row was altered: give every process the same GOMOBILE_AUDIT_KEY (or the same data dir)"
        )


def unpack_entries(entries: bytes) -> list[tuple[UUID, int, int, bytes]]:
    return [(UUID(bytes=o), v, n, d) for o, v, n, d in ENTRY.iter_unpack(bytes(entries))]


def organization_in_state(originator_id: UUID, topic: str, state: bytes) -> UUID | None:
    """The organization an event names, found without decoding it (hot path): an
    Organization's own id, its ``organization_id`` field, or ``meta.organizationId``."""
    if topic.startswith(_ORGANIZATION_TOPIC):
        return originator_id
    state = bytes(state)
    i = state.find(_ORG_MARK)
    if i >= 0:
        try:
            return UUID(hex=state[i + len(_ORG_MARK) : i + len(_ORG_MARK) + 32].decode())
        except ValueError:
            pass
    i = state.find(_META_MARK)
    if i >= 0:
        try:
            return UUID(state[i + len(_META_MARK) : i + len(_META_MARK) + 36].decode())
        except ValueError:
            pass
    return None


def _blob(value: Any) -> bytes:
    """A stored state as bytes (SQL tampering can leave TEXT where a BLOB was)."""
    return value.encode() if isinstance(value, str) else bytes(value)


def _uuid(value: Any) -> UUID:
    return value if isinstance(value, UUID) else UUID(str(value))


def build_chain_rows(
    key: bytes,
    stored_events: Sequence[StoredEvent],
    notification_ids: Sequence[int],
    orgs: Sequence[UUID],
    heads: dict[UUID, tuple[int, bytes]],
) -> list[tuple[UUID, int, int, bytes, bytes]]:
    """One chain row per organization of this save: (org, seq, first id, entries, hash)."""
    by_org: dict[UUID, list[bytes]] = {}
    first: dict[UUID, int] = {}
    pack, sha256 = ENTRY.pack, hashlib.sha256
    for e, nid, org in zip(stored_events, notification_ids, orgs, strict=True):
        oid = e.originator_id
        entry = pack(
            oid.bytes if isinstance(oid, UUID) else UUID(str(oid)).bytes,
            e.originator_version, nid, sha256(e.topic.encode() + b"\n" + e.state).digest(),
        )  # fmt: skip
        found = by_org.get(org)
        if found is None:
            by_org[org] = [entry]
            first[org] = nid  # ids come in ascending order
        else:
            found.append(entry)
    rows = []
    for org, entries in by_org.items():
        seq, prev = heads.get(org, (0, ZERO))
        packed = b"".join(entries)
        rows.append((org, seq + 1, first[org], packed, chain_hash(key, prev, org, seq + 1, packed)))
    return rows


class OriginCache:
    """Originator id -> organization, shared by a recorder's threads."""

    def __init__(self) -> None:
        self._map: dict[UUID, UUID] = {}
        self._lock = threading.Lock()

    def get(self, originator_id: UUID) -> UUID | None:
        return self._map.get(originator_id)

    def __len__(self) -> int:
        return len(self._map)

    def update(self, pairs: Iterable[tuple[UUID, UUID]]) -> None:
        with self._lock:
            self._map.update(pairs)
            if len(self._map) > ORIGIN_CACHE_SIZE:  # (insertion order: the oldest first)
                self._map = dict(islice(self._map.items(), len(self._map) - ORIGIN_CACHE_SIZE // 2, None))


@dataclass
class _Plan:
    """What a save needs before its events are inserted: each event's organization (or
    None while unknown) and the streams to look up in the origins table."""

    orgs: list[UUID | None]
    lookup: list[UUID]
    new_origins: dict[UUID, UUID] = field(default_factory=dict)


class AuditChainMixin:
    """What both backends' recorders share: working out each event's organization."""

    audit_key: bytes = b""
    origins_cache: OriginCache
    # The last notification id before the chain began (its genesis), once create_table
    # has read it; 0: the chain began with the database.
    chain_started_after: int | None = None

    def select_events(self, originator_id: Any, **kwargs: Any) -> Any:
        events = super().select_events(originator_id, **kwargs)  # type: ignore[misc]
        self.learn_origins(events)
        return events

    def learn_origins(self, stored_events: Iterable[StoredEvent]) -> None:
        """Remember the organization of each stream whose first event was just read, as its
        creating save found it (the same rule as ``_plan``). A process's first save to a
        stream it did not create (a worker's claim of a call, an API process's first
        webhook of it) then names its organization instead of having the save look it up
        in the origins table: 0.73 lookups a call in the calls benchmark, none now.

        Only where the chain began with the database: every stream then has its origins
        row, written by the save that created it. Where it began later, a stream created
        before it has none until its first chained save writes it (``_resolve``), and that
        save must take the way that does."""
        if self.chain_started_after != 0:
            return
        cache = self.origins_cache
        learned = []
        for e in stored_events:
            if e.originator_version == 1:
                oid = _uuid(e.originator_id)
                if cache.get(oid) is None:
                    learned.append((oid, organization_in_state(oid, e.topic, e.state) or SYSTEM_ORG))
        if learned:
            cache.update(learned)

    def _plan(self, stored_events: Sequence[StoredEvent]) -> _Plan:
        if not self.audit_key:
            raise ProgrammingError(
                "audit recorder used without a key: build it with infrastructure.audit.recorder_topic()"
            )
        orgs: list[UUID | None] = []
        lookup: list[UUID] = []
        new: dict[UUID, UUID] = {}
        cache = self.origins_cache
        for e in stored_events:
            oid = _uuid(e.originator_id)
            org = cache.get(oid) or new.get(oid)
            if org is None and e.originator_version == 1:
                org = organization_in_state(oid, e.topic, e.state) or SYSTEM_ORG
                new[oid] = org
            if org is None:
                lookup.append(oid)
            orgs.append(org)
        return _Plan(orgs, lookup, new)

    def _resolve(
        self,
        plan: _Plan,
        stored_events: Sequence[StoredEvent],
        found: dict[UUID, UUID],
        created: Any,
    ) -> list[UUID]:
        """Fill the organizations the origins table did not know (streams older than the
        chain): from the event itself, else from the stream's Created event."""
        out: list[UUID] = []
        for e, org in zip(stored_events, plan.orgs, strict=True):
            if org is None:
                oid = _uuid(e.originator_id)
                org = found.get(oid) or plan.new_origins.get(oid)
                if org is None:
                    org = organization_in_state(oid, e.topic, e.state)
                    if org is None:
                        first = created(oid)
                        org = (
                            organization_in_state(oid, first[0], first[1]) if first else None
                        ) or SYSTEM_ORG
                    plan.new_origins[oid] = org
                found[oid] = org
            out.append(org)
        return out


class PostgresAuditRecorder(AuditChainMixin, PostgresApplicationRecorder):
    """eventsourcing's PostgreSQL application recorder, appending the chain rows of each
    save in its transaction.

    A save is two statements in one transaction. A function (created with the tables)
    takes the table lock as eventsourcing does, notifies, inserts the events and returns
    their notification ids and the heads of the chains they extend; the chain rows, whose
    HMAC is computed here (the key never goes to the database, where statement logging
    could show it), follow in one insert. A small save sends both as simple queries that
    begin and commit the transaction themselves, so the lock is held over one round trip.
    eventsourcing's way (a pipeline of six statements and a second round trip) cost about
    2 ms of client CPU a save, most of a webhook's cost. A save naming a stream whose
    organization is neither known here nor in the origins table (a stream older than the
    chain) goes the pipelined way below, which reads the stream's first event to find it."""

    def __init__(self, datastore: Any, *, events_table_name: str = "stored_events") -> None:
        super().__init__(datastore, events_table_name=events_table_name)
        if datastore.enable_db_functions:
            raise ProgrammingError("the audit chain needs POSTGRES_ENABLE_DB_FUNCTIONS off")
        from psycopg.sql import SQL, Identifier

        self.chain_table = f"{events_table_name}_chain"
        self.origins_table = f"{events_table_name}_origins"
        self.genesis_table = f"{events_table_name}_chain_genesis"
        for name in (self.chain_table, self.origins_table, self.genesis_table):
            self.check_identifier_length(name)
        schema = Identifier(datastore.schema)
        names = {
            "schema": schema,
            "chain": Identifier(self.chain_table),
            "origins": Identifier(self.origins_table),
            "genesis": Identifier(self.genesis_table),
            "events": Identifier(events_table_name),
            "first_idx": Identifier(f"{self.chain_table}_first_idx"),
            "org_idx": Identifier(f"{self.origins_table}_org_idx"),
        }
        self.sql_names = names
        self.sql_create_statements += [
            SQL(
                "CREATE TABLE IF NOT EXISTS {schema}.{chain} (org uuid NOT NULL, seq bigint NOT NULL, "
                "first_id bigint NOT NULL, entries bytea NOT NULL, chain_hash bytea NOT NULL, PRIMARY KEY (org, seq))"
            ).format(**names),
            SQL("CREATE INDEX IF NOT EXISTS {first_idx} ON {schema}.{chain} (first_id)").format(
                **names
            ),
            SQL(
                "CREATE TABLE IF NOT EXISTS {schema}.{origins} (originator_id uuid PRIMARY KEY, org uuid NOT NULL)"
            ).format(**names),
            SQL("CREATE INDEX IF NOT EXISTS {org_idx} ON {schema}.{origins} (org)").format(**names),
            SQL(
                "CREATE TABLE IF NOT EXISTS {schema}.{genesis} (started_after bigint NOT NULL, "
                "started_at timestamptz NOT NULL DEFAULT now(), mac bytea NOT NULL)"
            ).format(**names),
        ]
        self.sql_heads = SQL(
            "SELECT h.org, h.seq, h.chain_hash FROM unnest(%b::uuid[]) AS o(org) CROSS JOIN LATERAL "
            "(SELECT org, seq, chain_hash FROM {schema}.{chain} c WHERE c.org = o.org ORDER BY seq DESC LIMIT 1) h"
        ).format(**names)
        self.sql_origins = SQL(
            "SELECT originator_id, org FROM {schema}.{origins} WHERE originator_id = ANY(%b::uuid[])"
        ).format(**names)
        self.sql_created = SQL(
            "SELECT topic, state FROM {schema}.{events} WHERE originator_id = %s AND originator_version = 1"
        ).format(**names)
        # One statement a save: the chain rows, and the streams this save starts.
        self.sql_insert_chain = SQL(
            "WITH o AS (INSERT INTO {schema}.{origins} (originator_id, org) "
            "SELECT * FROM unnest(%b::uuid[], %b::uuid[]) ON CONFLICT DO NOTHING) "
            "INSERT INTO {schema}.{chain} (org, seq, first_id, entries, chain_hash) "
            "SELECT * FROM unnest(%b::uuid[], %b::bigint[], %b::bigint[], %b::bytea[], %b::bytea[])"
        ).format(**names)
        # The one chain row of a save that starts no stream (most of the call traffic),
        # each value on its own (quoted or dumped in C; arrays are dumped in Python).
        self.sql_insert_chain_row = SQL(
            "INSERT INTO {schema}.{chain} (org, seq, first_id, entries, chain_hash) VALUES (%b, %b, %b, %b, %b)"
        ).format(**names)
        # The events of a save as one array per column, sent in binary. eventsourcing
        # sends one array of a composite type, which psycopg can only write as text: every
        # state hex-escaped in Python, 68 us an event against 4 us (bench/contacts_import.py).
        if datastore.originator_id_type != "uuid":
            raise ProgrammingError("the audit recorder stores originator ids as uuid")
        self.insert_events_statement = SQL(
            "INSERT INTO {schema}.{events} (originator_id, originator_version, topic, state) "
            "SELECT * FROM unnest(%b::uuid[], %b::bigint[], %b::text[], %b::bytea[]) RETURNING notification_id"
        ).format(**names)
        self.origins_cache = OriginCache()
        self._local = threading.local()
        self.save_function = f"{events_table_name}_save"
        self.check_identifier_length(self.save_function)
        fn = {**names, "fn": Identifier(self.save_function), "channel": Identifier(self.channel_name)}
        self.sql_create_statements.append(
            SQL(
                "CREATE OR REPLACE FUNCTION {schema}.{fn}(p_ids uuid[], p_versions bigint[], p_topics text[], "
                "p_states bytea[], p_orgs uuid[], OUT nids bigint[], OUT orgs uuid[], OUT head_orgs uuid[], "
                "OUT head_seqs bigint[], OUT head_hashes bytea[]) LANGUAGE plpgsql AS $BODY$ "
                "BEGIN "
                "orgs := p_orgs; "
                "IF array_position(orgs, NULL) IS NOT NULL THEN "
                # One primary-key lookup a stream of unknown organization. As a join, the
                # plan a pooled connection keeps (made while the table was small, never
                # made again) was a hash join over the whole table: 39 ms a save at
                # 300,000 streams (tests/integration/test_audit_origins_lookup.py).
                "  SELECT array_agg(COALESCE(x.org, (SELECT o.org FROM {schema}.{origins} o WHERE o.originator_id = x.oid)) "
                "    ORDER BY x.n) INTO orgs FROM unnest(p_ids, p_orgs) WITH ORDINALITY AS x(oid, org, n); "
                "  IF array_position(orgs, NULL) IS NOT NULL THEN RETURN; END IF; "  # nids NULL: the caller resolves them
                "END IF; "
                "SET LOCAL lock_timeout = '{lock_timeout}s'; "
                "LOCK TABLE {schema}.{events} IN EXCLUSIVE MODE; "
                "NOTIFY {channel}; "
                "WITH ins AS (INSERT INTO {schema}.{events} (originator_id, originator_version, topic, state) "
                "  SELECT * FROM unnest(p_ids, p_versions, p_topics, p_states) RETURNING notification_id) "
                "SELECT array_agg(notification_id ORDER BY notification_id) INTO nids FROM ins; "
                "SELECT array_agg(h.org), array_agg(h.seq), array_agg(h.chain_hash) INTO head_orgs, head_seqs, head_hashes "
                "  FROM (SELECT DISTINCT unnest(orgs) AS org) o CROSS JOIN LATERAL "
                "  (SELECT c.org, c.seq, c.chain_hash FROM {schema}.{chain} c WHERE c.org = o.org ORDER BY c.seq DESC LIMIT 1) h; "
                "END $BODY$"
            ).format(**fn, lock_timeout=SQL(str(int(datastore.lock_timeout))))
        )
        self.sql_save = SQL(
            "SELECT nids, orgs, head_orgs, head_seqs, head_hashes FROM {schema}.{fn}(%b::uuid[], %b::bigint[], "
            "%b::text[], %b::bytea[], %s::uuid[])"
        ).format(**fn)
        # A save of a few events (all of the call traffic) sends each value on its own,
        # which psycopg quotes in C, rather than arrays, which it dumps in Python: one
        # query text per number of events, rendered once (``_small_save``).
        self._fn_names = fn
        self._rendered: dict[int, bytes] = {}
        self._group: GroupCommit[StoredEvent] = GroupCommit(
            self._append, max_batch=SCALAR_SAVE, key=lambda e: e.originator_id
        )

    def create_table(self) -> None:
        super().create_table()
        from psycopg.sql import SQL

        n = self.sql_names
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(SQL("SELECT started_after, mac FROM {schema}.{genesis}").format(**n))
            found = curs.fetchone()
            if found is not None:
                check_genesis(
                    self.audit_key,
                    self.events_table_name,
                    int(found["started_after"]),
                    bytes(found["mac"]),
                )
                self.chain_started_after = int(found["started_after"])
            else:
                # Under the writers' lock: every event after this id is chained.
                self._lock_table(curs)
                curs.execute(
                    SQL(
                        "SELECT COALESCE(MAX(notification_id), 0) AS m FROM {schema}.{events}"
                    ).format(**n)
                )
                row = curs.fetchone()
                start = int(row["m"]) if row else 0
                curs.execute(
                    SQL(
                        "INSERT INTO {schema}.{genesis} (started_after, mac) VALUES (%s, %s)"
                    ).format(**n),
                    (start, genesis_mac(self.audit_key, self.events_table_name, start)),
                )
                self.chain_started_after = start

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        if stored_events and not any(v is not None for v in kwargs.values()):  # (tracking=None from put)
            # Shared with the saves other threads make meanwhile (infrastructure/group_commit.py).
            ids = self._group.submit(stored_events)
            if ids is not None:
                return ids
        return self._insert_pipelined(stored_events, **kwargs)

    def _append(self, stored_events: Sequence[StoredEvent]) -> list[int] | None:
        """The save (see the class). None: an organization is unknown."""
        plan = self._plan(stored_events)
        streams = [_uuid(e.originator_id) for e in stored_events]
        columns = (
            streams,
            [e.originator_version for e in stored_events],
            [e.topic for e in stored_events],
            [e.state for e in stored_events],
            plan.orgs,
        )
        with self.datastore.get_connection() as conn:
            if len(stored_events) > SCALAR_SAVE:  # a large save (a batch of queued calls): parameters in binary
                with conn.transaction():
                    row = conn.execute(self.sql_save, columns, prepare=True).fetchone()
                    assert row is not None
                    if row["nids"] is None:
                        return None
                    ids, orgs, insert, values = self._chain_insert(stored_events, plan, row)
                    conn.execute(insert, values, prepare=True)
            else:
                # Two round trips, the transaction begun and committed by the statements
                # themselves (simple queries, each value a literal): "BEGIN; SELECT the
                # function", then "INSERT the chain rows; COMMIT". The table lock is held
                # over one round trip, not three (BEGIN, function, insert, COMMIT).
                params = [v for column in columns for v in column]
                try:
                    cursor = conn.execute(self._literal(conn, self._small_save(conn, len(stored_events)), params))
                    cursor.nextset()
                    row = cursor.fetchone()
                    assert row is not None
                    if row["nids"] is None:
                        conn.execute(b"ROLLBACK")
                        return None
                    ids, orgs, insert, values = self._chain_insert(stored_events, plan, row)
                    conn.execute(self._literal(conn, self._render(conn, insert) + SQL_COMMIT, values))
                except BaseException:
                    if conn.info.transaction_status != TransactionStatus.IDLE:
                        conn.execute(b"ROLLBACK")
                    raise
        learned = [(oid, org) for oid, known, org in zip(streams, plan.orgs, orgs, strict=True) if known is None]
        self.origins_cache.update([*plan.new_origins.items(), *learned])  # committed: safe to remember
        return ids

    def _chain_insert(self, stored_events: Sequence[StoredEvent], plan: _Plan, row: Any) -> tuple[list[int], list[UUID], Any, Any]:
        """The ids, organizations, and the chain rows' insert (statement, values) of a save
        from the function's answer. The HMAC is computed here: the key never leaves the
        process."""
        ids, orgs = list(row["nids"]), list(row["orgs"])
        heads = {
            org: (seq, bytes(h))
            for org, seq, h in zip(row["head_orgs"] or (), row["head_seqs"] or (), row["head_hashes"] or (), strict=True)
        }
        chain = build_chain_rows(self.audit_key, stored_events, ids, orgs, heads)
        if len(chain) == 1 and not plan.new_origins:
            return ids, orgs, self.sql_insert_chain_row, chain[0]
        values = (list(plan.new_origins), list(plan.new_origins.values()), *(list(c) for c in zip(*chain, strict=True)))
        return ids, orgs, self.sql_insert_chain, values

    @staticmethod
    def _literal(conn: Any, query: bytes, params: Sequence[Any]) -> bytes:
        """``query`` with its ``%b``/``%s`` placeholders replaced by ``params`` as SQL
        literals (a simple query may hold several statements; a parameterised one may not)."""
        from psycopg.adapt import Transformer

        tx = Transformer(conn)
        parts = query.replace(b"%b", b"%s").split(b"%s")
        assert len(parts) == len(params) + 1, (len(parts), len(params))
        out = [parts[0]]
        for value, part in zip(params, parts[1:], strict=True):
            out.append(tx.as_literal(value))
            out.append(part)
        return b"".join(out)

    def _render(self, conn: Any, statement: Any) -> bytes:
        """``statement``'s text, rendered once (its identifiers quoted)."""
        text = self._rendered.get(id(statement))  # (Composed is unhashable; these live as long as self)
        if text is None:
            text = self._rendered[id(statement)] = statement.as_bytes(conn)
        return text

    def _small_save(self, conn: Any, events: int) -> bytes:
        """``BEGIN; SELECT`` the save function for ``events`` events, a placeholder a value."""
        text = self._rendered.get(-events)  # (negative: never an id)
        if text is None:
            from psycopg.sql import SQL

            arrays = ", ".join(f"ARRAY[{', '.join([f'%b::{kind}'] * events)}]::{kind}[]"
                               for kind in ("uuid", "bigint", "text", "bytea", "uuid"))  # fmt: skip
            statement = SQL(
                "SELECT nids, orgs, head_orgs, head_seqs, head_hashes FROM {schema}.{fn}(" + arrays + ")"
            ).format(**self._fn_names)
            text = self._rendered[-events] = SQL_BEGIN + statement.as_bytes(conn)
        return text

    def _insert_pipelined(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        self._local.plan = None
        ids = super().insert_events(stored_events, **kwargs)
        plan = self._local.plan
        self._local.plan = None
        if plan is not None and plan.new_origins:
            self.origins_cache.update(plan.new_origins.items())  # committed: safe to remember
        return ids

    def _insert_stored_events(
        self, curs: Any, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> None:
        self._lock_table(curs)
        self._notify_channel(curs)
        plan = self._plan(stored_events)
        conn = curs.connection
        # Pipelined after the lock and before the insert: answered with the insert's sync.
        heads_cursor = conn.cursor()
        heads_cursor.execute(
            self.sql_heads, ([o for o in {*plan.orgs} if o is not None],), prepare=True
        )
        origins_cursor = None
        if plan.lookup:
            origins_cursor = conn.cursor()
            origins_cursor.execute(self.sql_origins, (plan.lookup,), prepare=True)
        self._local.pending = (plan, heads_cursor, origins_cursor)
        curs.execute(
            self.insert_events_statement,
            (
                [_uuid(e.originator_id) for e in stored_events],
                [e.originator_version for e in stored_events],
                [e.topic for e in stored_events],
                [e.state for e in stored_events],
            ),
            prepare=True,
        )

    def _fetch_ids_after_insert_events(
        self, curs: Any, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        ids = super()._fetch_ids_after_insert_events(curs, stored_events, **kwargs)
        assert ids is not None
        plan, heads_cursor, origins_cursor = self._local.pending
        self._local.pending = None
        heads = {r["org"]: (r["seq"], bytes(r["chain_hash"])) for r in heads_cursor.fetchall()}
        heads_cursor.close()
        found: dict[UUID, UUID] = {}
        if origins_cursor is not None:
            found = {r["originator_id"]: r["org"] for r in origins_cursor.fetchall()}
            origins_cursor.close()

        def created(oid: UUID) -> tuple[str, bytes] | None:
            with curs.connection.cursor() as c:
                c.execute(self.sql_created, (oid,))
                r = c.fetchone()
                return (r["topic"], bytes(r["state"])) if r else None

        orgs = self._resolve(plan, stored_events, found, created)
        missing = [
            o
            for o in {*orgs}
            if o not in heads and o not in {*(x for x in plan.orgs if x is not None)}
        ]
        if missing:  # organizations learned only now (streams older than the chain): one more query
            with curs.connection.cursor() as c:
                c.execute(self.sql_heads, (missing,))
                heads.update({r["org"]: (r["seq"], bytes(r["chain_hash"])) for r in c.fetchall()})
        rows = build_chain_rows(self.audit_key, stored_events, ids, orgs, heads)
        curs.execute(
            self.sql_insert_chain,
            (
                list(plan.new_origins),
                list(plan.new_origins.values()),
                *(list(column) for column in zip(*rows, strict=True)),
            ),
            prepare=True,
        )
        self._local.plan = plan
        return ids

    # -- reading, for verify and exports --------------------------------------------------

    def audit_reader(self) -> ChainReader:
        return PostgresChainReader(self)


class SQLiteAuditRecorder(AuditChainMixin, SQLiteApplicationRecorder):
    """eventsourcing's SQLite application recorder, appending the chain rows of each save
    in its transaction (SQLite's write lock serialises writers)."""

    chain_table = "audit_chain"
    origins_table = "audit_origins"
    genesis_table = "audit_chain_genesis"

    def __init__(self, datastore: Any, events_table_name: str = "stored_events") -> None:
        super().__init__(datastore, events_table_name)
        self.origins_cache = OriginCache()
        self._local = threading.local()

    def construct_create_table_statements(self) -> list[str]:
        return [
            *super().construct_create_table_statements(),
            (
                f"CREATE TABLE IF NOT EXISTS {self.chain_table} (org TEXT NOT NULL, seq INTEGER NOT NULL, "
                "first_id INTEGER NOT NULL, entries BLOB NOT NULL, chain_hash BLOB NOT NULL, PRIMARY KEY (org, seq))"
            ),
            f"CREATE INDEX IF NOT EXISTS {self.chain_table}_first_idx ON {self.chain_table} (first_id)",
            f"CREATE TABLE IF NOT EXISTS {self.origins_table} (originator_id TEXT PRIMARY KEY, org TEXT NOT NULL)",
            f"CREATE INDEX IF NOT EXISTS {self.origins_table}_org_idx ON {self.origins_table} (org)",
            (
                f"CREATE TABLE IF NOT EXISTS {self.genesis_table} (started_after INTEGER NOT NULL, started_at TEXT NOT NULL "
                "DEFAULT CURRENT_TIMESTAMP, mac BLOB NOT NULL)"
            ),
        ]

    def create_table(self) -> None:
        with self.datastore.transaction(commit=True) as c:
            self._create_table(c)
            c.execute(f"SELECT started_after, mac FROM {self.genesis_table}")
            found = c.fetchone()
            if found is not None:
                check_genesis(
                    self.audit_key, self.events_table_name, int(found[0]), bytes(found[1])
                )
                self.chain_started_after = int(found[0])
            else:
                c.execute(f"SELECT COALESCE(MAX(rowid), 0) FROM {self.events_table_name}")
                start = int(c.fetchone()[0])
                c.execute(
                    f"INSERT INTO {self.genesis_table} (started_after, mac) VALUES (?, ?)",
                    (start, genesis_mac(self.audit_key, self.events_table_name, start)),
                )
                self.chain_started_after = start

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        self._local.plan = None
        ids = super().insert_events(stored_events, **kwargs)
        plan = self._local.plan
        self._local.plan = None
        if plan is not None and plan.new_origins:
            self.origins_cache.update(plan.new_origins.items())
        return ids

    def _insert_events(
        self, c: Any, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        ids = super()._insert_events(c, stored_events, **kwargs)
        if not stored_events:
            return ids
        assert ids is not None
        plan = self._plan(stored_events)
        found: dict[UUID, UUID] = {}
        if plan.lookup:
            marks = ",".join("?" * len(plan.lookup))
            c.execute(
                f"SELECT originator_id, org FROM {self.origins_table} WHERE originator_id IN ({marks})",
                [o.hex for o in plan.lookup],
            )
            found = {UUID(r[0]): UUID(r[1]) for r in c.fetchall()}

        def created(oid: UUID) -> tuple[str, bytes] | None:
            c.execute(
                f"SELECT topic, state FROM {self.events_table_name} WHERE originator_id = ? AND originator_version = 1",
                (oid.hex,),
            )
            r = c.fetchone()
            return (r[0], bytes(r[1])) if r else None

        orgs = self._resolve(plan, stored_events, found, created)
        heads: dict[UUID, tuple[int, bytes]] = {}
        for org in {*orgs}:
            c.execute(
                f"SELECT seq, chain_hash FROM {self.chain_table} WHERE org = ? ORDER BY seq DESC LIMIT 1",
                (org.hex,),
            )
            r = c.fetchone()
            if r:
                heads[org] = (int(r[0]), bytes(r[1]))
        rows = build_chain_rows(self.audit_key, stored_events, ids, orgs, heads)
        c.executemany(
            f"INSERT INTO {self.chain_table} (org, seq, first_id, entries, chain_hash) VALUES (?, ?, ?, ?, ?)",
            [(org.hex, seq, first, entries, h) for org, seq, first, entries, h in rows],
        )
        if plan.new_origins:
            c.executemany(
                f"INSERT OR IGNORE INTO {self.origins_table} (originator_id, org) VALUES (?, ?)",
                [(o.hex, g.hex) for o, g in plan.new_origins.items()],
            )
        self._local.plan = plan
        return ids

    def audit_reader(self) -> ChainReader:
        return SQLiteChainReader(self)


# -- wiring: the factory builds the recorder from a topic, so the key is bound to a class --

_bound: dict[tuple[str, bytes], str] = {}
_bound_lock = threading.Lock()


def recorder_topic(postgres: bool, key: bytes) -> str:
    """The APPLICATION_RECORDER_TOPIC of an audit recorder holding ``key``.

    eventsourcing's factories construct the recorder from a topic with the datastore
    only, so the key is bound to a subclass registered under a topic of its own."""
    base = PostgresAuditRecorder if postgres else SQLiteAuditRecorder
    fingerprint = hashlib.sha256(b"topic|" + key).hexdigest()[:16]
    with _bound_lock:
        topic = _bound.get((base.__name__, key))
        if topic is None:
            topic = f"{__name__}:{base.__name__}.keyed_{fingerprint}"
            cls = type(
                base.__name__,
                (base,),
                {"audit_key": key, "__module__": __name__, "__qualname__": base.__qualname__},
            )
            register_topic(topic, cls)
            _bound[(base.__name__, key)] = topic
    return topic


def audit_recorder_of(app: Any) -> PostgresAuditRecorder | SQLiteAuditRecorder | None:
    recorder = getattr(app, "recorder", None)
    return recorder if isinstance(recorder, (PostgresAuditRecorder, SQLiteAuditRecorder)) else None


# -- reading ----------------------------------------------------------------------------


@dataclass
class StoredRow:
    notification_id: int
    originator_id: UUID
    version: int
    topic: str
    state: bytes


@dataclass
class ChainRow:
    org: UUID
    seq: int
    first_id: int
    entries: bytes
    chain_hash: bytes


class ChainReader:
    """Pages through one application's events and chain rows (keyset pagination, so a
    million events stream in bounded memory and no long transaction is held)."""

    PAGE = 5000

    def __init__(self, recorder: Any) -> None:
        self.recorder = recorder

    def genesis(self) -> tuple[int, bytes] | None: ...
    def max_notification_id(self) -> int:
        return int(self.recorder.max_notification_id() or 0)

    def events(self, upto: int, org: UUID | None) -> Iterator[StoredRow]: ...
    def chain(self, upto: int, org: UUID | None) -> Iterator[ChainRow]: ...
    def origins(self, originator_ids: Sequence[UUID]) -> dict[UUID, UUID]: ...
    def stream_events(self, originator_id: UUID) -> list[StoredRow]: ...
    def chain_rows_covering(self, org: UUID, notification_ids: Sequence[int]) -> list[ChainRow]: ...


class PostgresChainReader(ChainReader):
    def _rows(self, sql: Any, params: Sequence[Any]) -> list[Any]:
        with self.recorder.datastore.get_connection() as conn, conn.cursor() as c:
            c.execute(sql, params)
            return list(c.fetchall())

    def genesis(self) -> tuple[int, bytes] | None:
        from psycopg.sql import SQL

        rows = self._rows(
            SQL("SELECT started_after, mac FROM {schema}.{genesis}").format(
                **self.recorder.sql_names
            ),
            (),
        )
        return (int(rows[0]["started_after"]), bytes(rows[0]["mac"])) if rows else None

    def events(self, upto: int, org: UUID | None) -> Iterator[StoredRow]:
        from psycopg.sql import SQL

        n = self.recorder.sql_names
        where = SQL("")
        if org is not None:
            # The organization's streams, and streams of no known organization (forgeries).
            where = SQL(
                " AND NOT EXISTS (SELECT 1 FROM {schema}.{origins} o WHERE o.originator_id = e.originator_id AND o.org <> %s)"
            ).format(**n)
        sql = (
            SQL(
                "SELECT e.notification_id, e.originator_id, e.originator_version, e.topic, e.state FROM {schema}.{events} e "
                "WHERE e.notification_id > %s AND e.notification_id <= %s"
            ).format(**n)
            + where
            + SQL(" ORDER BY e.notification_id LIMIT %s")
        )
        after = 0
        while True:
            params: list[Any] = [after, upto] + ([org] if org is not None else []) + [self.PAGE]
            rows = self._rows(sql, params)
            for r in rows:
                yield StoredRow(
                    r["notification_id"],
                    r["originator_id"],
                    r["originator_version"],
                    r["topic"],
                    bytes(r["state"]),
                )
            if len(rows) < self.PAGE:
                return
            after = rows[-1]["notification_id"]

    def chain(self, upto: int, org: UUID | None) -> Iterator[ChainRow]:
        from psycopg.sql import SQL

        n = self.recorder.sql_names
        where = SQL(" AND org = %s") if org is not None else SQL("")
        sql = (
            SQL(
                "SELECT org, seq, first_id, entries, chain_hash FROM {schema}.{chain} "
                "WHERE (first_id, org, seq) > (%s, %s, %s) AND first_id <= %s"
            ).format(**n)
            + where
            + SQL(" ORDER BY first_id, org, seq LIMIT %s")
        )
        cursor: tuple[int, UUID, int] = (-1, SYSTEM_ORG, 0)
        while True:
            params: list[Any] = [*cursor, upto] + ([org] if org is not None else []) + [self.PAGE]
            rows = self._rows(sql, params)
            for r in rows:
                yield ChainRow(
                    r["org"], r["seq"], r["first_id"], bytes(r["entries"]), bytes(r["chain_hash"])
                )
            if len(rows) < self.PAGE:
                return
            last = rows[-1]
            cursor = (last["first_id"], last["org"], last["seq"])

    def origins(self, originator_ids: Sequence[UUID]) -> dict[UUID, UUID]:
        rows = self._rows(self.recorder.sql_origins, (list(originator_ids),))
        return {r["originator_id"]: r["org"] for r in rows}

    def stream_events(self, originator_id: UUID) -> list[StoredRow]:
        from psycopg.sql import SQL

        sql = SQL(
            "SELECT notification_id, originator_id, originator_version, topic, state FROM {schema}.{events} "
            "WHERE originator_id = %s ORDER BY originator_version"
        ).format(**self.recorder.sql_names)
        return [
            StoredRow(
                r["notification_id"],
                r["originator_id"],
                r["originator_version"],
                r["topic"],
                bytes(r["state"]),
            )
            for r in self._rows(sql, (originator_id,))
        ]

    def chain_rows_covering(self, org: UUID, notification_ids: Sequence[int]) -> list[ChainRow]:
        from psycopg.sql import SQL

        if not notification_ids:
            return []
        # A row's entries are one save's: its first id is at most, and close below, each id.
        sql = SQL(
            "SELECT DISTINCT ON (seq) org, seq, first_id, entries, chain_hash FROM unnest(%s::bigint[]) AS n(id) "
            "CROSS JOIN LATERAL (SELECT * FROM {schema}.{chain} c WHERE c.org = %s AND c.first_id <= n.id "
            "ORDER BY c.first_id DESC LIMIT 1) x ORDER BY seq"
        ).format(**self.recorder.sql_names)
        rows = self._rows(sql, (list(notification_ids), org))
        return [
            ChainRow(r["org"], r["seq"], r["first_id"], bytes(r["entries"]), bytes(r["chain_hash"]))
            for r in rows
        ]


class SQLiteChainReader(ChainReader):
    def _rows(self, sql: str, params: Sequence[Any]) -> list[Any]:
        with self.recorder.datastore.transaction(commit=False) as c:
            c.execute(sql, tuple(params))
            return list(c.fetchall())

    def genesis(self) -> tuple[int, bytes] | None:
        rows = self._rows(f"SELECT started_after, mac FROM {self.recorder.genesis_table}", ())
        return (int(rows[0][0]), bytes(rows[0][1])) if rows else None

    def events(self, upto: int, org: UUID | None) -> Iterator[StoredRow]:
        table = self.recorder.events_table_name
        where = ""
        if org is not None:
            where = (
                f" AND NOT EXISTS (SELECT 1 FROM {self.recorder.origins_table} o "
                "WHERE o.originator_id = e.originator_id AND o.org <> ?)"
            )
        sql = (
            f"SELECT e.rowid, e.originator_id, e.originator_version, e.topic, e.state FROM {table} e "
            f"WHERE e.rowid > ? AND e.rowid <= ?{where} ORDER BY e.rowid LIMIT ?"
        )
        after = 0
        while True:
            rows = self._rows(
                sql, [after, upto] + ([org.hex] if org is not None else []) + [self.PAGE]
            )
            for r in rows:
                yield StoredRow(int(r[0]), UUID(r[1]), int(r[2]), r[3], _blob(r[4]))
            if len(rows) < self.PAGE:
                return
            after = int(rows[-1][0])

    def chain(self, upto: int, org: UUID | None) -> Iterator[ChainRow]:
        where = " AND org = ?" if org is not None else ""
        sql = (
            f"SELECT org, seq, first_id, entries, chain_hash FROM {self.recorder.chain_table} "
            f"WHERE (first_id, org, seq) > (?, ?, ?) AND first_id <= ?{where} ORDER BY first_id, org, seq LIMIT ?"
        )
        cursor: tuple[int, str, int] = (-1, "", 0)
        while True:
            rows = self._rows(
                sql, [*cursor, upto] + ([org.hex] if org is not None else []) + [self.PAGE]
            )
            for r in rows:
                yield ChainRow(UUID(r[0]), int(r[1]), int(r[2]), bytes(r[3]), _blob(r[4]))
            if len(rows) < self.PAGE:
                return
            cursor = (int(rows[-1][2]), rows[-1][0], int(rows[-1][1]))

    def origins(self, originator_ids: Sequence[UUID]) -> dict[UUID, UUID]:
        out: dict[UUID, UUID] = {}
        ids = list(originator_ids)
        for i in range(0, len(ids), 500):
            part = ids[i : i + 500]
            rows = self._rows(
                f"SELECT originator_id, org FROM {self.recorder.origins_table} WHERE originator_id IN ({','.join('?' * len(part))})",
                [o.hex for o in part],
            )
            out.update({UUID(r[0]): UUID(r[1]) for r in rows})
        return out

    def stream_events(self, originator_id: UUID) -> list[StoredRow]:
        rows = self._rows(
            f"SELECT rowid, originator_id, originator_version, topic, state FROM {self.recorder.events_table_name} "
            "WHERE originator_id = ? ORDER BY originator_version",
            (originator_id.hex,),
        )
        return [StoredRow(int(r[0]), UUID(r[1]), int(r[2]), r[3], _blob(r[4])) for r in rows]

    def chain_rows_covering(self, org: UUID, notification_ids: Sequence[int]) -> list[ChainRow]:
        seen: dict[int, ChainRow] = {}
        for nid in notification_ids:
            rows = self._rows(
                f"SELECT org, seq, first_id, entries, chain_hash FROM {self.recorder.chain_table} "
                "WHERE org = ? AND first_id <= ? ORDER BY first_id DESC LIMIT 1",
                (org.hex, nid),
            )
            for r in rows:
                seen[int(r[1])] = ChainRow(
                    UUID(r[0]), int(r[1]), int(r[2]), bytes(r[3]), _blob(r[4])
                )
        return [seen[s] for s in sorted(seen)]


# -- verification -----------------------------------------------------------------------


@dataclass
class Problem:
    """One thing wrong, named: ``kind`` is altered, inserted, deleted, reordered or chain."""

    application: str
    kind: str
    detail: str
    originator_id: UUID | None = None
    version: int | None = None
    notification_id: int | None = None
    organization_id: UUID | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "application": self.application,
            "problem": self.kind,
            "originatorId": str(self.originator_id) if self.originator_id else None,
            "version": self.version,
            "notificationId": self.notification_id,
            "organizationId": str(self.organization_id) if self.organization_id else None,
            "detail": self.detail,
        }

    def __str__(self) -> str:
        where = f" {self.originator_id} v{self.version}" if self.originator_id else ""
        at = f" (notification {self.notification_id})" if self.notification_id is not None else ""
        return f"{self.kind.upper()} {self.application}{where}{at}: {self.detail}"


@dataclass
class Report:
    application: str
    events_checked: int = 0
    chain_rows: int = 0
    started_after: int = 0
    not_covered: int = 0
    problems: list[Problem] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "application": self.application,
            "eventsChecked": self.events_checked,
            "chainRows": self.chain_rows,
            "chainStartedAfterNotificationId": self.started_after,
            "eventsBeforeChain": self.not_covered,
            "problems": [p.as_dict() for p in self.problems],
        }


def verify(
    application: str, recorder: Any, key: bytes, org: UUID | None = None, max_problems: int = 10_000
) -> Report:
    """Recompute one application's chains (all organizations, or ``org``) and compare them
    with its stored events, streaming both in notification order."""
    reader: ChainReader = recorder.audit_reader()
    report = Report(application)
    problems = report.problems

    def problem(kind: str, detail: str, **kw: Any) -> None:
        if len(problems) < max_problems:
            problems.append(Problem(application, kind, detail, **kw))

    genesis = reader.genesis()
    if genesis is None:
        problem(
            "chain", "no chain genesis row: the chain was never enabled or its start was deleted"
        )
        start = 0
    else:
        start = genesis[0]
        if not hmac.compare_digest(genesis[1], genesis_mac(key, recorder.events_table_name, start)):
            problem(
                "chain",
                f"the chain's genesis row (started after notification {start}) was altered, or the key differs",
            )
    report.started_after = start
    upto = reader.max_notification_id()

    heads: dict[UUID, tuple[int, bytes]] = {}
    # Chain entries not yet matched, by notification id (a heap: rows of one save interleave).
    heap: list[tuple[int, UUID, int, bytes, UUID]] = []
    lost_entries: dict[tuple[UUID, int], tuple[int, bytes, UUID]] = {}
    stray_events: dict[tuple[UUID, int], tuple[int, bytes]] = {}
    chain_iter = reader.chain(upto, org)
    next_row: ChainRow | None = next(chain_iter, None)

    def take_row(row: ChainRow) -> None:
        report.chain_rows += 1
        seq, prev = heads.get(row.org, (0, ZERO))
        if row.seq != seq + 1:
            problem(
                "chain",
                f"chain rows {seq + 1}..{row.seq - 1} of organization {row.org} are missing (deleted)",
                organization_id=row.org,
            )
        if len(row.entries) % ENTRY.size:
            problem(
                "chain",
                f"chain row {row.seq} of organization {row.org} is malformed",
                organization_id=row.org,
            )
            return
        if not hmac.compare_digest(
            row.chain_hash, chain_hash(key, prev, row.org, row.seq, row.entries)
        ):
            problem(
                "chain",
                f"chain row {row.seq} of organization {row.org} does not hash to its stored value (altered)",
                organization_id=row.org,
            )
        heads[row.org] = (row.seq, row.chain_hash)
        for oid, version, nid, digest in unpack_entries(row.entries):
            heapq.heappush(heap, (nid, oid, version, digest, row.org))

    for ev in reader.events(upto, org):
        while next_row is not None and next_row.first_id <= ev.notification_id:
            take_row(next_row)
            next_row = next(chain_iter, None)
        matched = False
        while heap and heap[0][0] <= ev.notification_id:
            nid, oid, version, digest, row_org = heapq.heappop(heap)
            if (
                nid == ev.notification_id
                and not matched
                and (oid, version) == (ev.originator_id, ev.version)
            ):
                matched = True
                if not hmac.compare_digest(digest, event_digest(ev.topic, ev.state)):
                    problem("altered", "stored event differs from its chain entry (hash mismatch)",
                            originator_id=oid, version=version, notification_id=nid, organization_id=row_org)  # fmt: skip
            else:
                lost_entries[(oid, version)] = (nid, digest, row_org)
        report.events_checked += 1
        if not matched:
            if ev.notification_id <= start:
                report.not_covered += 1
            else:
                stray_events[(ev.originator_id, ev.version)] = (
                    ev.notification_id,
                    event_digest(ev.topic, ev.state),
                )
    while next_row is not None:
        take_row(next_row)
        next_row = next(chain_iter, None)
    while heap:
        nid, oid, version, digest, row_org = heapq.heappop(heap)
        lost_entries[(oid, version)] = (nid, digest, row_org)

    # An event chained under one notification id and stored under another: reordered.
    for k in [k for k in stray_events if k in lost_entries]:
        nid, digest = stray_events.pop(k)
        chained_nid, chained_digest, row_org = lost_entries.pop(k)
        altered = (
            ""
            if hmac.compare_digest(digest, chained_digest)
            else "; its content differs too (hash mismatch)"
        )
        problem("reordered", f"stored as notification {nid}, chained as notification {chained_nid}{altered}",
                originator_id=k[0], version=k[1], notification_id=nid, organization_id=row_org)  # fmt: skip
    orgs_of = reader.origins(list({k[0] for k in stray_events})) if stray_events else {}
    for (oid, version), (nid, _) in sorted(stray_events.items(), key=lambda kv: kv[1][0]):
        problem("inserted", "stored event has no chain entry (written outside the application)",
                originator_id=oid, version=version, notification_id=nid, organization_id=orgs_of.get(oid))  # fmt: skip
    for (oid, version), (nid, _, row_org) in sorted(lost_entries.items(), key=lambda kv: kv[1][0]):
        problem("deleted", "chained event is no longer stored", originator_id=oid, version=version,
                notification_id=nid, organization_id=row_org)  # fmt: skip
    return report


# -- the service the CLI and the API use ----------------------------------------------------


class AuditTrail:
    """Verification and signed exports over a Container's applications."""

    def __init__(self, container: Any) -> None:
        self.container = container
        self.settings = container.settings

    def applications(self) -> list[tuple[str, Any]]:
        """The applications whose recorder keeps a chain, by name (campaigns, calls ...)."""
        from eventsourcing.application import Application

        found = []
        for value in vars(self.container).values():
            if isinstance(value, Application) and audit_recorder_of(value) is not None:
                found.append((value.name, value))
        return sorted(found, key=lambda x: x[0])

    def verify(self, org: UUID | None = None) -> list[Report]:
        key = self.settings.audit_secret()
        return [verify(name, audit_recorder_of(app), key, org) for name, app in self.applications()]

    def public_key_pem(self) -> bytes:
        from application.audit_export import public_key_pem

        return public_key_pem(self.settings.audit_private_key_pem())

    def _source(self, app: Any) -> ChainReader:
        recorder = audit_recorder_of(app)
        if recorder is None:
            raise ProgrammingError(
                f"the {app.name} application keeps no audit chain (GOMOBILE_AUDIT_CHAIN=off?)"
            )
        return recorder.audit_reader()

    def export(
        self, org: UUID, *, contact_id: str | None = None, execution_id: str | None = None
    ) -> dict[str, Any]:
        """The signed export of a contact (its stream and its calls) or an execution (its
        stream and its calls) of ``org``; NotFound for another organization's."""
        from eventsourcing.application import AggregateNotFoundError

        from application.audit_export import build_export
        from domain.call import call_id
        from domain.contact import Contact
        from domain.errors import ContactNotFoundError

        c = self.container
        campaigns, calls = c.campaigns, c.calls
        streams: list[tuple[str, Any, Any, UUID]] = []
        if contact_id is not None:
            try:
                contact = campaigns.repository.get(UUID(str(contact_id)))
            except (AggregateNotFoundError, ValueError):
                raise ContactNotFoundError("Contact not found") from None
            if not isinstance(contact, Contact) or contact.organization_id != org:
                raise ContactNotFoundError("Contact not found")
            subject = {"type": "contact", "id": str(contact.id)}
            streams.append((campaigns.name, campaigns, self._source(campaigns), contact.id))
            call_source = self._source(calls)
            for x in c.progress.executions(str(org)):
                cid = call_id(UUID(x["id"]), contact.id)
                if call_source.stream_events(cid):
                    streams.append((calls.name, calls, call_source, cid))
        elif execution_id is not None:
            execution = campaigns.execution(org, execution_id)
            subject = {"type": "execution", "id": str(execution.id)}
            streams.append((campaigns.name, campaigns, self._source(campaigns), execution.id))
            call_source = self._source(calls)
            for cid, _ in sorted(c.progress.calls_by_contact(str(execution.id)).values()):
                streams.append((calls.name, calls, call_source, UUID(cid)))
        else:
            raise ValueError("name a contact or an execution")
        return build_export(
            subject, org, streams, self.settings.audit_private_key_pem(), c.clock.now().isoformat()
        )
