"""The do-not-call list: add, remove, import and list over HTTP, and the dial-time check
the dialer uses (current state, not the read model)."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from application.suppression import Suppressions
from tests.harness import Platform, wait_for


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Any:
    p = Platform(Path(tmp_path_factory.mktemp("dnc")) / "var", start_dispatcher=False)
    yield p
    p.close()


def test_add_check_remove_and_list(platform: Platform) -> None:
    org_id, key = platform.new_org()
    check = Suppressions(platform.container.campaigns).is_suppressed
    with platform.client(key) as client:
        added = client.post("/api/suppressions", json={"phone": "0612345678", "reason": "asked on the phone"})
        assert added.status_code == 201, added.text
        assert added.json()["phone"] == "+212612345678" and added.json()["source"] == "api"
        assert check(UUID(org_id), "+212612345678")  # at once: no read-model lag at dial time
        assert not check(UUID(org_id), "+212612345679")
        bad = client.post("/api/suppressions", json={"phone": "12", "source": "api"})
        assert bad.status_code == 400 and "phone" in bad.json()["fieldErrors"]
        bad_source = client.post("/api/suppressions", json={"phone": "+212612345679", "source": "crm"})
        assert bad_source.status_code == 400 and "source" in bad_source.json()["fieldErrors"]
        assert client.get("/api/suppressions/+212612345678").json()["reason"] == "asked on the phone"
        removed = client.delete("/api/suppressions/0612345678")
        assert removed.status_code == 200 and removed.json()["active"] is False
        assert not check(org_id, "+212612345678")
        assert client.delete("/api/suppressions/0612345678").status_code == 404
        again = client.post("/api/suppressions", json={"phone": "+212612345678", "source": "opt_out"})
        assert again.json()["active"] and again.json()["source"] == "opt_out"

        csv = "phone,reason\n0612000001,complaint\nnot-a-number,x\n0612000002,\n0612000001,dup\n+212612345678,already\n"
        imported = client.post("/api/suppressions/import", files={"data": ("dnc.csv", csv.encode(), "text/csv")})
        assert imported.status_code == 201, imported.text
        body = imported.json()
        assert (body["added"], body["unchanged"]) == (2, 2)
        assert [(r["line"], "not a phone number" in r["reason"]) for r in body["rejected"]] == [(3, True)]
        listed = wait_for(lambda: (r := client.get("/api/suppressions").json())["meta"]["total"] == 3 and r, what="3 listed")
        assert [e["phone"] for e in listed["data"]] == ["+212612000001", "+212612000002", "+212612345678"]
        assert {e["source"] for e in listed["data"]} == {"import", "opt_out"}
    other_id, other_key = platform.new_org("Other")
    assert not check(other_id, "+212612345678")  # lists are per organization
    with platform.client(other_key) as other:
        assert other.get("/api/suppressions").json()["meta"]["total"] == 0
        assert other.get("/api/suppressions/+212612345678").status_code == 404
