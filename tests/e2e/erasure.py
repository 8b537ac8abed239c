"""Erasing a contact end to end (issue 7, crypto-shredding), shared by the embedded
(SQLite) and the PostgreSQL runs: contacts called through the sandbox, two of them
erased (one done, one waiting for its retry), then every API answer, export, read model
and the stored events searched for their numbers and names; every read model rebuilt
and searched again; the audit chain verified; the number re-created."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

from application.audit_export import verify_export
from tests.e2e.scenario import FLOW
from tests.harness import Platform, wait_for

DONE = "+212698765434"  # the sandbox's callee 4: answers, presses 1
RETRYING = "+212698765431"  # callee 1: no answer (a retry waits 5 minutes)
KEEPER = "+212698765435"  # not erased
SECRETS_DONE = ("698765434", "Zoubida", "Quenneville", "zq@example.org", "ACCT-998877")
SECRETS_RETRYING = ("698765431", "Yannick", "Oyelaran")


def run(
    p: Platform,
    stored_events: Callable[[], bytes],
    read_models: Callable[[], str],
    gomobile: Callable[..., Any],
) -> dict[str, Any]:
    """``stored_events``: every events table's bytes; ``read_models``: every read-model row
    as text; ``gomobile``: runs the CLI against the platform's store."""
    org, key = p.new_org("Erasure Org")
    other_org, other_key = p.new_org("Other Org")
    manager = p.container.campaigns.issue_api_key(uuid.UUID(org), "manager", "ops")
    agent = p.container.campaigns.issue_api_key(uuid.UUID(org), "agent", "desk")
    auditor = p.container.campaigns.issue_api_key(uuid.UUID(org), "auditor", "compliance")
    with p.client(key) as client:
        r = client.post("/api/custom-attributes", json={"displayName": "Account Code", "type": "text"})
        assert r.status_code == 201, r.text
        ids = {}
        for phone, first, last, extra in (
            (DONE, "Zoubida", "Quenneville", {"primaryEmail": "zq@example.org", "customAttributes": {"account_code": "ACCT-998877"}}),
            (RETRYING, "Yannick", "Oyelaran", {}),
            (KEEPER, "Keeper", "Person", {}),
        ):
            r = client.post("/api/contact", json={"firstName": first, "lastName": last, "primaryPhone": phone, **extra})
            assert r.status_code == 201, r.text
            ids[phone] = r.json()["id"]
        audience = client.post("/api/audience", json={"name": "Erasure", "description": "three"}).json()
        assert client.post(f"/api/audience/{audience['id']}/add-contacts", json={"contacts": list(ids.values())}).status_code == 200
        flow = client.post("/api/flows", json=FLOW)
        assert flow.status_code == 201, flow.text
        program = client.post("/api/programs", json={
            "name": "Erasure calls", "audienceId": audience["id"], "flowId": flow.json()["id"],
            "startAt": "2025-01-20T09:00:00Z", "didPool": ["+212500000001"],
            "retryStrategy": {"type": "fixed_delay", "delayMinutes": 5, "maxRetries": 1},
        })  # fmt: skip
        assert program.status_code == 201, program.text
        eid = client.post(f"/api/programs/{program.json()['id']}/launch").json()["executionId"]

        def execution() -> dict[str, Any]:
            return client.get(f"/api/program-executions/{eid}").json()  # type: ignore[no-any-return]

        def two_done_one_waiting() -> bool:
            e = execution()
            return bool(e["contactsCompleted"] == 2 and e["contactsPending"] == 1 and e["contactsInProgress"] == 0)

        wait_for(two_done_one_waiting, timeout=60, what="two calls done, one waiting for its retry")
        # the contact's history is its own read model: it catches up with the counters, not with them
        history = wait_for(
            lambda: client.get(f"/api/contact/{ids[DONE]}/calls").json()["data"],
            until=lambda d: len(d) == 1 and d[0]["outcome"] is not None, what="the call's outcome in the history",
        )
        before = history[0]
        assert before["outcome"] == "completed", before
        assert before["call"]["to"] == DONE, before

        # -- who may erase, and what --------------------------------------------------------
        for k, needs in ((manager, "contacts:erase"), (agent, "contacts:erase"), (auditor, "contacts:write")):
            with p.client(k) as other:
                refused = other.delete(f"/api/contact/{ids[DONE]}", params={"erase": "true"})
                assert refused.status_code == 403, refused.text
                assert refused.json()["details"]["permission"] == needs, refused.text
        assert client.delete(f"/api/contact/{uuid.uuid4()}", params={"erase": "true"}).status_code == 404
        with p.client(other_key) as stranger:
            assert stranger.delete(f"/api/contact/{ids[DONE]}", params={"erase": "true"}).status_code == 404

        # -- erase ------------------------------------------------------------------------------
        erased = client.delete(f"/api/contact/{ids[DONE]}", params={"erase": "true"}, headers={"X-Request-Id": "erase-req-1"})
        assert erased.status_code == 200, erased.text
        body = erased.json()
        assert body["id"] == ids[DONE] and body["erasedAt"] and body["deletedAt"]
        assert not any(s in erased.text for s in SECRETS_DONE)
        again = client.delete(f"/api/contact/{ids[DONE]}", params={"erase": "true"})
        assert again.status_code == 200 and again.json()["erasedAt"] == body["erasedAt"]  # idempotent
        r = client.delete(f"/api/contact/{ids[RETRYING]}", params={"erase": "true"})
        assert r.status_code == 200, r.text

        # the retry of the erased contact is skipped, never dialled
        p.clock.advance(5 * 60 + 1)
        def completed() -> dict[str, Any] | None:
            e = execution()
            return e if e["status"] == "completed" else None

        final = wait_for(completed, timeout=60, what="completion")
        assert (final["contactsCompleted"], final["contactsFailed"], final["contactsSkipped"]) == (2, 0, 1), final
        assert [c.to for c in p.sandbox.sandbox.calls.values()].count(RETRYING) == 1  # dialled once, before

        def check_everything(when: str) -> None:
            for cid, secrets in ((ids[DONE], SECRETS_DONE), (ids[RETRYING], SECRETS_RETRYING)):
                assert client.get(f"/api/contact/{cid}").status_code == 404, when
                texts = []
                history = client.get(f"/api/contact/{cid}/history")
                assert history.status_code == 200, history.text
                entries = history.json()["data"]
                kinds = [h["type"] for h in entries]
                erasure = entries[-1]
                assert erasure["meta"]["actor"].startswith("apikey:") and erasure["meta"]["role"] == "admin", erasure
                assert erasure["meta"]["requestId"] and erasure["meta"]["sourceAddress"], erasure
                assert kinds.count("Erased") == 1, (when, kinds)
                texts.append(history.text)
                calls = client.get(f"/api/contact/{cid}/calls")
                assert calls.status_code == 200, calls.text
                rows = calls.json()["data"]
                assert rows and all(r["call"]["to"] in ("", None) for r in rows), (when, rows)
                texts.append(calls.text)
                texts.append(client.get(f"/api/contact/{cid}/calls/export").text)
                for job in {r["jobId"] for r in rows}:
                    texts.append(client.get(f"/api/call-report/{job}").text)
                signed = client.get("/api/audit/export", params={"contactId": cid})
                assert signed.status_code == 200, signed.text
                payload = verify_export(signed.json(), client.get("/api/audit/public-key").json()["publicKey"].encode())
                assert any(e["event"].get("type") == "Contact.Erased" for e in payload["events"]), when
                texts.append(signed.text)
                for text in texts:
                    for s in secrets:
                        assert s not in text, (when, s, text[:2000])
            listed = client.get("/api/contact", params={"limit": 100}).json()
            assert [c["primaryPhone"] for c in listed["data"]] == [KEEPER], (when, listed)
            assert client.get("/api/contact", params={"search": "Zoubida"}).json()["meta"]["total"] == 0
            export = client.get(f"/api/program-execution/{eid}/report/calls/export")
            assert export.status_code == 200 and KEEPER in export.text, when
            report_calls = client.get(f"/api/program-execution/{eid}/report/calls", params={"limit": 100}).text
            feed = client.get("/api/events", params={"limit": 500}).text
            for text in (export.text, report_calls, feed):
                for s in SECRETS_DONE + SECRETS_RETRYING:
                    assert s not in text, (when, s)
            # the facts stay: the done call's outcome, dates, duration and path
            done = client.get(f"/api/contact/{ids[DONE]}/calls").json()["data"][0]
            facts = ("createdAt", "dialedAt", "answeredAt", "terminatedAt", "durationMs", "answeredBy", "from")
            assert done["outcome"] == "completed" and done["flowExecution"]["flowName"] == "Survey", when
            assert {k: done["call"][k] for k in facts} == {k: before["call"][k] for k in facts}, when
            report = client.get(f"/api/call-report/call/{done['callId']}").json()
            path = [(s["nodeId"], s["outputPath"]) for s in report["flowExecution"]["executionPath"]]
            assert path == [("dial", "onAnswer"), ("greet", "onComplete"), ("menu", "branches.1"), ("thanks", "onComplete"), ("done", None)], (when, path)
            retried = client.get(f"/api/contact/{ids[RETRYING]}/calls").json()["data"]
            assert [(r["attempt"], r["outcome"]) for r in sorted(retried, key=lambda r: r["attempt"])] == [(1, "no_answer"), (2, "skipped")], (when, retried)
            rows_text = read_models()
            for s in SECRETS_DONE + SECRETS_RETRYING:
                assert s not in rows_text, (when, s)
            assert "698765435" in rows_text  # the keeper is still there (the search works)

        check_everything("after the erasure")
        raw = stored_events()
        for s in SECRETS_DONE + SECRETS_RETRYING + ("698765435", "Keeper"):
            assert s.encode() not in raw, s  # nobody's personal data is stored in clear

        # -- every read model rebuilt from the events --------------------------------------------
        for r_ in p.container.runners:
            r_.stop()
        names = list(p.container.views)
        for name in names:
            out = gomobile("projections", "rebuild", name)
            assert out.returncode == 0, (name, out.stderr)
        for name in names:
            view = p.container.views[name]
            runner = p.container.runner(name)
            assert all(v == 0 for v in runner.lag().values()), (name, runner.lag())
            del view
        check_everything("after rebuilding every read model")

        # -- the audit chain still verifies: nothing was rewritten --------------------------------
        out = gomobile("audit", "verify", "--json")
        assert out.returncode == 0, out.stdout + out.stderr
        assert json.loads(out.stdout)["ok"] is True

        # -- the same number again: a new contact life under a new key ----------------------------
        back = client.post("/api/contact", json={"primaryPhone": DONE, "firstName": "Nouvelle"})
        assert back.status_code == 201, back.text
        assert back.json()["id"] == ids[DONE] and back.json()["primaryPhone"] == DONE
        got = client.get(f"/api/contact/{ids[DONE]}").json()
        assert (got["firstName"], got["lastName"], got["primaryPhone"]) == ("Nouvelle", None, DONE)
        history = client.get(f"/api/contact/{ids[DONE]}/history").text
        assert "Nouvelle" in history and "Zoubida" not in history
        assert b"Nouvelle" not in stored_events()
        return {"org": org, "ids": ids, "executionId": eid, "other_org": other_org}
