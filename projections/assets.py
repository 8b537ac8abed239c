"""Flow assets for listing: audio files (search, sort, usage type, tags, pages),
dictionaries, and which recordings are deleted. Reads by id go to the aggregates (current state); lists come from here."""

from __future__ import annotations

from typing import Any

from domain.timeparse import format_instant
from projections.store import ViewMixin, dumps, loads

SORT_COLUMNS = {"createdAt": "created_at", "title": "title", "durationSeconds": "duration_seconds"}


class AssetsView(ViewMixin):
    DISPATCH_BY_METHOD = True
    TABLES = (
        """CREATE TABLE IF NOT EXISTS asset_audio (
            id TEXT PRIMARY KEY, organization_id TEXT, title TEXT NOT NULL, description TEXT,
            usage_type TEXT NOT NULL, tags TEXT NOT NULL, duration_seconds REAL, info TEXT NOT NULL,
            original_file_name TEXT NOT NULL, file_size INTEGER NOT NULL, uploaded_by TEXT,
            created_at TEXT NOT NULL, updated_at TEXT NOT NULL, deleted INTEGER NOT NULL DEFAULT 0)""",
        "CREATE INDEX IF NOT EXISTS asset_audio_org ON asset_audio (organization_id, deleted, created_at)",
        """CREATE TABLE IF NOT EXISTS asset_dictionaries (
            id TEXT PRIMARY KEY, organization_id TEXT, name TEXT NOT NULL, created_at TEXT NOT NULL,
            deleted INTEGER NOT NULL DEFAULT 0)""",
        """CREATE TABLE IF NOT EXISTS asset_recording_deletions (
            recording_id TEXT PRIMARY KEY, organization_id TEXT NOT NULL, deleted_at TEXT NOT NULL)""",
    )
    DROP = tuple(f"DROP TABLE IF EXISTS {t}" for t in ("asset_audio", "asset_dictionaries", "asset_recording_deletions"))

    # -- queries --------------------------------------------------------------------

    def audio_page(
        self,
        org: str,
        page: int,
        limit: int,
        search: str | None = None,
        sort_by: str = "createdAt",
        sort_order: str = "desc",
        usage_type: str | None = None,
        tags: list[str] | None = None,
    ) -> tuple[list[dict[str, Any]], int]:
        where, params = "organization_id = ? AND deleted = 0", [org]
        if search:
            where += " AND (LOWER(title) LIKE ? OR LOWER(COALESCE(description, '')) LIKE ?)"
            params += [f"%{search.lower()}%"] * 2
        if usage_type:
            where += " AND usage_type = ?"
            params.append(usage_type)
        for tag in tags or []:
            where += " AND tags LIKE ?"
            params.append(f'%{dumps(tag)}%')
        order = f"{SORT_COLUMNS.get(sort_by, 'created_at')} {'ASC' if sort_order == 'asc' else 'DESC'}, id"
        total = self.one(f"SELECT COUNT(*) AS n FROM asset_audio WHERE {where}", params)
        rows = self.rows(f"SELECT * FROM asset_audio WHERE {where} ORDER BY {order} LIMIT ? OFFSET ?", (*params, limit, (page - 1) * limit))
        for r in rows:
            r["tags"], r["info"] = loads(r["tags"]), loads(r["info"])
        return rows, int(total["n"]) if total else 0

    def dictionary_ids(self, org: str) -> list[str]:
        """The organization's dictionaries and the system ones, oldest first."""
        rows = self.rows(
            "SELECT id FROM asset_dictionaries WHERE deleted = 0 AND (organization_id = ? OR organization_id IS NULL) "
            "ORDER BY created_at, id",
            (org,),
        )
        return [r["id"] for r in rows]

    def deleted_recordings(self, org: str) -> set[str]:
        rows = self.rows("SELECT recording_id FROM asset_recording_deletions WHERE organization_id = ?", (org,))
        return {r["recording_id"] for r in rows}

    # -- handlers -------------------------------------------------------------------

    def handle(self, c: Any, event: Any) -> None:
        handler = getattr(self, "on_" + type(event).__qualname__.replace(".", "_"), None)
        if handler is not None:
            handler(c, event)

    def on_AudioFile_Created(self, c: Any, e: Any) -> None:
        at = format_instant(e.timestamp)
        self.ex(
            c,
            "INSERT INTO asset_audio (id, organization_id, title, description, usage_type, tags, duration_seconds, "
            "info, original_file_name, file_size, uploaded_by, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
            (str(e.originator_id), str(e.organization_id) if e.organization_id else None, e.title, e.description,
             e.usage_type, dumps(e.tags), e.info.get("durationSeconds"), dumps(e.info), e.original_file_name,
             e.file_size, e.uploaded_by, at, at),
        )  # fmt: skip

    def on_AudioFile_DetailsChanged(self, c: Any, e: Any) -> None:
        cols = {"title": "title", "description": "description", "usage_type": "usage_type", "tags": "tags"}
        sets = {cols[k]: (dumps(v) if k == "tags" else v) for k, v in e.changes.items() if k in cols}
        sets["updated_at"] = format_instant(e.timestamp)
        assignments = ", ".join(f"{k} = ?" for k in sets)
        self.ex(c, f"UPDATE asset_audio SET {assignments} WHERE id = ?", (*sets.values(), str(e.originator_id)))

    def on_AudioFile_Deleted(self, c: Any, e: Any) -> None:
        self.ex(c, "UPDATE asset_audio SET deleted = 1, updated_at = ? WHERE id = ?", (format_instant(e.timestamp), str(e.originator_id)))

    def on_Dictionary_Created(self, c: Any, e: Any) -> None:
        self.ex(
            c,
            "INSERT INTO asset_dictionaries (id, organization_id, name, created_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (id) DO NOTHING",
            (str(e.originator_id), str(e.organization_id) if e.organization_id else None, e.name, format_instant(e.timestamp)),
        )

    def on_Dictionary_Deleted(self, c: Any, e: Any) -> None:
        self.ex(c, "UPDATE asset_dictionaries SET deleted = 1 WHERE id = ?", (str(e.originator_id),))

    def on_RecordingDeletion_Created(self, c: Any, e: Any) -> None:
        self.ex(
            c,
            "INSERT INTO asset_recording_deletions (recording_id, organization_id, deleted_at) VALUES (?, ?, ?) "
            "ON CONFLICT (recording_id) DO NOTHING",
            (e.recording_id, str(e.organization_id), format_instant(e.timestamp)),
        )
