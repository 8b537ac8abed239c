"""The urllib3 client under the Twilio SDK (infrastructure/telephony/twilio/http.py) sends
what the SDK's own requests-based client sends, retries nothing, and gives up on time.

A recording HTTP server on loopback stands for Twilio's API; each test makes the same SDK
calls through both clients and compares what the server received."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from application.ports import TelephonyError
from infrastructure.telephony.twilio.http import PROXY_ENV, PooledHttpClient
from infrastructure.telephony.twilio.provider import TwilioTelephony

SID, TOKEN = "AC" + "1" * 32, "secret-token"
CALL = {"sid": "CA" + "2" * 32, "status": "queued", "account_sid": SID, "to": "+212600000001", "from": "+212500000000"}


class Recorder(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.seen: list[dict[str, Any]] = []
        self.answer: tuple[int, str, bytes] = (201, "application/json; charset=utf-8", json.dumps(CALL).encode())
        self.delay = 0.0
        self.drop = False

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Recorder

    def log_message(self, *args: Any) -> None:
        pass

    def _any(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        self.server.seen.append({
            "method": self.command,
            "path": parts.path,
            "query": parse_qs(parts.query, keep_blank_values=True),
            "body": body,
            "form": parse_qs(body.decode(), keep_blank_values=True) if body and b"{" not in body[:1] else None,
            "headers": {k.lower(): v for k, v in self.headers.items()},
        })  # fmt: skip
        if self.server.drop:  # the connection closes with no answer
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        time.sleep(self.server.delay)
        status, kind, payload = self.server.answer
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_DELETE = _any


class Rewriting:
    """Points either client at the recorder (the SDK always asks for api.twilio.com)."""

    def __init__(self, inner: Any, base: str) -> None:
        self.inner, self.base = inner, base

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def request(self, method: str, url: str, **kwargs: Any) -> Any:
        return self.inner.request(method, url.replace("https://api.twilio.com", self.base), **kwargs)


@pytest.fixture
def server():
    s = Recorder()
    t = threading.Thread(target=s.serve_forever, daemon=True)
    t.start()
    yield s
    s.shutdown()
    s.server_close()


def _comparable(seen: dict[str, Any]) -> dict[str, Any]:
    h = seen["headers"]
    return {
        "method": seen["method"],
        "path": seen["path"],
        "query": seen["query"],
        "form": seen["form"],
        "body": seen["body"] if seen["form"] is None else None,
        "headers": {k: v for k, v in h.items() if k != "host"},
    }


def _create(client: Client) -> Any:
    return client.calls.create(
        to="+212600000001", from_="+212500000000", url="https://example.org/voice/c1/1?x=1&y=é", method="POST",
        status_callback="https://example.org/status/c1/1", status_callback_event=["ringing", "completed"],
        status_callback_method="POST", timeout=30, machine_detection="Enable", async_amd="true",
    )  # fmt: skip


def test_it_sends_what_the_sdk_client_sends(server):
    """A call create (a form with a repeated key and characters to escape), a fetch, a
    list with a query, a delete: byte for byte the same method, path, query, form, Basic
    auth, content type, user agent and accept header as the SDK's own client."""
    results = {}
    for name, inner in (("sdk", TwilioHttpClient(timeout=5)), ("pooled", PooledHttpClient(timeout=5))):
        client = Client(SID, TOKEN, http_client=Rewriting(inner, server.base))
        server.seen.clear()
        call = _create(client)
        assert call.sid == CALL["sid"] and call.status == "queued"
        client.calls(CALL["sid"]).fetch()
        server.answer = (200, "application/json", json.dumps({"calls": [], "meta": {"key": "calls"}}).encode())
        list(client.calls.list(status="completed", to="+212600000001", limit=5))
        server.answer = (204, "application/json", b"")
        assert client.calls(CALL["sid"]).delete() is True
        server.answer = (201, "application/json; charset=utf-8", json.dumps(CALL).encode())
        results[name] = [_comparable(s) for s in server.seen]
    assert len(results["pooled"]) == 4
    assert results["pooled"] == results["sdk"]
    first = results["pooled"][0]
    assert first["form"]["StatusCallbackEvent"] == ["ringing", "completed"]
    assert first["form"]["Url"] == ["https://example.org/voice/c1/1?x=1&y=é"]
    assert first["headers"]["content-type"] == "application/x-www-form-urlencoded"
    assert first["headers"]["authorization"].startswith("Basic ")


def test_a_json_body_and_an_error_answer_read_as_the_sdk_reads_them(server):
    """A JSON body is sent as JSON; an error answer (Twilio's 4xx with its code and
    message) raises the SDK's TwilioRestException from the text this client decoded."""
    pooled = PooledHttpClient(timeout=5)
    server.seen.clear()
    answer = pooled.request("POST", server.base + "/v1/things", data={"a": [1, 2], "b": "é"},
                            headers={"Content-Type": "application/json"}, auth=(SID, TOKEN))  # fmt: skip
    assert answer.status_code == 201 and answer.text == json.dumps(CALL)
    assert json.loads(server.seen[0]["body"]) == {"a": [1, 2], "b": "é"}
    assert server.seen[0]["headers"]["content-type"] == "application/json"

    server.answer = (400, "application/json", json.dumps({"code": 21211, "message": "Invalid 'To' Phone Number", "status": 400}).encode())
    client = Client(SID, TOKEN, http_client=Rewriting(pooled, server.base))
    with pytest.raises(TwilioRestException) as raised:
        _create(client)
    assert raised.value.code == 21211 and raised.value.status == 400


def test_a_create_is_never_sent_twice_and_a_failure_is_a_telephony_error(server):
    """No retries: a connection that closes with no answer, or an answer slower than the
    timeout, is one request on the server and a TelephonyError for the dialer (the
    reconciler asks Twilio what became of the call; it is never created twice)."""
    telephony = TwilioTelephony(Client(SID, TOKEN, http_client=Rewriting(PooledHttpClient(timeout=0.5), server.base)), "https://example.org")
    dial = {"to": "+212600000001", "from_": "+212500000000", "call_id": "c1", "attempt": 1, "timeout_seconds": 30, "machine_detection": False}
    server.drop = True
    server.seen.clear()
    with pytest.raises(TelephonyError):
        telephony.place_call(**dial)
    assert len(server.seen) == 1
    server.drop = False
    server.delay = 1.5
    server.seen.clear()
    started = time.monotonic()
    with pytest.raises(TelephonyError):
        telephony.place_call(**dial)
    assert time.monotonic() - started < 1.4
    assert len(server.seen) == 1
    server.delay = 0.0
    assert telephony.place_call(**dial) == CALL["sid"]  # the pool recovers


def test_connections_are_kept_alive_and_shared_by_threads(server, monkeypatch):
    """Sequential requests reuse one connection; threads at once each get one from the
    pool (it is thread-safe), and every answer goes to the request that asked."""
    import urllib3.connection

    opened: list[int] = []
    new_conn = urllib3.connection.HTTPConnection._new_conn

    def counting(self):  # a spy: the real connection is made
        opened.append(self.port)
        return new_conn(self)

    monkeypatch.setattr(urllib3.connection.HTTPConnection, "_new_conn", counting)
    pooled = PooledHttpClient(timeout=5)
    for _ in range(5):
        assert pooled.request("GET", server.base + "/ok").status_code == 201
    assert len(opened) == 1
    errors: list[BaseException] = []

    def many(n: int) -> None:
        try:
            for i in range(20):
                got = pooled.request("GET", server.base + f"/echo/{n}/{i}", params={"n": n, "i": i})
                assert got.status_code == 201
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=many, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert 1 < len(opened) <= 7
    paths = {(s["path"], s["query"]["n"][0], s["query"]["i"][0]) for s in server.seen if s["path"].startswith("/echo/")}
    assert len(paths) == 120 and all(p.endswith(f"/{n}/{i}") for p, n, i in paths)


def test_bootstrap_keeps_the_sdk_client_when_a_proxy_is_configured(monkeypatch):
    """requests reads HTTPS_PROXY, NO_PROXY and netrc from the environment; this client
    does not, so with a proxy named there the SDK's own client is used."""
    from infrastructure import bootstrap

    for name in PROXY_ENV:
        monkeypatch.delenv(name, raising=False)

    def http_client_of(**env: str) -> Any:
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        container = bootstrap.Container.__new__(bootstrap.Container)
        container.settings = type("S", (), {"telephony": "twilio", "twilio_account_sid": SID, "twilio_auth_token": TOKEN,
                                            "public_base_url": "https://example.org"})()  # fmt: skip
        container._telephony = None
        return container.telephony.client.http_client

    assert type(http_client_of()) is PooledHttpClient
    assert type(http_client_of(HTTPS_PROXY="http://proxy.example:3128")) is TwilioHttpClient
