"""The tamper-evident audit trail on the embedded default (SQLite): a real campaign's
events verify; each tampering with the stored events in SQL (a state updated, a row
deleted, a forged row inserted, two rows' notification ids swapped) is caught by
``gomobile audit verify`` and named; signed exports verify with the published public
key and fail when one byte changes."""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.scenario import run_campaign
from tests.harness import Platform

ROOT = Path(__file__).resolve().parents[2]


def gomobile(
    data_dir: Path, *args: str, database_url: str = ""
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GOMOBILE_DATA_DIR": str(data_dir)}
    env.pop("GOMOBILE_AUDIT_KEY", None)
    if database_url:
        env["GOMOBILE_DATABASE_URL"] = database_url
    else:
        env.pop("GOMOBILE_DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "interfaces.cli", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def verify(data_dir: Path, *args: str, database_url: str = "") -> tuple[int, list[dict[str, Any]]]:
    out = gomobile(data_dir, "audit", "verify", "--json", *args, database_url=database_url)
    assert out.returncode in (0, 1) and out.stdout.startswith("{"), out.stderr
    report = json.loads(out.stdout)
    problems = [p for a in report["applications"] for p in a["problems"]]
    assert report["ok"] == (out.returncode == 0) == (not problems)
    return out.returncode, problems


def named(problems: list[dict[str, Any]]) -> set[tuple[str, str, str | None, int | None]]:
    return {(p["application"], p["problem"], p["originatorId"], p["version"]) for p in problems}


@pytest.fixture(scope="module")
def campaign(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    data = Path(tmp_path_factory.mktemp("audit")) / "var"
    p = Platform(data)
    try:
        org, key = p.new_org()
        other_org, other_key = p.new_org("Other")
        with p.client(key) as client:
            result = run_campaign(client, p.clock.advance, n=10)
        auditor = p.container.campaigns.issue_api_key(uuid.UUID(org), "auditor", "compliance")
        agent = p.container.campaigns.issue_api_key(uuid.UUID(org), "agent", "desk")
        yield {"platform": p, "data": data, "org": org, "key": key, "auditor": auditor, "agent": agent,
               "other_key": other_key, "other_org": other_org, **result}  # fmt: skip
    finally:
        p.close()


def test_signed_exports_verify_with_the_published_key_and_fail_when_a_byte_changes(
    campaign: dict[str, Any], tmp_path: Path
) -> None:
    p: Platform = campaign["platform"]
    eid = campaign["executionId"]
    contact = next(iter(campaign["contacts"]))
    with httpx.Client(base_url=p.base_url, timeout=30) as anonymous:
        published = anonymous.get("/api/audit/public-key")
        assert published.status_code == 200, published.text
        assert anonymous.get("/api/audit/export", params={"executionId": eid}).status_code == 401
    pem = published.json()["publicKey"].encode()
    (tmp_path / "public.pem").write_bytes(pem)

    from application.audit_export import ExportInvalid, verify_export

    with p.client(campaign["auditor"]) as auditor:
        r = auditor.get("/api/audit/export", params={"executionId": eid})
        assert r.status_code == 200, r.text
        doc = r.json()
        payload = verify_export(doc, pem)
        assert payload["subject"] == {"type": "execution", "id": eid}
        apps = {e["application"] for e in payload["events"]}
        assert apps == {"campaigns", "calls"}
        # Every event of the execution's 10 calls is there, with its meta, and chained.
        assert (
            len({e["originatorId"] for e in payload["events"] if e["application"] == "calls"}) == 10
        )
        assert all("meta" in e["event"] for e in payload["events"])
        assert payload["eventsNotChained"] == 0 and payload["chain"]

        c = auditor.get("/api/audit/export", params={"contactId": contact})
        assert c.status_code == 200, c.text
        contact_payload = verify_export(c.json(), pem)
        streams = {(e["application"], e["originatorId"]) for e in contact_payload["events"]}
        assert ("campaigns", contact) in streams and any(a == "calls" for a, _ in streams)
        # The contact was created over HTTP: its event names the key, its role, the request.
        created = next(
            e
            for e in contact_payload["events"]
            if (e["originatorId"], e["version"]) == (contact, 1)
        )
        meta = created["event"]["meta"]
        assert (
            meta["actor"].startswith("apikey:")
            and meta["role"] == "admin"
            and meta["organizationId"] == campaign["org"]
        )
        assert meta["requestId"] and meta["correlationId"]
        assert meta["sourceAddress"] == "127.0.0.1"  # where the command came from
        assert (
            auditor.get(
                "/api/audit/export", params={"contactId": contact, "executionId": eid}
            ).status_code
            == 400
        )
        assert auditor.get("/api/audit/export", params={"executionId": "nope"}).status_code == 400
    with p.client(campaign["key"]) as admin:
        assert admin.get("/api/audit/export", params={"executionId": eid}).status_code == 200
    with p.client(campaign["agent"]) as agent:
        assert agent.get("/api/audit/export", params={"executionId": eid}).status_code == 403
    with p.client(campaign["other_key"]) as other:  # another organization's: not found
        assert other.get("/api/audit/export", params={"executionId": eid}).status_code == 404
        assert other.get("/api/audit/export", params={"contactId": contact}).status_code == 404

    # One byte changed anywhere in the signed payload: the signature no longer holds.
    text = doc["payload"]
    i = text.index('"notificationId":') + len('"notificationId":')
    forged = {**doc, "payload": text[:i] + ("7" if text[i] != "7" else "8") + text[i + 1 :]}
    with pytest.raises(ExportInvalid, match="signature"):
        verify_export(forged, pem)
    sig = bytearray(base64.b64decode(doc["signature"]))
    sig[0] ^= 1
    with pytest.raises(ExportInvalid, match="signature"):
        verify_export({**doc, "signature": base64.b64encode(bytes(sig)).decode()}, pem)

    # The CLI: export, check with the public key; the altered file fails.
    out = gomobile(
        campaign["data"], "audit", "export", "--execution", eid, "--out", str(tmp_path / "x.json")
    )
    assert out.returncode == 0, out.stderr
    good = gomobile(
        campaign["data"],
        "audit",
        "verify-export",
        str(tmp_path / "x.json"),
        "--public-key",
        str(tmp_path / "public.pem"),
    )
    assert good.returncode == 0 and "OK" in good.stdout, good.stdout + good.stderr
    (tmp_path / "bad.json").write_text(json.dumps(forged))
    bad = gomobile(
        campaign["data"],
        "audit",
        "verify-export",
        str(tmp_path / "bad.json"),
        "--public-key",
        str(tmp_path / "public.pem"),
    )
    assert bad.returncode == 1 and "INVALID" in bad.stderr


class SQLiteStore:
    """Tampering by hand with one application's SQLite file, as an intruder would."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def run(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        with closing(sqlite3.connect(self.path, timeout=30)) as db, db:
            return fn(db)

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return self.run(lambda db: db.execute(sql, params).fetchall())


def uuid_of(hex_: str) -> str:
    return str(uuid.UUID(hex_))


def test_each_tampering_with_stored_events_is_caught_and_named(campaign: dict[str, Any]) -> None:
    data: Path = campaign["data"]
    code, problems = verify(data)
    assert (code, problems) == (0, [])
    calls = SQLiteStore(data / "calls.sqlite")
    # Two events of two calls, mid-log (not the last row: SQLite would reuse its id).
    ((a_id, a_orig, a_ver, a_state),) = calls.rows(
        "SELECT rowid, originator_id, originator_version, state FROM stored_events WHERE originator_version = 2 ORDER BY rowid LIMIT 1"
    )
    (b_id, b_orig, b_ver), = calls.rows(
        "SELECT rowid, originator_id, originator_version FROM stored_events WHERE originator_version = 3 AND originator_id <> ? "
        "ORDER BY rowid LIMIT 1", (a_orig,),
    )  # fmt: skip
    a, b = uuid_of(a_orig), uuid_of(b_orig)

    # 1. A state altered.
    calls.run(
        lambda db: db.execute(
            "UPDATE stored_events SET state = ? WHERE rowid = ?", (bytes(a_state) + b" ", a_id)
        )
    )
    code, problems = verify(data)
    assert code == 1 and named(problems) == {("calls", "altered", a, a_ver)}
    calls.run(
        lambda db: db.execute("UPDATE stored_events SET state = ? WHERE rowid = ?", (a_state, a_id))
    )
    assert verify(data) == (0, [])

    # 2. A row deleted.
    row = calls.rows("SELECT rowid, * FROM stored_events WHERE rowid = ?", (a_id,))[0]
    calls.run(lambda db: db.execute("DELETE FROM stored_events WHERE rowid = ?", (a_id,)))
    code, problems = verify(data)
    assert code == 1 and named(problems) == {("calls", "deleted", a, a_ver)}
    calls.run(
        lambda db: db.execute(
            "INSERT INTO stored_events (rowid, originator_id, originator_version, topic, state) VALUES (?, ?, ?, ?, ?)",
            row,
        )
    )
    assert verify(data) == (0, [])

    # 3. A forged row: a copy of another with a new version.
    top = calls.rows(
        "SELECT MAX(originator_version) FROM stored_events WHERE originator_id = ?", (a_orig,)
    )[0][0]
    calls.run(lambda db: db.execute(
        "INSERT INTO stored_events (originator_id, originator_version, topic, state) "
        "SELECT originator_id, ?, topic, state FROM stored_events WHERE rowid = ?", (top + 1, a_id)))  # fmt: skip
    code, problems = verify(data)
    assert code == 1 and named(problems) == {("calls", "inserted", a, top + 1)}
    assert problems[0]["organizationId"] == campaign["org"]
    # Only that organization's chain is affected.
    assert verify(data, "--org", campaign["other_org"]) == (0, [])
    assert verify(data, "--org", campaign["org"])[0] == 1
    calls.run(
        lambda db: db.execute(
            "DELETE FROM stored_events WHERE originator_id = ? AND originator_version = ?",
            (a_orig, top + 1),
        )
    )
    assert verify(data) == (0, [])

    # 4. Two rows reordered (their notification ids swapped).
    def swap(db: sqlite3.Connection) -> None:
        db.execute("UPDATE stored_events SET rowid = -1 WHERE rowid = ?", (a_id,))
        db.execute("UPDATE stored_events SET rowid = ? WHERE rowid = ?", (a_id, b_id))
        db.execute("UPDATE stored_events SET rowid = ? WHERE rowid = -1", (b_id,))

    calls.run(swap)
    code, problems = verify(data)
    assert code == 1 and named(problems) == {
        ("calls", "reordered", a, a_ver),
        ("calls", "reordered", b, b_ver),
    }
    calls.run(swap)
    assert verify(data) == (0, [])

    # 5. The campaigns log too: a contact's stored event altered.
    campaigns = SQLiteStore(data / "campaigns.sqlite")
    contact = next(iter(campaign["contacts"]))
    ((c_id, c_state),) = campaigns.rows(
        "SELECT rowid, state FROM stored_events WHERE originator_id = ? AND originator_version = 1",
        (contact.replace("-", ""),),
    )
    campaigns.run(
        lambda db: db.execute(
            "UPDATE stored_events SET state = ? WHERE rowid = ?",
            (bytes(c_state).replace(b"C", b"K", 1), c_id),
        )
    )
    code, problems = verify(data)
    assert code == 1 and named(problems) == {("campaigns", "altered", contact, 1)}
    campaigns.run(
        lambda db: db.execute("UPDATE stored_events SET state = ? WHERE rowid = ?", (c_state, c_id))
    )
    assert verify(data) == (0, [])
