"""The directory: the organization's contacts, audiences, flows and programs as lists
that can be searched, sorted and paged (the documented list endpoints)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

import msgspec
from eventsourcing.persistence import Tracking

from domain.timeparse import format_instant
from projections.store import ViewMixin, dumps, loads

CONTACT_COLUMNS = {
    "firstName": "first_name",
    "lastName": "last_name",
    "fullName": "full_name",
    "primaryPhone": "primary_phone",
    "primaryEmail": "primary_email",
    "createdAt": "created_at",
}
CONTACT_SEARCH = ("first_name", "last_name", "full_name", "primary_phone", "primary_email")
AUDIENCE_SORT = {"name": "name", "createdAt": "created_at", "updatedAt": "updated_at"}
FLOW_SORT = {"name": "name", "createdAt": "created_at", "updatedAt": "updated_at"}


def _contacts_table(pg: bool) -> str:
    # PostgreSQL keeps the contact document as jsonb: rule conditions read it without
    # parsing text for each row and condition (SQLite has JSON functions over TEXT).
    return f"""CREATE TABLE IF NOT EXISTS dir_contacts (
            id TEXT PRIMARY KEY, organization_id TEXT NOT NULL, primary_phone TEXT NOT NULL,
            first_name TEXT, last_name TEXT, full_name TEXT, primary_email TEXT, data {'jsonb' if pg else 'TEXT'} NOT NULL,
            created_at TEXT NOT NULL, updated_at TEXT NOT NULL, deleted_at TEXT)"""


_OTHER_TABLES = (
    "CREATE INDEX IF NOT EXISTS dir_contacts_org ON dir_contacts (organization_id, created_at)",
    """CREATE TABLE IF NOT EXISTS dir_audiences (
        id TEXT PRIMARY KEY, organization_id TEXT NOT NULL, name TEXT NOT NULL, description TEXT,
        kind TEXT NOT NULL, rules TEXT,
        contact_count INTEGER NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL, deleted INTEGER NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS dir_audiences_org ON dir_audiences (organization_id, created_at)",
    """CREATE TABLE IF NOT EXISTS dir_flows (
        id TEXT PRIMARY KEY, organization_id TEXT NOT NULL, name TEXT NOT NULL, description TEXT,
        version INTEGER NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL, deleted INTEGER NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS dir_flows_org ON dir_flows (organization_id, name)",
    """CREATE TABLE IF NOT EXISTS dir_programs (
        id TEXT PRIMARY KEY, organization_id TEXT NOT NULL, name TEXT NOT NULL, status TEXT NOT NULL,
        audience_id TEXT, created_at TEXT NOT NULL, updated_at TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS dir_programs_org ON dir_programs (organization_id, created_at)",
    "CREATE INDEX IF NOT EXISTS dir_programs_audience ON dir_programs (audience_id)",
    """CREATE TABLE IF NOT EXISTS dir_suppressions (
        id TEXT PRIMARY KEY, organization_id TEXT NOT NULL, phone TEXT NOT NULL, reason TEXT,
        source TEXT NOT NULL, active INTEGER NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS dir_suppressions_org ON dir_suppressions (organization_id, active, phone)",
    """CREATE TABLE IF NOT EXISTS dir_audience_members (
        audience_id TEXT NOT NULL, contact_id TEXT NOT NULL, joined_at TEXT NOT NULL,
        PRIMARY KEY (audience_id, contact_id))""",
    "CREATE INDEX IF NOT EXISTS dir_audience_members_contact ON dir_audience_members (contact_id)",
)

# The contact events a batch applies together (rows read once, written with executemany).
CONTACT_EVENTS = frozenset(
    f"Contact.{n}" for n in ("Created", "Updated", "Restored", "Deleted", "JoinedAudience", "ExitedAudience")
)


def _doc(value: Any) -> Any:
    """The contact document of a row: jsonb arrives parsed (PostgreSQL), TEXT does not."""
    return value if isinstance(value, (dict, list)) or value is None else loads(value)


class DirectoryView(ViewMixin):
    @property
    def TABLES(self) -> tuple[str, ...]:  # type: ignore[override]
        return (_contacts_table(self.is_postgres), *_OTHER_TABLES)

    DROP = tuple(f"DROP TABLE IF EXISTS {t}" for t in ("dir_contacts", "dir_audiences", "dir_flows", "dir_programs", "dir_suppressions", "dir_audience_members"))

    # -- queries --------------------------------------------------------------------

    def _page(
        self, table: str, org: str, where: str, params: list[Any], order: str, page: int, limit: int
    ) -> tuple[list[dict[str, Any]], int]:
        base = f"FROM {table} WHERE organization_id = ? {where}"
        total = self.one(f"SELECT COUNT(*) AS n {base}", [org, *params])
        rows = self.rows(f"SELECT * {base} ORDER BY {order} LIMIT ? OFFSET ?", [org, *params, limit, (page - 1) * limit])
        return rows, int(total["n"]) if total else 0

    @staticmethod
    def _search(columns: tuple[str, ...], search: str | None) -> tuple[str, list[Any]]:
        if not search:
            return "", []
        like = f"%{search.lower()}%"
        return "AND (" + " OR ".join(f"LOWER(COALESCE({c}, '')) LIKE ?" for c in columns) + ")", [like] * len(columns)

    def contacts(self, org: str, page: int, limit: int, search: str | None, sort: str, desc: bool) -> tuple[list[dict[str, Any]], int]:
        where, params = self._search(CONTACT_SEARCH, search)
        rows, total = self._page(
            "dir_contacts", org, "AND deleted_at IS NULL " + where, params,
            f"{CONTACT_COLUMNS[sort]} {'DESC' if desc else 'ASC'}, id", page, limit,
        )
        for r in rows:
            r["data"] = _doc(r["data"])
        return rows, total

    def audiences(self, org: str, page: int, limit: int, search: str | None, sort: str, desc: bool) -> tuple[list[dict[str, Any]], int]:
        where, params = self._search(("name", "description"), search)
        rows, total = self._page("dir_audiences", org, "AND deleted = 0 " + where, params,
                                 f"{AUDIENCE_SORT[sort]} {'DESC' if desc else 'ASC'}, id", page, limit)
        linked = self._linked_counts([r["id"] for r in rows])
        for r in rows:
            r["rules"] = loads(r["rules"])
            r["linked_campaigns"] = linked.get(r["id"], 0)
        return rows, total

    def _linked_counts(self, audience_ids: Sequence[str]) -> dict[str, int]:
        if not audience_ids:
            return {}
        marks = ", ".join("?" for _ in audience_ids)
        return {r["audience_id"]: int(r["n"]) for r in self.rows(
            f"SELECT audience_id, COUNT(*) AS n FROM dir_programs WHERE audience_id IN ({marks}) "
            "AND status <> 'deleted' GROUP BY audience_id", list(audience_ids))}

    def linked_campaigns_count(self, audience_id: str) -> int:
        """The programs (campaigns) targeting the audience that are not deleted."""
        return self._linked_counts([audience_id]).get(audience_id, 0)

    def flows(self, org: str, page: int, limit: int, search: str | None, sort: str, desc: bool) -> tuple[list[dict[str, Any]], int]:
        where, params = self._search(("name", "description"), search)
        return self._page("dir_flows", org, "AND deleted = 0 " + where, params,
                          f"{FLOW_SORT[sort]} {'DESC' if desc else 'ASC'}, id", page, limit)

    def existing_contact_ids(self, ids: Sequence[str]) -> set[str]:
        """Which of these contact ids the directory has seen (deleted ones included)."""
        found: set[str] = set()
        for i in range(0, len(ids), 500):
            chunk = list(ids[i : i + 500])
            marks = ", ".join("?" for _ in chunk)
            found.update(r["id"] for r in self.rows(f"SELECT id FROM dir_contacts WHERE id IN ({marks})", chunk))
        return found

    def suppressions(self, org: str, page: int, limit: int, search: str | None) -> tuple[list[dict[str, Any]], int]:
        where, params = self._search(("phone", "reason"), search)
        return self._page("dir_suppressions", org, "AND active = 1 " + where, params, "phone", page, limit)

    # -- live audiences ----------------------------------------------------------------

    def _rules_where(self, tree: dict[str, Any], types: dict[str, str]) -> tuple[str, list[Any]]:
        from projections.rules_sql import compile_rules

        return compile_rules(tree, types, self.is_postgres)

    def preview(self, org: str, tree: dict[str, Any], types: dict[str, str], sample: int) -> tuple[int, list[dict[str, Any]]]:
        """How many of the organization's contacts match ``tree``, and the first few."""
        cond, params = self._rules_where(tree, types)
        # One pass of the conditions over the contacts (they are the cost): the matches'
        # ids are kept, counted, and the newest few joined back for the sample.
        found = self.rows(
            "WITH m AS MATERIALIZED (SELECT id, created_at FROM dir_contacts "
            f"WHERE organization_id = ? AND deleted_at IS NULL AND {cond}), "
            "page AS (SELECT id, created_at FROM m ORDER BY created_at DESC, id LIMIT ?) "
            "SELECT t.n AS preview_total, c.* FROM (SELECT COUNT(*) AS n FROM m) t "
            "LEFT JOIN page ON 1 = 1 LEFT JOIN dir_contacts c ON c.id = page.id "
            "ORDER BY page.created_at DESC, page.id",
            [org, *params, sample],
        )
        total = int(found[0]["preview_total"]) if found else 0
        rows = [r for r in found if r["id"] is not None]
        for r in rows:
            del r["preview_total"]
            r["data"] = _doc(r["data"])
        return total, rows

    def matching_contact_ids(self, org: str, tree: dict[str, Any], types: dict[str, str]) -> set[str]:
        cond, params = self._rules_where(tree, types)
        return {r["id"] for r in self.rows(
            f"SELECT id FROM dir_contacts WHERE organization_id = ? AND deleted_at IS NULL AND {cond}", [org, *params]
        )}

    def audience_member_ids(self, audience_id: str) -> list[str]:
        return [r["contact_id"] for r in self.rows(
            "SELECT contact_id FROM dir_audience_members WHERE audience_id = ? ORDER BY joined_at, contact_id", (audience_id,)
        )]

    def audience_member_count(self, audience_id: str) -> int:
        row = self.one("SELECT COUNT(*) AS n FROM dir_audience_members WHERE audience_id = ?", (audience_id,))
        return int(row["n"]) if row else 0

    def audience_contacts(self, audience_id: str, page: int, limit: int) -> tuple[list[dict[str, Any]], int]:
        total = self.audience_member_count(audience_id)
        rows = self.rows(
            "SELECT c.* FROM dir_audience_members m JOIN dir_contacts c ON c.id = m.contact_id "
            "WHERE m.audience_id = ? ORDER BY m.joined_at, m.contact_id LIMIT ? OFFSET ?",
            (audience_id, limit, (page - 1) * limit),
        )
        for r in rows:
            r["data"] = _doc(r["data"])
        return rows, total

    def _join(self, c: Any, audience_id: str, contact_ids: Sequence[str], at: str) -> None:
        batch = _Batch(self, c)
        for cid in contact_ids:
            batch.member(audience_id, cid, at)
        batch.flush()

    def _leave(self, c: Any, audience_id: str, contact_ids: Sequence[str]) -> None:
        batch = _Batch(self, c)
        for cid in contact_ids:
            batch.member(audience_id, cid, None)
        batch.flush()

    def latest_flow(self, org: str, name: str) -> str | None:
        row = self.one(
            "SELECT id FROM dir_flows WHERE organization_id = ? AND name = ? AND deleted = 0 "
            "ORDER BY updated_at DESC LIMIT 1",
            (org, name),
        )
        return row["id"] if row else None

    def program_ids(self, org: str) -> list[str]:
        return [r["id"] for r in self.rows(
            "SELECT id FROM dir_programs WHERE organization_id = ? AND status <> 'deleted' ORDER BY created_at DESC, id", (org,)
        )]

    # -- handlers -------------------------------------------------------------------

    DISPATCH_BY_METHOD = True  # the runner skips, undecoded, the events wants() refuses

    def wants(self, topic: str) -> bool:
        return topic.rsplit(":", 1)[-1] in CONTACT_EVENTS or super().wants(topic)

    def apply_batch(
        self, items: Sequence[tuple[Any, Tracking]], handle: Callable[[Any, Any], None], last: Tracking | None = None
    ) -> None:
        """Apply events and advance the tracking position (to ``last`` when the batch read
        further than its last wanted event) in one transaction. Runs of contact events (an
        import is 100,000 of them) are applied together: the rows they touch are read in
        one query and written in one statement, instead of a round trip or two per event."""
        if not items and last is None:
            return
        with self.transaction() as c:
            batch = _Batch(self, c)
            for event, _ in items:
                if _name(event) in CONTACT_EVENTS:
                    batch.add(event)
                else:
                    batch.flush()  # keep the order with every other event
                    handle(c, event)
            batch.flush()
            self._insert_tracking(c, last or items[-1][1])  # type: ignore[attr-defined]
        self.after_batch()

    def handle(self, c: Any, event: Any) -> None:
        if _name(event) in CONTACT_EVENTS:
            batch = _Batch(self, c)
            batch.add(event)
            batch.flush()
            return
        handler = getattr(self, "on_" + _name(event).replace(".", "_"), None)
        if handler is not None:
            handler(c, event)

    def on_Contact_Erased(self, c: Any, e: Any) -> None:
        """Crypto-shredding (issue 7): the row keeps the contact's id and dates, nothing of
        the person (a rebuild reads its events erased, so never brings them back)."""
        at = _instant(e.timestamp)
        self.ex(
            c,
            "UPDATE dir_contacts SET primary_phone = '', first_name = NULL, last_name = NULL, full_name = NULL, "
            "primary_email = NULL, data = '{}', updated_at = ?, deleted_at = COALESCE(deleted_at, ?) WHERE id = ?",
            (at, at, str(e.originator_id)),
        )

    def on_Contact_Recreated(self, c: Any, e: Any) -> None:
        """The same number after an erasure: the row lives again with what was sent."""
        at = _instant(e.timestamp)
        data = {k: v for k, v in e.fields.items() if k != "customAttributes"}
        data["customAttributes"] = {k: v for k, v in (e.fields.get("customAttributes") or {}).items() if v is not None}
        data = _without_nul(data)  # as both stores keep it (see _without_nul)
        doc = _pg_json(data) if self.is_postgres else dumps(data)
        self.ex(
            c,
            "INSERT INTO dir_contacts (id, organization_id, primary_phone, data, first_name, last_name, full_name, "
            f"primary_email, created_at, updated_at, deleted_at) VALUES (?, ?, ?, {'CAST(? AS jsonb)' if self.is_postgres else '?'}, "
            "?, ?, ?, ?, ?, ?, NULL) ON CONFLICT (id) DO UPDATE SET primary_phone = excluded.primary_phone, "
            "data = excluded.data, first_name = excluded.first_name, last_name = excluded.last_name, "
            "full_name = excluded.full_name, primary_email = excluded.primary_email, updated_at = excluded.updated_at, "
            "deleted_at = NULL",
            (str(e.originator_id), str(e.organization_id), e.phone, doc, *_contact_columns(data), at, at),
        )

    def on_Audience_Created(self, c: Any, e: Any) -> None:
        at = format_instant(e.timestamp)
        self.ex(
            c,
            "INSERT INTO dir_audiences (id, organization_id, name, description, kind, contact_count, created_at, "
            "updated_at, deleted) VALUES (?, ?, ?, ?, 'static', 0, ?, ?, 0) ON CONFLICT (id) DO NOTHING",
            (str(e.originator_id), str(e.organization_id), e.name, e.description, at, at),
        )

    def on_Audience_RulesSet(self, c: Any, e: Any) -> None:
        self.ex(c, "UPDATE dir_audiences SET kind = 'live', rules = ?, updated_at = ? WHERE id = ?",
                (dumps(e.rules), format_instant(e.timestamp), str(e.originator_id)))

    def on_Audience_Renamed(self, c: Any, e: Any) -> None:
        self.ex(c, "UPDATE dir_audiences SET name = ?, description = ?, updated_at = ? WHERE id = ?",
                (e.name, e.description, format_instant(e.timestamp), str(e.originator_id)))

    def on_Audience_MembersAdded(self, c: Any, e: Any) -> None:
        self._join(c, str(e.originator_id), e.contact_ids, format_instant(e.timestamp) or "")
        self.ex(c, "UPDATE dir_audiences SET updated_at = ? WHERE id = ?", (format_instant(e.timestamp), str(e.originator_id)))

    def on_Audience_MembersRemoved(self, c: Any, e: Any) -> None:
        self._leave(c, str(e.originator_id), e.contact_ids)
        self.ex(c, "UPDATE dir_audiences SET updated_at = ? WHERE id = ?", (format_instant(e.timestamp), str(e.originator_id)))

    def on_Audience_Deleted(self, c: Any, e: Any) -> None:
        self.ex(c, "UPDATE dir_audiences SET deleted = 1, updated_at = ? WHERE id = ?",
                (format_instant(e.timestamp), str(e.originator_id)))

    def on_Flow_Created(self, c: Any, e: Any) -> None:
        at = format_instant(e.timestamp)
        self.ex(
            c,
            "INSERT INTO dir_flows (id, organization_id, name, description, version, created_at, updated_at, deleted) "
            "VALUES (?, ?, ?, ?, 1, ?, ?, 0) ON CONFLICT (id) DO NOTHING",
            (str(e.originator_id), str(e.organization_id), e.name, e.description, at, at),
        )

    def on_Flow_Updated(self, c: Any, e: Any) -> None:
        bump = 1 if e.graph is not None else 0
        self.ex(c, "UPDATE dir_flows SET name = ?, description = ?, version = version + ?, updated_at = ? WHERE id = ?",
                (e.name, e.description, bump, format_instant(e.timestamp), str(e.originator_id)))

    def on_Flow_Deleted(self, c: Any, e: Any) -> None:
        self.ex(c, "UPDATE dir_flows SET deleted = 1, updated_at = ? WHERE id = ?",
                (format_instant(e.timestamp), str(e.originator_id)))

    def on_Program_Created(self, c: Any, e: Any) -> None:
        at = format_instant(e.timestamp)
        self.ex(
            c,
            "INSERT INTO dir_programs (id, organization_id, name, status, audience_id, created_at, updated_at) "
            "VALUES (?, ?, ?, 'draft', ?, ?, ?) ON CONFLICT (id) DO NOTHING",
            (str(e.originator_id), str(e.organization_id), e.settings.get("name", ""),
             _text(e.settings.get("audienceId")), at, at),
        )

    def _program(self, c: Any, e: Any, **fields: Any) -> None:
        sets = "".join(f", {k} = ?" for k in fields)
        self.ex(c, f"UPDATE dir_programs SET updated_at = ?{sets} WHERE id = ?",
                (format_instant(e.timestamp), *fields.values(), str(e.originator_id)))

    def on_Program_Configured(self, c: Any, e: Any) -> None:
        fields = {}
        if "name" in e.changes:
            fields["name"] = e.changes["name"]
        if "audienceId" in e.changes:
            fields["audience_id"] = _text(e.changes["audienceId"])
        self._program(c, e, **fields)

    def on_Program_Launched(self, c: Any, e: Any) -> None:
        self._program(c, e, status="active")

    def on_Program_Archived(self, c: Any, e: Any) -> None:
        self._program(c, e, status="archived")

    def on_Program_Deleted(self, c: Any, e: Any) -> None:
        self._program(c, e, status="deleted")

    def on_Suppression_Created(self, c: Any, e: Any) -> None:
        at = format_instant(e.timestamp)
        self.ex(
            c,
            "INSERT INTO dir_suppressions (id, organization_id, phone, reason, source, active, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, 1, ?, ?) ON CONFLICT (id) DO NOTHING",
            (str(e.originator_id), str(e.organization_id), e.phone, e.reason, e.source, at, at),
        )

    def on_Suppression_Readded(self, c: Any, e: Any) -> None:
        self.ex(c, "UPDATE dir_suppressions SET active = 1, reason = ?, source = ?, updated_at = ? WHERE id = ?",
                (e.reason, e.source, format_instant(e.timestamp), str(e.originator_id)))

    def on_Suppression_Removed(self, c: Any, e: Any) -> None:
        self.ex(c, "UPDATE dir_suppressions SET active = 0, updated_at = ? WHERE id = ?",
                (format_instant(e.timestamp), str(e.originator_id)))


def _instant(value: Any) -> str | None:
    """format_instant, faster for the UTC timestamps events carry (100,000 per import)."""
    if value is not None and value.utcoffset() == _ZERO:
        return value.isoformat(timespec="milliseconds")[:-6] + "Z"  # type: ignore[no-any-return]
    return format_instant(value)


_ZERO = timedelta(0)


def _name(event: Any) -> str:
    return type(event).__qualname__


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _contact_columns(data: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(data.get(k) for k in ("firstName", "lastName", "fullName", "primaryEmail"))


_JSON = msgspec.json.Encoder(enc_hook=str)


def _pg_json(rows: list[dict[str, Any]]) -> str:
    """Rows as one JSON document for PostgreSQL, cleaned of U+0000 if any holds it.

    Encoded by msgspec: the document only carries a batch's rows to ``jsonb_to_recordset``
    (PostgreSQL parses it; it is never stored as this text), and contact values are JSON's
    own types. ``json.dumps`` took 5.8 ms per 1,000 contacts, msgspec 0.3 ms."""
    text = _JSON.encode(rows).decode()
    return _JSON.encode(_without_nul(rows)).decode() if "\\u0000" in text else text


def _without_nul(value: Any) -> Any:
    """PostgreSQL text and jsonb cannot hold U+0000, which a contact's text may contain:
    it is stored as U+FFFD there, so one odd value cannot stop the projection (rule
    values may not contain either character, see domain.rules, so verdicts agree). The
    SQLite directory stores it the same way: SQLite's string functions end a text at
    U+0000, so "a<U+0000>b" equalled the rule value "a" there (found by
    tests/unit/test_properties_rules.py)."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {k: _without_nul(x) for k, x in value.items()}
    if isinstance(value, list):
        return [_without_nul(x) for x in value]
    return value


class _Batch:
    """Contact events and membership changes of one transaction, applied together.

    Contact rows are read once (those the batch did not create), the events are replayed
    on them in order in memory (the same merge as one event at a time), and the final
    rows are written in one statement (PostgreSQL) or with executemany (SQLite). Membership changes are netted the same way
    against the pairs already stored, and each audience's count moves once."""

    def __init__(self, view: DirectoryView, c: Any) -> None:
        self.view = view
        self.c = c
        self.events: list[Any] = []
        self.members: list[tuple[str, str, str | None]] = []  # (audience, contact, joined at | None = exit)

    def add(self, event: Any) -> None:
        self.events.append(event)

    def member(self, audience_id: str, contact_id: str, joined_at: str | None) -> None:
        self.members.append((audience_id, contact_id, joined_at))

    def flush(self) -> None:
        if self.events:
            self._contacts()
        if self.members:
            self._memberships()
        self.events = []
        self.members = []

    def _contacts(self) -> None:
        v, c = self.view, self.c
        created: dict[str, dict[str, Any]] = {}
        updated: dict[str, dict[str, Any]] = {}
        wanted = []
        for e in self.events:
            cid = str(e.originator_id)
            kind = _name(e)
            if kind == "Contact.Created":
                if cid not in created:
                    at = _instant(e.timestamp)
                    created[cid] = {"id": cid, "organization_id": str(e.organization_id), "primary_phone": e.phone,
                                    "data": dict(e.fields), "created_at": at, "updated_at": at, "deleted_at": None}
            elif kind in ("Contact.JoinedAudience", "Contact.ExitedAudience"):
                joined = _instant(e.timestamp) or "" if kind == "Contact.JoinedAudience" else None
                self.member(e.audience_id, cid, joined)
            elif cid not in created:
                wanted.append(cid)
        stored: dict[str, dict[str, Any]] = {}
        ids = list(dict.fromkeys(wanted))
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            marks = ", ".join("?" for _ in chunk)
            for r in v.fetch(c, f"SELECT id, data, deleted_at FROM dir_contacts WHERE id IN ({marks})", chunk):
                stored[r["id"]] = {"data": _doc(r["data"]) or {}, "deleted_at": r["deleted_at"]}
        for e in self.events:
            kind = _name(e)
            if kind not in ("Contact.Updated", "Contact.Restored", "Contact.Deleted"):
                continue
            cid = str(e.originator_id)
            row = created.get(cid) or stored.get(cid)
            if row is None:
                continue  # a contact the directory never saw (as before: nothing to update)
            at = _instant(e.timestamp)
            if kind == "Contact.Deleted":
                row["deleted_at"] = at
            else:
                data = row["data"]
                fields = e.fields
                attrs = {**data.get("customAttributes", {}), **fields.get("customAttributes", {})}
                data.update({k: x for k, x in fields.items() if k != "customAttributes"})
                data["customAttributes"] = {k: x for k, x in attrs.items() if x is not None}  # null clears a value
                row["deleted_at"] = None
            row["updated_at"] = at
            if cid not in created:
                updated[cid] = row
        pg = v.is_postgres
        if pg:
            # One statement per batch, its rows as one JSON document (encoded in C, read by
            # jsonb_to_recordset): no round trip, nor pipeline step, per row.
            columns = ("first_name", "last_name", "full_name", "primary_email")
            if created:
                rows = [{"id": r["id"], "organization_id": r["organization_id"], "primary_phone": r["primary_phone"],
                         "data": r["data"], **dict(zip(columns, _contact_columns(r["data"]), strict=True)),
                         "created_at": r["created_at"], "updated_at": r["updated_at"], "deleted_at": r["deleted_at"]}
                        for r in created.values()]
                c.execute(
                    "INSERT INTO dir_contacts (id, organization_id, primary_phone, data, first_name, last_name, "
                    "full_name, primary_email, created_at, updated_at, deleted_at) "
                    "SELECT id, organization_id, primary_phone, data, first_name, last_name, full_name, primary_email, "
                    "created_at, updated_at, deleted_at FROM jsonb_to_recordset(%s::jsonb) AS t(id text, "
                    "organization_id text, primary_phone text, data jsonb, first_name text, last_name text, "
                    "full_name text, primary_email text, created_at text, updated_at text, deleted_at text) "
                    "ON CONFLICT (id) DO NOTHING",
                    (_pg_json(rows),),
                )
            if updated:
                rows = [{"id": cid, "data": r["data"], **dict(zip(columns, _contact_columns(r["data"]), strict=True)),
                         "updated_at": r["updated_at"], "deleted_at": r["deleted_at"]} for cid, r in updated.items()]
                c.execute(
                    "UPDATE dir_contacts d SET data = t.data, first_name = t.first_name, last_name = t.last_name, "
                    "full_name = t.full_name, primary_email = t.primary_email, updated_at = t.updated_at, "
                    "deleted_at = t.deleted_at FROM jsonb_to_recordset(%s::jsonb) AS t(id text, data jsonb, "
                    "first_name text, last_name text, full_name text, primary_email text, updated_at text, "
                    "deleted_at text) WHERE d.id = t.id",
                    (_pg_json(rows),),
                )
            return
        if created:
            c.executemany(
                "INSERT INTO dir_contacts (id, organization_id, primary_phone, data, first_name, last_name, full_name, "
                "primary_email, created_at, updated_at, deleted_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (id) DO NOTHING",
                [(r["id"], r["organization_id"], r["primary_phone"], dumps(d), *_contact_columns(d),
                  r["created_at"], r["updated_at"], r["deleted_at"])
                 for r in created.values() for d in (_without_nul(r["data"]),)])
        if updated:
            c.executemany(
                "UPDATE dir_contacts SET data = ?, first_name = ?, last_name = ?, full_name = ?, primary_email = ?, "
                "updated_at = ?, deleted_at = ? WHERE id = ?",
                [(dumps(d), *_contact_columns(d), r["updated_at"], r["deleted_at"], cid)
                 for cid, r in updated.items() for d in (_without_nul(r["data"]),)])

    def _memberships(self) -> None:
        v, c = self.view, self.c
        contacts = list(dict.fromkeys(cid for _, cid, _ in self.members))
        audiences = {a for a, _, _ in self.members}
        before: set[tuple[str, str]] = set()
        for i in range(0, len(contacts), 500):
            chunk = contacts[i : i + 500]
            marks = ", ".join("?" for _ in chunk)
            for r in v.fetch(c, f"SELECT audience_id, contact_id FROM dir_audience_members WHERE contact_id IN ({marks})", chunk):
                if r["audience_id"] in audiences:
                    before.add((r["audience_id"], r["contact_id"]))
        present = set(before)
        rejoined: dict[tuple[str, str], str] = {}  # pairs (re)joined in this batch, and when
        for audience_id, cid, joined_at in self.members:
            pair = (audience_id, cid)
            if joined_at is not None and pair not in present:
                present.add(pair)
                rejoined[pair] = joined_at
            elif joined_at is None and pair in present:
                present.discard(pair)
                rejoined.pop(pair, None)
        removed = [p for p in before if p not in present or p in rejoined]
        inserted = [(a, cid, at) for (a, cid), at in rejoined.items()]
        if removed:
            c.executemany(v.q("DELETE FROM dir_audience_members WHERE audience_id = ? AND contact_id = ?"), removed)
        if inserted:
            c.executemany(v.q("INSERT INTO dir_audience_members (audience_id, contact_id, joined_at) VALUES (?, ?, ?)"),
                          inserted)
        delta: dict[str, int] = {}
        for a, _ in present - before:
            delta[a] = delta.get(a, 0) + 1
        for a, _ in before - present:
            delta[a] = delta.get(a, 0) - 1
        changes = [(n, a) for a, n in sorted(delta.items()) if n]
        if changes:
            c.executemany(v.q("UPDATE dir_audiences SET contact_count = contact_count + ? WHERE id = ?"), changes)
