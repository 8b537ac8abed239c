"""``Idempotency-Key`` on POST: a client may retry a command safely.

The first request with a key runs; its response (status, headers, body) is stored with a
fingerprint of the request (method, path, query and body; JSON bodies canonicalised, so
whitespace and key order do not count). The same key again:

- same request → the stored response, replayed (``Idempotent-Replayed: true``), nothing
  runs a second time;
- another request → 422 ``IdempotencyKeyReused``, naming the difference;
- the first one still running → 409 ``IdempotencyKeyInProgress`` (retry later).

Keys are scoped per organization and API key, stored in the platform's database
(PostgreSQL when GOMOBILE_DATABASE_URL is set, else SQLite in the data dir) so that every
API process sees them and a restart forgets none, and expire after 24 hours. A response
of 5xx is not stored (the command may not have happened: the key can be retried), nor
one larger than 1 MB."""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
from typing import Any

from litestar.concurrency import sync_to_thread

from infrastructure.idempotency_store import IdempotencyStore, StoredResponse
from interfaces.http.security import send_problem

KEY_RE = re.compile(r"^[\x21-\x7e]{1,255}$")
MAX_STORED_BODY = 1 << 20
CHUNK = 64 * 1024


def _fingerprint(scope: Any, body: tempfile.SpooledTemporaryFile[bytes], content_type: str) -> str:
    h = hashlib.sha256()
    h.update(
        f"{scope['method']} {scope['path']}?{scope.get('query_string', b'').decode('latin-1')}\n".encode()
    )
    body.seek(0)
    if "json" in content_type:
        raw = body.read()
        try:
            h.update(
                json.dumps(
                    json.loads(raw or b"null"), sort_keys=True, separators=(",", ":")
                ).encode()
            )
        except ValueError:
            h.update(raw)
    else:
        # A multipart body's boundary is random per attempt in most clients: it must not
        # make a retry look like another request.
        boundary = _boundary(content_type)
        keep = max(len(boundary) - 1, 0)
        tail = b""
        while chunk := body.read(CHUNK):
            tail += chunk
            if boundary:
                tail = tail.replace(boundary, b"--boundary--")
            if keep and len(tail) > keep:
                h.update(tail[:-keep])
                tail = tail[-keep:]
            elif not keep:
                h.update(tail)
                tail = b""
        h.update(tail)
    return h.hexdigest()


def _boundary(content_type: str) -> bytes:
    if "multipart/" not in content_type.lower():
        return b""
    for param in content_type.split(";")[1:]:
        name, _, value = param.strip().partition("=")
        if name.lower() == "boundary" and value:
            return value.strip('"').encode("latin-1")
    return b""


class Idempotency:
    def __init__(self, store: IdempotencyStore, clock: Any) -> None:
        self.store = store
        self.clock = clock

    @classmethod
    def for_container(cls, container: Any) -> Idempotency:
        return cls(IdempotencyStore.for_settings(container.settings), container.clock)

    def _now(self) -> float:
        return float(self.clock.now().timestamp())

    async def handle(
        self, app: Any, scope: Any, receive: Any, send: Any, principal: Any, key: str
    ) -> None:
        key = key.strip()
        if not KEY_RE.match(key):
            await send_problem(scope, send, 400, "VALIDATION_FAILED", "Idempotency-Key must be 1 to 255 visible ASCII characters",
                               fieldErrors={"Idempotency-Key": ["must be 1 to 255 visible ASCII characters"]})  # fmt: skip
            return
        owner = f"{principal.organization_id.hex}:{principal.key_id}"
        body = tempfile.SpooledTemporaryFile(max_size=1 << 20)  # noqa: SIM115 (closed below)
        try:
            disconnected = await self._read_body(receive, body)
            if disconnected:
                return
            content_type = next(
                (
                    v.decode("latin-1")
                    for k, v in scope.get("headers") or []
                    if k.lower() == b"content-type"
                ),
                "",
            )
            fingerprint = await sync_to_thread(_fingerprint, scope, body, content_type)
            verdict, stored = await sync_to_thread(
                self.store.begin, owner, key, fingerprint, self._now()
            )
            if verdict == "replay":
                assert stored is not None
                await self._replay(send, stored)
                return
            if verdict == "mismatch":
                await send_problem(
                    scope, send, 422, "IdempotencyKeyReused",
                    f"Idempotency-Key '{key}' was already used with a different request (method, path or body); "
                    "send a new key for a new request",
                    details={"idempotencyKey": key},
                )  # fmt: skip
                return
            if verdict == "in_progress":
                await send_problem(scope, send, 409, "IdempotencyKeyInProgress",
                                   f"A request with Idempotency-Key '{key}' is still being processed: retry later")  # fmt: skip
                return
            await self._run(app, scope, receive, send, body, owner, key)
        finally:
            body.close()

    @staticmethod
    async def _read_body(receive: Any, body: Any) -> bool:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return True
            body.write(message.get("body", b""))
            if not message.get("more_body", False):
                return False

    async def _run(
        self, app: Any, scope: Any, receive: Any, send: Any, body: Any, owner: str, key: str
    ) -> None:
        total = body.seek(0, 2)
        body.seek(0)
        done = [False]

        async def replay_receive() -> Any:
            if not done[0]:
                chunk = body.read(CHUNK)
                more = body.tell() < total
                done[0] = not more
                return {"type": "http.request", "body": chunk, "more_body": more}
            return await receive()

        status = [0]
        headers: list[tuple[bytes, bytes]] = []
        chunks: list[bytes] = []
        size = [0]

        async def capture(message: Any) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                headers.extend((bytes(k), bytes(v)) for k, v in message.get("headers", []))
            elif message["type"] == "http.response.body":
                part = message.get("body", b"")
                size[0] += len(part)
                if size[0] <= MAX_STORED_BODY:
                    chunks.append(part)
            await send(message)

        stored = False
        try:
            await app(scope, replay_receive, capture)
            if status[0] and status[0] < 500 and size[0] <= MAX_STORED_BODY:
                response = StoredResponse(
                    status[0],
                    [(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers],
                    b"".join(chunks),
                )
                await sync_to_thread(self.store.finish, owner, key, response)
                stored = True
        finally:
            if not stored:
                await sync_to_thread(self.store.abandon, owner, key)

    @staticmethod
    async def _replay(send: Any, stored: StoredResponse) -> None:
        skip = {
            "content-length",
            "x-ratelimit-limit",
            "x-ratelimit-remaining",
            "x-ratelimit-reset",
            "retry-after",
        }
        headers = [
            (k.encode("latin-1"), v.encode("latin-1"))
            for k, v in stored.headers
            if k.lower() not in skip
        ]
        headers += [
            (b"content-length", str(len(stored.body)).encode()),
            (b"idempotent-replayed", b"true"),
        ]
        await send({"type": "http.response.start", "status": stored.status, "headers": headers})
        await send({"type": "http.response.body", "body": stored.body})
