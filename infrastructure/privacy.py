"""Crypto-shredding (issue 7): contacts' personal data is encrypted at rest in the event
store with a key per contact, and erasing a contact destroys its keys.

Where: at the persistence boundary, in the events' mapper (eventsourcing's
``MAPPER_TOPIC``), so that aggregates, commands and projections stay as they are. For
the event topics listed in ``SEALED``, the personal fields are taken out of the event's
state, encoded by the application's transcoder, encrypted with AES-256-GCM under the
key of the contact the event is about (its *subject*: a Contact's own id, a Call's or
an SMS's ``contact_id``) and stored in their place as one envelope::

    "_pii_": {"v": 1, "s": <subject hex>, "g": <key generation>,
              "c": base64(nonce 12 bytes | ciphertext | tag), "f": {field path: kind}}

The associated data binds the ciphertext to its stream, version and topic (an envelope
copied onto another event does not open). Everything else (ids, organization, dates,
outcomes, node paths, the audit ``meta``) stays as it was, in clear: the audit chain
(infrastructure/audit.py) finds an event's organization in its stored bytes, and the
non-personal facts must outlive an erasure.

Reading: the envelope's key is looked up (cached per process, ``KEY_CACHE_SECONDS``);
when it is gone (erased), each sealed field comes back empty of its kind (``""``,
``None``, ``{}`` or ``[]``): aggregates, projections and rebuilds keep working, never an
exception. Events stored before this existed have no envelope and decode as they are.

Keys: table ``contact_keys`` (subject, generation, key, created_at, destroyed_at), in
the events' PostgreSQL database (read through the campaigns application's pool: no
connection of its own), or ``contact_keys.sqlite`` beside the embedded default's event
files. One generation per life of a contact: a contact re-created
after its erasure (same number, so the same uuid5 id) gets a new generation, and its
old events stay unreadable. Erasure sets the key of every generation to NULL (the row
stays as a tombstone, so that later writes about an erased contact are stored
redacted rather than under a fresh key).

Bound: a process that read a key keeps it at most ``KEY_CACHE_SECONDS`` (default 30):
every process forgets an erased key within that time; the process that erased it
forgets it at once.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from eventsourcing.persistence import InfrastructureFactory, Mapper, StoredEvent
from eventsourcing.utils import Environment, get_topic, register_topic, resolve_topic
from psycopg.rows import tuple_row

from infrastructure.transcoder import uuid_from_hex

log = logging.getLogger("gomobile.privacy")

ENVELOPE = "_pii_"
KEY_CACHE_SECONDS = 30.0
CACHE_SIZE = 50_000  # entries per cache; cleared when it grows past this (at 200,000 the million launch's
# dispatcher and projector peaked at 476 and 420 MB, against 359 and 113 MB before the key caches)
SUBJECTS_SIZE = 50_000  # call id -> contact id, learned from Call.Created

# topic -> the paths of its personal fields: "name" (a field), "parent.name" (a key of a
# dict field) or "parent.*" (every key of a dict field but those in KEEP[topic][parent]).
SEALED: dict[str, tuple[str, ...]] = {
    "domain.contact:Contact.Created": ("phone", "phone_input", "fields"),
    "domain.contact:Contact.Updated": ("fields",),
    "domain.contact:Contact.Restored": ("fields",),
    "domain.contact:Contact.Recreated": ("phone", "phone_input", "fields"),
    "domain.contact:Contact.ConsentRecorded": ("evidence",),
    "domain.contact:Contact.ConsentWithdrawn": ("reason",),
    "domain.contact:Contact.OptedOut": ("phone", "reason"),
    # the number dialled and the contact frozen at launch (its id and time zone stay:
    # calling hours and progress need them, they name nobody)
    "domain.call:Call.Created": ("to", "contact.*"),
    # a turn's prompts (rendered with the contact's values), inputs, variables, effects
    # (SMS, contact updates), recordings' links; the nodes it went through stay
    "domain.call:Call.FlowAdvanced": ("trigger.*", "turn.*"),
    # a text a flow sent the contact
    "domain.sms:SmsMessage.Created": ("to", "body"),
}
KEEP: dict[str, dict[str, frozenset[str]]] = {
    "domain.call:Call.Created": {"contact": frozenset({"id", "timezone"})},
    "domain.call:Call.FlowAdvanced": {
        "trigger": frozenset({"type", "answeredBy"}),
        "turn": frozenset({"steps", "resolved", "at"}),
    },
}
# Events that start a new life of a contact: always under a live key (a new generation
# after an erasure), read from the key table, never from a cache.
REKEY = frozenset({"domain.contact:Contact.Recreated"})
_CALL_CREATED = "domain.call:Call.Created"
_ERASED = "domain.contact:Contact.Erased"
_ENVELOPE_RE = re.compile(rb'"_pii_":\{"v":1,"s":"([0-9a-f]{32})","g":(\d+)')


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "d"
    if isinstance(value, list):
        return "l"
    return "s" if isinstance(value, str) else "n"


def _empty(kind: str) -> Any:
    """What a sealed field reads as once its key is gone: empty of its kind (a text reads
    "", so that read models' NOT NULL columns and string code keep working)."""
    return {} if kind == "d" else [] if kind == "l" else "" if kind == "s" else None


def _uuid(value: Any) -> UUID:
    return value if isinstance(value, UUID) else UUID(str(value))


# -- the key table -------------------------------------------------------------------------


class KeyStore:
    """Contact keys: one per (subject, generation); ``None`` once destroyed."""

    def __init__(self, env: dict[str, str], ttl: float = KEY_CACHE_SECONDS) -> None:
        self.env = env
        self.ttl = ttl
        self._factory: Any = None
        self._borrowed: Any = None  # an application's PostgreSQL datastore (its pool), see borrow()
        self._lock = threading.Lock()
        # subject -> generation -> (key or None, expires at); destroyed keys never expire
        self._keys: dict[UUID, dict[int, tuple[bytes | None, float]]] = {}
        # subject -> (generation, key or None, expires at): the key new events use
        self._current: dict[UUID, tuple[int, bytes | None, float]] = {}
        self.lookups = 0  # queries made (for tests and benchmarks)
        self.forgets = 0  # keys forgotten (erasures seen)

    # -- storage ------------------------------------------------------------------------

    @property
    def datastore(self) -> Any:
        borrowed = self._borrowed
        if borrowed is not None:
            return borrowed
        if self._factory is None:
            with self._lock:
                if self._factory is None and self._borrowed is None:
                    factory = InfrastructureFactory.construct(env=Environment("contact_keys", {**os.environ, **self.env}))
                    self._create_table(factory.datastore)
                    self._factory = factory
        return self._borrowed or self._factory.datastore

    def borrow(self, datastore: Any) -> None:
        """On PostgreSQL, use an application's pool (the same database) rather than a pool
        of our own: no more connections per process (max_connections is shared by all)."""
        if not self.is_postgres or not hasattr(datastore, "schema"):
            return
        with self._lock:
            if self._borrowed is None and self._factory is None:
                self._create_table(datastore)
                self._borrowed = datastore

    @property
    def is_postgres(self) -> bool:
        return "postgres" in self.env.get("PERSISTENCE_MODULE", "")

    def _q(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.is_postgres else sql

    def _create_table(self, datastore: Any) -> None:
        blob = "bytea" if self.is_postgres else "BLOB"
        with datastore.transaction(commit=True) as c:
            if self.is_postgres:  # processes starting together must not race to create it
                c.execute("SELECT pg_advisory_xact_lock(7420002)")
            c.execute(
                f"CREATE TABLE IF NOT EXISTS contact_keys (subject TEXT NOT NULL, generation INTEGER NOT NULL, "
                f"key {blob}, created_at TEXT NOT NULL, destroyed_at TEXT, PRIMARY KEY (subject, generation))"
            )

    def _read(self, subjects: Sequence[UUID]) -> list[tuple[UUID, int, bytes | None]]:
        """The rows of ``subjects``, outside any transaction where the backend allows (on
        PostgreSQL one round trip on an autocommit connection, not BEGIN/SELECT/ROLLBACK)."""
        if self.is_postgres:
            with self.datastore.get_connection() as conn, conn.cursor(row_factory=tuple_row) as c:
                return self._rows(c, subjects)
        with self.datastore.transaction(commit=False) as c:
            return self._rows(c, subjects)

    def _rows(self, c: Any, subjects: Sequence[UUID]) -> list[tuple[UUID, int, bytes | None]]:
        out: list[tuple[UUID, int, bytes | None]] = []
        for i in range(0, len(subjects), 500):
            part = [s.hex for s in subjects[i : i + 500]]
            if self.is_postgres:
                c.execute(self.SQL_LOOKUP, (part,), prepare=True)
            else:
                c.execute(
                    f"SELECT subject, generation, key FROM contact_keys WHERE subject IN ({','.join('?' * len(part))})",
                    part,
                )
            for r in c.fetchall():
                subject, gen, key = (r["subject"], r["generation"], r["key"]) if isinstance(r, dict) else (r[0], r[1], r[2])
                out.append((UUID(hex=subject), int(gen), None if key is None else bytes(key)))
        self.lookups += 1
        return out

    # The keys of a page of subjects, made (generation 1) for those that never had one, in
    # one statement: the statement's snapshot does not see the rows it inserts, hence the
    # union with what it made. A subject whose key another process made meanwhile is in
    # neither (ON CONFLICT DO NOTHING): read again.
    # Each subject's rows are looked up through the key (a LATERAL subquery with a LIMIT is
    # never flattened): with ``subject = ANY(...)`` or a join the planner chose to scan
    # the table whole (5.6 ms for 500 keys among 52,000, growing with the table; 1.6 ms).
    SQL_LOOKUP = (
        "SELECT k.subject, k.generation, k.key FROM unnest(%b::text[]) AS s(subject) CROSS JOIN LATERAL "
        "(SELECT * FROM contact_keys k WHERE k.subject = s.subject ORDER BY k.generation LIMIT 1000) k"
    )
    SQL_READ_OR_MAKE = (
        "WITH want AS (SELECT * FROM unnest(%b::text[], %b::bytea[]) AS w(subject, key)), "
        "have AS (SELECT k.subject, k.generation, k.key FROM want w CROSS JOIN LATERAL "
        "(SELECT * FROM contact_keys k WHERE k.subject = w.subject ORDER BY k.generation LIMIT 1000) k), "
        "made AS (INSERT INTO contact_keys (subject, generation, key, created_at) "
        "SELECT w.subject, 1, w.key, %b FROM want w WHERE w.subject NOT IN (SELECT subject FROM have) "
        "ON CONFLICT (subject, generation) DO NOTHING RETURNING subject, generation, key) "
        "SELECT subject, generation, key, false AS made FROM have "
        "UNION ALL SELECT subject, generation, key, true FROM made"
    )

    def _read_or_make(self, subjects: Sequence[UUID]) -> list[tuple[UUID, int, bytes | None]]:
        out: list[tuple[UUID, int, bytes | None]] = []
        made = 0
        stamp = _stamp()
        with self.datastore.get_connection() as conn, conn.cursor() as c:
            for i in range(0, len(subjects), 500):
                part = [s.hex for s in subjects[i : i + 500]]
                secrets = os.urandom(32 * len(part))
                keys = [secrets[j * 32 : j * 32 + 32] for j in range(len(part))]
                c.execute(self.SQL_READ_OR_MAKE, (part, keys, stamp), prepare=True)
                for r in c.fetchall():
                    key = r["key"]
                    out.append((UUID(hex=r["subject"]), int(r["generation"]), None if key is None else bytes(key)))
                    made += bool(r["made"])
        self.lookups += 1
        if made:
            self._keep_statistics(made)
        have = {s for s, _, _ in out}
        raced = [s for s in subjects if s not in have]
        if raced:
            out += self._read(raced)
        return out

    def _insert(self, c: Any, rows: list[tuple[str, int, bytes | None, str, str | None]]) -> None:
        c.executemany(
            self._q(
                "INSERT INTO contact_keys (subject, generation, key, created_at, destroyed_at) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (subject, generation) DO NOTHING"
            ),
            rows,
        )

    # -- the cache -----------------------------------------------------------------------

    def _remember(self, rows: Iterable[tuple[UUID, int, bytes | None]], now: float) -> None:
        if len(self._keys) > CACHE_SIZE:
            self._keys = {}
        if len(self._current) > CACHE_SIZE:
            self._current = {}
        latest: dict[UUID, tuple[int, bytes | None]] = {}
        for subject, gen, key in rows:
            self._keys.setdefault(subject, {})[gen] = (key, now + self.ttl if key is not None else float("inf"))
            if subject not in latest or gen > latest[subject][0]:
                latest[subject] = (gen, key)
        for subject, (gen, key) in latest.items():
            self._current[subject] = (gen, key, now + self.ttl)

    def forget(self, subject: UUID) -> None:
        self.forgets += 1  # what this process decoded before may now read otherwise (runner's DecodeCache)
        self._current.pop(subject, None)
        self._keys.pop(subject, None)

    # -- reading ------------------------------------------------------------------------

    def keys(self, pairs: Iterable[tuple[UUID, int]]) -> dict[tuple[UUID, int], bytes | None]:
        """The keys of (subject, generation) pairs (None: destroyed or unknown), one query
        for those not cached."""
        now = time.monotonic()
        out: dict[tuple[UUID, int], bytes | None] = {}
        missing: list[UUID] = []
        wanted = []
        for pair in pairs:
            gens = self._keys.get(pair[0])
            found = gens.get(pair[1]) if gens is not None else None
            if found is not None and found[1] > now:
                out[pair] = found[0]
            else:
                wanted.append(pair)
                missing.append(pair[0])
        if wanted:
            rows = self._read(list(dict.fromkeys(missing)))
            self._remember(rows, now)
            known = {(s, g): k for s, g, k in rows}
            for pair in wanted:
                out[pair] = known.get(pair)
                if pair not in known:  # never existed: remember as gone
                    self._keys.setdefault(pair[0], {})[pair[1]] = (None, float("inf"))
        return out

    def key(self, subject: UUID, generation: int) -> bytes | None:
        gens = self._keys.get(subject)  # the cached key, without keys()'s lists (each sealed event read asks)
        found = gens.get(generation) if gens is not None else None
        if found is not None and found[1] > time.monotonic():
            return found[0]
        return self.keys([(subject, generation)])[(subject, generation)]

    def current(self, subjects: Iterable[UUID], *, fresh: bool = False) -> dict[UUID, tuple[int, bytes | None]]:
        """The generation and key that new events of each subject are sealed with: a key is
        made for a subject that never had one; (generation, None) for an erased subject."""
        now = time.monotonic()
        out: dict[UUID, tuple[int, bytes | None]] = {}
        missing: list[UUID] = []
        for s in dict.fromkeys(subjects):
            found = None if fresh else self._current.get(s)
            if found is not None and found[2] > now:
                out[s] = (found[0], found[1])
            else:
                missing.append(s)
        if not missing:
            return out
        if self.is_postgres:
            rows = self._read_or_make(missing)
        else:
            rows = self._read(missing)
            have = {s for s, _, _ in rows}
            new = [s for s in missing if s not in have]
            if new:
                stamp = _stamp()
                with self.datastore.transaction(commit=True) as c:
                    self._insert(c, [(s.hex, 1, os.urandom(32), stamp, None) for s in new])
                rows = self._read(missing)  # another process may have made some first
        self._remember(rows, now)
        for s in missing:
            gen, key, _ = self._current[s]
            out[s] = (gen, key)
        return out

    def live(self, subject: UUID) -> tuple[int, bytes]:
        """A live key for a contact starting a new life: the current one, or a new
        generation when the current one was destroyed."""
        gen, key = self.current([subject], fresh=True)[subject]
        if key is not None:
            return gen, key
        with self.datastore.transaction(commit=True) as c:
            rows = self._rows(c, [subject])
            top = max((g for _, g, _ in rows), default=0)
            self._insert(c, [(subject.hex, top + 1, os.urandom(32), _stamp(), None)])
            rows = self._rows(c, [subject])
        self._remember(rows, time.monotonic())
        gen, key, _ = self._current[subject]
        assert key is not None, "the newest generation of a re-created contact was destroyed meanwhile"
        return gen, key

    _inserted_since_analyze = 0
    _rows_at_analyze = 0.0

    def _keep_statistics(self, inserted: int) -> None:
        """PostgreSQL: analyze the key table once it has doubled (at least 2,000 keys
        more) since this process last did. Never analyzed (autovacuum is off on this
        project's CI server, or behind a large import), the lookup of a page's keys was
        planned as a sequential scan: 150 ms a lookup at 30,000 keys, and a 100,000-row
        import fell from 5,400 to 713 rows/s. Statistics within a factor of two are enough
        for that choice (the lookup goes through the primary key once the table has a few
        pages); analyzing at every fifth more ran it 16 times in a 100,000-row import, up to
        75 ms each on the importer's path, where doubling runs it 6 times."""
        if not self.is_postgres:
            return
        self._inserted_since_analyze += inserted
        if self._inserted_since_analyze < max(2_000, self._rows_at_analyze):
            return
        self._inserted_since_analyze = 0
        with self.datastore.get_connection() as conn, conn.cursor() as c:
            c.execute("ANALYZE contact_keys")
            c.execute("SELECT reltuples FROM pg_class WHERE oid = 'contact_keys'::regclass")
            row = c.fetchone()
        value = (row.get("reltuples") if isinstance(row, dict) else row[0]) if row else 0
        self._rows_at_analyze = float(value or 0)

    # -- erasure -------------------------------------------------------------------------

    def destroy(self, subject: UUID) -> int:
        """Destroy every key of ``subject`` (idempotent); returns how many were live. A
        subject that never had a key gets a destroyed one, so that nothing written about
        it later is readable."""
        stamp = _stamp()
        with self.datastore.transaction(commit=True) as c:
            rows = self._rows(c, [subject])
            live = sum(1 for _, _, k in rows if k is not None)
            c.execute(
                self._q("UPDATE contact_keys SET key = NULL, destroyed_at = ? WHERE subject = ? AND key IS NOT NULL"),
                (stamp, subject.hex),
            )
            if not rows:
                self._insert(c, [(subject.hex, 1, None, stamp, stamp)])
        self.forget(subject)
        return live

    def is_destroyed(self, subject: UUID) -> bool:
        return self.current([subject], fresh=True)[subject][1] is None

    def close(self) -> None:
        with self._lock:
            factory, self._factory = self._factory, None
            self._borrowed = None  # not ours to close
        if factory is not None:
            factory.datastore.close()


def _stamp() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


# -- the mapper ------------------------------------------------------------------------------


class PersonalDataMapper(Mapper[UUID]):
    """eventsourcing's Mapper, sealing the personal fields of the events in ``SEALED``."""

    keystore_env: dict[str, str] = {}  # noqa: RUF012 - set per bound subclass (mapper_topic), never mutated
    keystore_ttl: float = KEY_CACHE_SECONDS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.keystore = keystore_for(self.keystore_env, self.keystore_ttl)
        self._subjects: OrderedDict[UUID, UUID] = OrderedDict()  # call id -> contact id
        self._subjects_lock = threading.Lock()
        self.resolve_subject: Any = None  # originator id -> subject, for streams not seen yet
        self._topics: dict[type, str] = {}

    # -- subjects -------------------------------------------------------------------------

    def _learn(self, originator_id: UUID, subject: UUID) -> None:
        if self._subjects.get(originator_id) == subject:
            return
        with self._subjects_lock:
            self._subjects[originator_id] = subject
            if len(self._subjects) > SUBJECTS_SIZE:
                self._subjects.popitem(last=False)

    def _subject(self, topic: str, originator_id: UUID, state: dict[str, Any]) -> UUID | None:
        if topic.startswith("domain.contact:"):
            return originator_id
        if state.get("contact_id") is not None:  # a Call's, an SMS's first event
            subject = _uuid(state["contact_id"])
            self._learn(originator_id, subject)
            return subject
        found = self._subjects.get(originator_id)
        if found is None and self.resolve_subject is not None:
            found = self.resolve_subject(originator_id)
            if found is not None:
                self._learn(originator_id, found)
        return found

    def _topic(self, cls: type) -> str:
        topic = self._topics.get(cls)
        if topic is None:
            topic = self._topics[cls] = get_topic(cls)
        return topic

    # -- batches (a save, a page of notifications) ------------------------------------------

    def prepare(self, domain_events: Sequence[Any]) -> None:
        """Fetch (or make) the keys of a save's events in one query."""
        subjects = []
        for e in domain_events:
            topic = self._topic(type(e))
            if topic in SEALED and topic not in REKEY:
                s = self._subject(topic, _uuid(e.originator_id), vars(e))
                if s is not None:
                    subjects.append(s)
        if len(subjects) > 1:
            self.keystore.current(subjects)

    def prefetch(self, stored_events: Iterable[Any], seen: Iterable[Any] = ()) -> None:
        """Fetch the keys that these stored events' envelopes name, in one query; forget
        the cached keys of the contacts whose erasure is among ``seen`` (a projection's
        page): what this process decodes after an erasure it has seen reads erased."""
        for s in seen:
            if s.topic == _ERASED:
                self.keystore.forget(_uuid(s.originator_id))
        pairs = []
        for s in stored_events:
            if s.topic not in SEALED:
                continue
            m = _ENVELOPE_RE.match(bytes(s.state), 1)
            if m is not None:
                pairs.append((UUID(hex=m.group(1).decode()), int(m.group(2))))
        if len(pairs) > 1:
            self.keystore.keys(dict.fromkeys(pairs))

    # -- one event ----------------------------------------------------------------------

    def to_stored_event(self, domain_event: Any) -> StoredEvent:
        topic = self._topic(type(domain_event))
        paths = SEALED.get(topic)
        if paths is None:
            return super().to_stored_event(domain_event)
        event_state = dict(vars(domain_event))
        originator_id = event_state.pop("originator_id")
        originator_version = event_state.pop("originator_version")
        class_version = getattr(type(domain_event), "class_version", 1)
        if class_version > 1:
            event_state["class_version"] = class_version
        secret, kinds = _take(event_state, paths, KEEP.get(topic, {}))
        subject = self._subject(topic, _uuid(originator_id), event_state)
        if subject is None:
            # A stream whose contact this process cannot tell (no resolver bound): the
            # personal fields are not stored rather than stored in clear.
            log.error("no subject for %s of %s: its personal fields are not stored", topic, originator_id)
        elif secret:
            if topic in REKEY:
                gen, key = self.keystore.live(subject)
            else:
                gen, key = self.keystore.current([subject])[subject]
            envelope: dict[str, Any] = {"v": 1, "s": subject.hex, "g": gen}
            if key is not None:  # else: an erased contact; what it says is not kept
                nonce = os.urandom(12)
                sealed = self._aead(key).encrypt(nonce, self.transcoder.encode(secret), _aad(originator_id, originator_version, topic))
                envelope["c"] = base64.b64encode(nonce + sealed).decode()
            envelope["f"] = kinds
            event_state = {ENVELOPE: envelope, **event_state}
        stored_state = self.transcoder.encode(event_state)
        if self.compressor:
            stored_state = self.compressor.compress(stored_state)
        if self.cipher:
            stored_state = self.cipher.encrypt(stored_state)
        return StoredEvent(originator_id=originator_id, originator_version=originator_version, topic=topic, state=stored_state)

    def _aead(self, key: bytes) -> AESGCM:
        """The cipher of a key, kept while the key store forgets nothing: making one costs
        more than opening a box with it (2.0 against 1.6 us), and a page of events or a
        save's rows are mostly a few contacts' boxes. Dropped, with the keys it holds, as
        soon as any key is forgotten (an erasure), and never kept longer than the key store
        keeps a key."""
        forgets = self.keystore.forgets
        ciphers = self._ciphers
        if forgets != self._ciphers_epoch or len(ciphers) >= 4096 or time.monotonic() > self._ciphers_until:
            ciphers = self._ciphers = {}
            self._ciphers_epoch = forgets
            self._ciphers_until = time.monotonic() + self.keystore.ttl  # no longer than the keys themselves
        cipher = ciphers.get(key)
        if cipher is None:
            cipher = ciphers[key] = AESGCM(key)
        return cipher

    _ciphers: dict[bytes, AESGCM] = {}  # noqa: RUF012 - replaced per instance on first use
    _ciphers_epoch = -1
    _ciphers_until = 0.0

    def to_domain_event(self, stored_event: StoredEvent, open_sealed: bool = True) -> Any:
        """The event, its personal fields opened; with ``open_sealed`` False they are left
        out (absent, not emptied), for a reader that declared it reads none of them (a
        rebuild of a read model: ``ViewMixin.PERSONAL``): neither key nor cipher is used."""
        if stored_event.topic == _ERASED:
            self.keystore.forget(_uuid(stored_event.originator_id))
        event = super().to_domain_event(stored_event)
        state = event.__dict__
        envelope = state.pop(ENVELOPE, None)
        if envelope is None:
            if stored_event.topic == _CALL_CREATED and "contact_id" in state:
                self._learn(_uuid(stored_event.originator_id), _uuid(state["contact_id"]))
            return event
        subject = uuid_from_hex(envelope["s"])
        if stored_event.topic.startswith("domain.call:"):
            self._learn(_uuid(stored_event.originator_id), subject)
        if not open_sealed:
            return event
        kinds: dict[str, str] = envelope.get("f") or {}
        secret: dict[str, Any] | None = None
        sealed = envelope.get("c")
        if sealed:
            key = self.keystore.key(subject, int(envelope["g"]))
            if key is not None:
                raw = binascii.a2b_base64(sealed)  # base64.b64decode's own, without its 2 us of checks
                try:
                    plain = self._aead(key).decrypt(
                        raw[:12], raw[12:],
                        _aad(stored_event.originator_id, stored_event.originator_version, stored_event.topic),
                    )  # fmt: skip
                    secret = self.transcoder.decode(plain)
                except InvalidTag:
                    log.warning("sealed fields of %s v%s do not open (altered?): read as erased",
                                stored_event.originator_id, stored_event.originator_version)  # fmt: skip
        _put(state, kinds, secret)
        return event


def _take(state: dict[str, Any], paths: Sequence[str], keep: dict[str, frozenset[str]]) -> tuple[dict[str, Any], dict[str, str]]:
    """Move the personal fields out of ``state`` (copying the dicts it changes)."""
    secret: dict[str, Any] = {}
    for path in paths:
        parent, _, child = path.partition(".")
        if not child:
            if parent in state:
                secret[path] = state.pop(parent)
            continue
        inner = state.get(parent)
        if not isinstance(inner, dict):
            continue
        inner = state[parent] = dict(inner)
        names = [k for k in inner if k not in keep.get(parent, ())] if child == "*" else [child] if child in inner else []
        for name in names:
            secret[f"{parent}.{name}"] = inner.pop(name)
    return secret, {k: _kind(v) for k, v in secret.items()}


def _put(state: dict[str, Any], kinds: dict[str, str], secret: dict[str, Any] | None) -> None:
    """Put the personal fields back, or each one empty of its kind when they cannot be read."""
    for path, kind in kinds.items():
        value = secret[path] if secret is not None and path in secret else _empty(kind)
        parent, _, child = path.partition(".")
        if child:
            inner = state.get(parent)
            if isinstance(inner, dict):
                inner[child] = value
        else:
            state[parent] = value


def _aad(originator_id: Any, version: int, topic: str) -> bytes:
    return f"{_uuid(originator_id)}|{version}|{topic}".encode()


# -- wiring ------------------------------------------------------------------------------------

_stores: dict[str, KeyStore] = {}
_stores_lock = threading.Lock()


def keystore_for(env: dict[str, str], ttl: float = KEY_CACHE_SECONDS) -> KeyStore:
    """One KeyStore (one cache) per key table per process, shared by its applications, so
    that an erasure in this process is seen at once by all of them."""
    fp = json.dumps(env, sort_keys=True) + f"|{ttl}"
    with _stores_lock:
        store = _stores.get(fp)
        if store is None:
            store = _stores[fp] = KeyStore(env, ttl)
        return store


def keystore_env(persistence_env: dict[str, str], data_dir: Any) -> dict[str, str]:
    """Where the key table lives: the events' PostgreSQL database, or a SQLite file in the
    embedded default's data dir."""
    env = {k: v for k, v in persistence_env.items() if not k.endswith("_SQLITE_DBNAME") and k != "APPLICATION_RECORDER_TOPIC"}
    if "sqlite" in env.get("PERSISTENCE_MODULE", ""):
        env["CONTACT_KEYS_SQLITE_DBNAME"] = str(os.path.join(str(data_dir), "contact_keys.sqlite"))
    return env


def mapper_topic(env: dict[str, str], ttl: float = KEY_CACHE_SECONDS) -> str:
    """The MAPPER_TOPIC of a PersonalDataMapper whose key table is described by ``env``
    (eventsourcing constructs the mapper from a topic, so the table is bound to a class)."""
    fp = hashlib.sha256((json.dumps(env, sort_keys=True) + f"|{ttl}").encode()).hexdigest()[:16]
    topic = f"{__name__}:PersonalDataMapper_{fp}"
    try:
        resolve_topic(topic)
    except Exception:  # noqa: BLE001 - not registered yet
        cls = type(f"PersonalDataMapper_{fp}", (PersonalDataMapper,), {"keystore_env": dict(env), "keystore_ttl": ttl})
        register_topic(topic, cls)
    return topic


def bind(app: Any) -> None:
    """Batch the key lookups of ``app``'s saves, and let its mapper find the contact of a
    Call stream it has not read yet (from the stream's first event)."""
    mapper = getattr(app, "mapper", None)
    if not isinstance(mapper, PersonalDataMapper):
        return
    mapper.keystore.borrow(getattr(app.recorder, "datastore", None))
    events = app.events
    put = events.put

    def put_prepared(domain_events: Sequence[Any], **kwargs: Any) -> Any:
        mapper.prepare(domain_events)
        return put(domain_events, **kwargs)

    events.put = put_prepared

    def resolve(originator_id: UUID) -> UUID | None:
        first = app.recorder.select_events(originator_id, lte=1)
        if not first or first[0].topic != _CALL_CREATED:
            return None
        m = _ENVELOPE_RE.search(bytes(first[0].state))
        if m is not None:
            return UUID(hex=m.group(1).decode())
        return _uuid(mapper.transcoder.decode(bytes(first[0].state))["contact_id"])

    mapper.resolve_subject = resolve
