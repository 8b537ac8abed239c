"""Fixtures: a real sandbox server and a real (signature-validating) webhook receiver."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

import pytest
import uvicorn
from litestar import Litestar, Request, Response, route
from twilio.request_validator import RequestValidator
from twilio.rest import Client
from twilio.twiml.voice_response import Gather, VoiceResponse

from infrastructure.telephony.sandbox import SandboxConfig, SandboxHttpClient, run_sandbox_in_thread

ACCOUNT_SID = "AC" + "0" * 31 + "1"
AUTH_TOKEN = "sandbox-test-token"


@dataclass
class Received:
    path: str
    method: str
    url: str
    params: dict[str, str]
    signature: str | None
    valid: bool
    at: float = field(default_factory=time.monotonic)


class Receiver:
    """A tiny platform stand-in: validates X-Twilio-Signature and answers TwiML."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.lock = threading.Lock()
        self.validator = RequestValidator(AUTH_TOKEN)
        self.server: uvicorn.Server | None = None
        self.port = 0

    def by_sid(self, call_sid: str, path: str | None = None) -> list[Received]:
        with self.lock:
            return [
                r
                for r in self.requests
                if r.params.get("CallSid") == call_sid and (path is None or r.path == path)
            ]

    def statuses(self, call_sid: str) -> list[str]:
        return [r.params["CallStatus"] for r in self.by_sid(call_sid, "/status")]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def build_app(self) -> Litestar:
        receiver = self

        @route("/{kind:str}", http_method=["GET", "POST"])
        async def hook(request: Request, kind: str) -> Response:
            url = str(request.url)
            if request.method == "POST":
                body = (await request.body()).decode()
                params = dict(parse_qsl(body, keep_blank_values=True))
                valid = receiver.validator.validate(
                    url, params, request.headers.get("x-twilio-signature", "")
                )
            else:
                params = dict(request.query_params)
                valid = receiver.validator.validate(
                    url, {}, request.headers.get("x-twilio-signature", "")
                )
            with receiver.lock:
                receiver.requests.append(
                    Received(
                        "/" + kind,
                        request.method,
                        url,
                        params,
                        request.headers.get("x-twilio-signature"),
                        valid,
                    )
                )
            if not valid:
                return Response(content="bad signature", status_code=403)
            return await receiver.answer(kind, params)

        return Litestar(route_handlers=[hook])

    async def answer(self, kind: str, params: dict[str, str]) -> Response:
        r = VoiceResponse()
        if kind in ("status", "amd"):
            return Response(content="", status_code=204)
        if kind == "voice":
            r.say("Hello, this is your appointment reminder.")
            g = Gather(num_digits=1, action="/gather", method="POST", timeout=3)
            g.say("Press 1 to confirm, 2 to cancel.")
            r.append(g)
            r.say("We did not receive your answer.")
            r.hangup()
        elif kind == "gather":
            r.say(f"You pressed {params.get('Digits')}. Goodbye.")
            r.hangup()
        elif kind == "menu":  # Gather then Redirect back to itself (relative URL)
            g = Gather(num_digits=1, action="gather")
            g.say("Menu.")
            r.append(g)
            r.redirect("menu")
        elif kind == "loop":
            r.redirect("loop")
        elif kind == "slow":
            await asyncio.sleep(1.0)
            r.say("Too late.")
        elif kind == "other":
            r.say("Redirected by the API.")
            r.hangup()
        elif kind == "garbage":
            return Response(content="<html>oops</html>", media_type="text/html", status_code=200)
        elif kind == "error":
            return Response(content="boom", status_code=500)
        elif kind == "record":
            r.say("Leave a message.")
            r.record(action="/recorded", max_length=30)
        elif kind == "dial":
            r.dial("+15550001111", action="/dialed")
        elif kind in ("recorded", "dialed"):
            r.say("Thanks.")
        elif kind == "long":
            for _ in range(30):
                r.pause(length=2)
        else:
            return Response(content="not found", status_code=404)
        return Response(content=str(r), media_type="application/xml", status_code=200)

    def start(self) -> Receiver:
        self.server = uvicorn.Server(
            uvicorn.Config(self.build_app(), host="127.0.0.1", port=0, log_level="warning")
        )
        thread = threading.Thread(target=self.server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "receiver did not start"
            time.sleep(0.01)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        self.thread = thread
        return self

    def stop(self) -> None:
        assert self.server is not None
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="session")
def receiver():
    rec = Receiver().start()
    yield rec
    rec.stop()


@pytest.fixture(scope="session")
def sandbox():
    config = SandboxConfig(
        account_sid=ACCOUNT_SID,
        auth_token=AUTH_TOKEN,
        time_scale=0.01,
        webhook_timeout=2.0,
    )
    handle = run_sandbox_in_thread(config, "127.0.0.1", 0)
    yield handle
    handle.stop()


@pytest.fixture(scope="session")
def client(sandbox):
    return Client(ACCOUNT_SID, AUTH_TOKEN, http_client=SandboxHttpClient(sandbox.base_url, timeout=10))


_numbers = itertools.count(100)


@pytest.fixture
def number():
    """A fresh number ending in the given digit (attempt counters are per number)."""

    def make(last_digit: str) -> str:
        return f"+1555{next(_numbers):06d}{last_digit}"

    return make
