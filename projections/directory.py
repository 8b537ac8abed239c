"""The directory: the organization's contacts, audiences, flows and programs as lists
that can be searched, sorted and paged (the documented list endpoints)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

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


class DirectoryView(ViewMixin):
    TABLES = (
        """CREATE TABLE IF NOT EXISTS dir_contacts (
            id TEXT PRIMARY KEY, organization_id TEXT NOT NULL, primary_phone TEXT NOT NULL,
            first_name TEXT, last_name TEXT, full_name TEXT, primary_email TEXT, data TEXT NOT NULL,
            created_at TEXT NOT NULL, updated_at TEXT NOT NULL, deleted_at TEXT)""",
        "CREATE INDEX IF NOT EXISTS dir_contacts_org ON dir_contacts (organization_id, created_at)",
        """CREATE TABLE IF NOT EXISTS dir_audiences (
            id TEXT PRIMARY KEY, organization_id TEXT NOT NULL, name TEXT NOT NULL, description TEXT,
            contact_count INTEGER NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL, deleted INTEGER NOT NULL)""",
        "CREATE INDEX IF NOT EXISTS dir_audiences_org ON dir_audiences (organization_id, created_at)",
        """CREATE TABLE IF NOT EXISTS dir_flows (
            id TEXT PRIMARY KEY, organization_id TEXT NOT NULL, name TEXT NOT NULL, description TEXT,
            version INTEGER NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL, deleted INTEGER NOT NULL)""",
        "CREATE INDEX IF NOT EXISTS dir_flows_org ON dir_flows (organization_id, name)",
        """CREATE TABLE IF NOT EXISTS dir_programs (
            id TEXT PRIMARY KEY, organization_id TEXT NOT NULL, name TEXT NOT NULL, status TEXT NOT NULL,
            created_at TEXT NOT NULL, updated_at TEXT NOT NULL)""",
        "CREATE INDEX IF NOT EXISTS dir_programs_org ON dir_programs (organization_id, created_at)",
        """CREATE TABLE IF NOT EXISTS dir_suppressions (
            id TEXT PRIMARY KEY, organization_id TEXT NOT NULL, phone TEXT NOT NULL, reason TEXT,
            source TEXT NOT NULL, active INTEGER NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL)""",
        "CREATE INDEX IF NOT EXISTS dir_suppressions_org ON dir_suppressions (organization_id, active, phone)",
        """CREATE TABLE IF NOT EXISTS dir_audience_members (
            audience_id TEXT NOT NULL, contact_id TEXT NOT NULL, joined_at TEXT NOT NULL,
            PRIMARY KEY (audience_id, contact_id))""",
        "CREATE INDEX IF NOT EXISTS dir_audience_members_contact ON dir_audience_members (contact_id)",
    )
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
            r["data"] = loads(r["data"])
        return rows, total

    def audiences(self, org: str, page: int, limit: int, search: str | None, sort: str, desc: bool) -> tuple[list[dict[str, Any]], int]:
        where, params = self._search(("name", "description"), search)
        return self._page("dir_audiences", org, "AND deleted = 0 " + where, params,
                          f"{AUDIENCE_SORT[sort]} {'DESC' if desc else 'ASC'}, id", page, limit)

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
        base = f"FROM dir_contacts WHERE organization_id = ? AND deleted_at IS NULL AND {cond}"
        total = self.one(f"SELECT COUNT(*) AS n {base}", [org, *params])
        rows = self.rows(f"SELECT * {base} ORDER BY created_at DESC, id LIMIT ?", [org, *params, sample]) if sample else []
        for r in rows:
            r["data"] = loads(r["data"])
        return (int(total["n"]) if total else 0), rows

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
            r["data"] = loads(r["data"])
        return rows, total

    def _join(self, c: Any, audience_id: str, contact_ids: Sequence[str], at: str) -> None:
        added = 0
        for cid in dict.fromkeys(contact_ids):
            # (the library's SQLite cursor has no rowcount: look before inserting)
            if self.fetch(c, "SELECT 1 AS x FROM dir_audience_members WHERE audience_id = ? AND contact_id = ?", (audience_id, cid)):
                continue
            self.ex(c, "INSERT INTO dir_audience_members (audience_id, contact_id, joined_at) VALUES (?, ?, ?)",
                    (audience_id, cid, at))
            added += 1
        if added:
            self.ex(c, "UPDATE dir_audiences SET contact_count = contact_count + ? WHERE id = ?", (added, audience_id))

    def _leave(self, c: Any, audience_id: str, contact_ids: Sequence[str]) -> None:
        gone = 0
        for cid in dict.fromkeys(contact_ids):
            if not self.fetch(c, "SELECT 1 AS x FROM dir_audience_members WHERE audience_id = ? AND contact_id = ?", (audience_id, cid)):
                continue
            self.ex(c, "DELETE FROM dir_audience_members WHERE audience_id = ? AND contact_id = ?", (audience_id, cid))
            gone += 1
        if gone:
            self.ex(c, "UPDATE dir_audiences SET contact_count = contact_count - ? WHERE id = ?", (gone, audience_id))

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

    def handle(self, c: Any, event: Any) -> None:
        handler = getattr(self, "on_" + type(event).__qualname__.replace(".", "_"), None)
        if handler is not None:
            handler(c, event)

    def _contact_fields(self, fields: dict[str, Any]) -> dict[str, Any]:
        return {k: fields.get(k) for k in ("firstName", "lastName", "fullName", "primaryEmail")}

    def on_Contact_Created(self, c: Any, e: Any) -> None:
        at = format_instant(e.timestamp)
        f = self._contact_fields(e.fields)
        self.ex(
            c,
            "INSERT INTO dir_contacts (id, organization_id, primary_phone, first_name, last_name, full_name, "
            "primary_email, data, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
            (str(e.originator_id), str(e.organization_id), e.phone, f["firstName"], f["lastName"], f["fullName"],
             f["primaryEmail"], dumps(e.fields), at, at),
        )

    def _merge_contact(self, c: Any, e: Any, fields: dict[str, Any], deleted_at: str | None) -> None:
        rows = self.fetch(c, "SELECT data FROM dir_contacts WHERE id = ?", (str(e.originator_id),))
        if not rows:
            return
        data = loads(rows[0]["data"]) or {}
        attrs = {**data.get("customAttributes", {}), **fields.get("customAttributes", {})}
        attrs = {k: v for k, v in attrs.items() if v is not None}  # null clears a value
        data.update({k: v for k, v in fields.items() if k != "customAttributes"})
        data["customAttributes"] = attrs
        f = self._contact_fields(data)
        self.ex(
            c,
            "UPDATE dir_contacts SET first_name = ?, last_name = ?, full_name = ?, primary_email = ?, data = ?, "
            "updated_at = ?, deleted_at = ? WHERE id = ?",
            (f["firstName"], f["lastName"], f["fullName"], f["primaryEmail"], dumps(data),
             format_instant(e.timestamp), deleted_at, str(e.originator_id)),
        )

    def on_Contact_Updated(self, c: Any, e: Any) -> None:
        self._merge_contact(c, e, e.fields, None)

    def on_Contact_Restored(self, c: Any, e: Any) -> None:
        self._merge_contact(c, e, e.fields, None)

    def on_Contact_Deleted(self, c: Any, e: Any) -> None:
        self.ex(c, "UPDATE dir_contacts SET deleted_at = ?, updated_at = ? WHERE id = ?",
                (format_instant(e.timestamp), format_instant(e.timestamp), str(e.originator_id)))

    def on_Audience_Created(self, c: Any, e: Any) -> None:
        at = format_instant(e.timestamp)
        self.ex(
            c,
            "INSERT INTO dir_audiences (id, organization_id, name, description, contact_count, created_at, updated_at, deleted) "
            "VALUES (?, ?, ?, ?, 0, ?, ?, 0) ON CONFLICT (id) DO NOTHING",
            (str(e.originator_id), str(e.organization_id), e.name, e.description, at, at),
        )

    def on_Audience_Renamed(self, c: Any, e: Any) -> None:
        self.ex(c, "UPDATE dir_audiences SET name = ?, description = ?, updated_at = ? WHERE id = ?",
                (e.name, e.description, format_instant(e.timestamp), str(e.originator_id)))

    def on_Audience_MembersAdded(self, c: Any, e: Any) -> None:
        self._join(c, str(e.originator_id), e.contact_ids, format_instant(e.timestamp) or "")
        self.ex(c, "UPDATE dir_audiences SET updated_at = ? WHERE id = ?", (format_instant(e.timestamp), str(e.originator_id)))

    def on_Audience_MembersRemoved(self, c: Any, e: Any) -> None:
        self._leave(c, str(e.originator_id), e.contact_ids)
        self.ex(c, "UPDATE dir_audiences SET updated_at = ? WHERE id = ?", (format_instant(e.timestamp), str(e.originator_id)))

    def on_Contact_JoinedAudience(self, c: Any, e: Any) -> None:
        self._join(c, e.audience_id, [str(e.originator_id)], format_instant(e.timestamp) or "")

    def on_Contact_ExitedAudience(self, c: Any, e: Any) -> None:
        self._leave(c, e.audience_id, [str(e.originator_id)])

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
            "INSERT INTO dir_programs (id, organization_id, name, status, created_at, updated_at) "
            "VALUES (?, ?, ?, 'draft', ?, ?) ON CONFLICT (id) DO NOTHING",
            (str(e.originator_id), str(e.organization_id), e.settings.get("name", ""), at, at),
        )

    def _program(self, c: Any, e: Any, **fields: Any) -> None:
        sets = "".join(f", {k} = ?" for k in fields)
        self.ex(c, f"UPDATE dir_programs SET updated_at = ?{sets} WHERE id = ?",
                (format_instant(e.timestamp), *fields.values(), str(e.originator_id)))

    def on_Program_Configured(self, c: Any, e: Any) -> None:
        if "name" in e.changes:
            self._program(c, e, name=e.changes["name"])
        else:
            self._program(c, e)

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
