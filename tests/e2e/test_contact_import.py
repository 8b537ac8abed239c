"""CSV import of contacts, through the ingestion API and the ``gomobile contacts import``
command: every rejected row is reported with its line and reason, the good rows are
stored, and importing the same file twice changes nothing."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Platform, wait_for

ROOT = Path(__file__).resolve().parents[2]

BROKEN = (
    b"Phone,First Name,Balance,VIP\n"
    b"0612000001,Amina,1500,yes\n"
    b"0612000002,Omar,abc,no\n"          # wrong type
    b"12,Bad,1,no\n"                      # bad number
    b"0612000001,Again,1,no\n"            # duplicate inside the file
    b"0612000003,Short\n"                 # missing columns
) + b"0612000004,\xe9t\xe9,1,no\n" + b"0612000005," + b"x" * 70_000 + b",1,no\n" + b"+33612345678,Jean,,\n"


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Any:
    p = Platform(Path(tmp_path_factory.mktemp("import")) / "var", start_dispatcher=False)
    yield p
    p.close()


def _org(platform: Platform) -> tuple[str, Any]:
    org_id, key = platform.new_org()
    client = platform.client(key)
    client.post("/api/custom-attributes", json={"displayName": "Balance", "type": "number"})
    client.post("/api/custom-attributes", json={"displayName": "VIP", "type": "boolean"})
    return org_id, client


def test_ingestion_api_reports_every_bad_row_and_keeps_the_good_ones(platform: Platform) -> None:
    _, client = _org(platform)
    try:
        empty = client.post("/api/contact/ingestion/upload", files={"data": ("e.csv", b"", "text/csv")})
        assert empty.status_code == 400 and "empty" in empty.json()["message"]
        up = client.post("/api/contact/ingestion/upload", files={"data": ("c.csv", BROKEN, "text/csv")})
        assert up.status_code == 201, up.text
        ing = up.json()
        assert ing["columns"] == ["Phone", "First Name", "Balance", "VIP"]
        assert ing["suggestedMapping"] == {"Phone": "primaryPhone", "First Name": "firstName",
                                           "Balance": "custom.balance", "VIP": "custom.vip"}
        bad_map = client.post("/api/contact/ingestion/validate",
                              json={"ingestionId": ing["id"], "mappings": {"Phone": "primaryPhone", "Nope": "city", "VIP": "custom.gold"}})
        assert bad_map.status_code == 400 and set(bad_map.json()["fieldErrors"]) == {"mappings.Nope", "mappings.VIP"}
        mappings = {"Phone": "primaryPhone", "First Name": "firstName", "Balance": "custom.balance", "VIP": "custom.vip"}
        checked = client.post("/api/contact/ingestion/validate", json={"ingestionId": ing["id"], "mappings": mappings})
        assert checked.status_code == 200, checked.text
        assert checked.json()["summary"]["valid"] == 2 and checked.json()["summary"]["rejected"] == 6
        assert client.get("/api/contact", params={"limit": 1}).json()["meta"]["total"] == 0  # validate writes nothing

        done = client.post("/api/contact/ingestion/execute", json={"ingestionId": ing["id"], "mappings": mappings})
        assert done.status_code == 200, done.text
        assert {k: done.json()["summary"][k] for k in ("created", "rejected", "rows")} == {"created": 2, "rejected": 6, "rows": 8}
        rejected = client.get(f"/api/contact/ingestion/{ing['id']}/rows", params={"status": "rejected", "limit": 100}).json()
        reasons = {r["line"]: r["reason"] for r in rejected["data"]}
        assert rejected["meta"]["total"] == 6 and sorted(reasons) == [3, 4, 5, 6, 7, 8]
        assert "customAttributes.balance" in reasons[3] and "'abc' is not a number" in reasons[3]
        assert "primaryPhone" in reasons[4]
        assert "already on line 2" in reasons[5]
        assert "has 2 columns but the header has 4" in reasons[6]
        assert "UTF-8" in reasons[7]
        assert "longer than" in reasons[8]
        page2 = client.get(f"/api/contact/ingestion/{ing['id']}/rows", params={"page": 2, "limit": 5}).json()
        assert [r["line"] for r in page2["data"]] == [7, 8, 9] and page2["meta"]["total"] == 8
        download = client.get(f"/api/contact/ingestion/{ing['id']}/rejected.csv")
        assert download.headers["content-type"].startswith("text/csv")
        lines = list(csv.reader(io.StringIO(download.text)))
        assert lines[0] == ["line", "reason", "Phone", "First Name", "Balance", "VIP"]
        assert [row[0] for row in lines[1:]] == ["3", "4", "5", "6", "7", "8"] and lines[1][2:] == ["0612000002", "Omar", "abc", "no"]
        again = client.post("/api/contact/ingestion/execute", json={"ingestionId": ing["id"]})
        assert again.status_code == 409

        amina = client.get("/api/contact", params={"search": "Amina"})
        wait_for(lambda: client.get("/api/contact", params={"limit": 1}).json()["meta"]["total"] == 2, what="2 contacts")
        got = client.get("/api/contact", params={"search": "Amina"}).json()["data"][0]
        assert got["customAttributes"] == {"balance": 1500, "vip": True} and amina.status_code == 200
    finally:
        client.close()


def test_cli_import_twice_changes_nothing_the_second_time(platform: Platform, tmp_path: Path) -> None:
    org_id, client = _org(platform)
    audience = client.post("/api/audience", json={"name": "Imported"}).json()
    path = tmp_path / "contacts.csv"
    path.write_bytes(BROKEN)
    env = {**os.environ, "GOMOBILE_DATA_DIR": str(platform.settings.data_dir)}
    env.pop("GOMOBILE_DATABASE_URL", None)
    args = [sys.executable, "-m", "interfaces.cli", "contacts", "import", str(path), "--org", org_id,
            "--audience", audience["id"], "--map", "Phone=primaryPhone", "--map", "Balance=custom.balance",
            "--rejected", str(tmp_path / "rejected.csv")]
    first = subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout)
    assert (summary["created"], summary["rejected"], summary["addedToAudience"]) == (2, 6, 2)
    assert "line 3: customAttributes.balance" in first.stderr and "line 6: has 2 columns" in first.stderr
    history_before = platform.container.campaigns.repository.event_store.recorder.max_notification_id()
    second = subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)["unchanged"] == 2 and json.loads(second.stdout)["addedToAudience"] == 0
    assert platform.container.campaigns.repository.event_store.recorder.max_notification_id() == history_before
    assert client.get(f"/api/audience/{audience['id']}").json()["contactCount"] == 2
    bad = subprocess.run([*args[:5], str(tmp_path / "missing.csv"), "--org", org_id], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=120, check=False)
    assert bad.returncode != 0
    client.close()
