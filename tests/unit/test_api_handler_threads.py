"""The API runs Twilio's callbacks in as many threads as GOMOBILE_API_THREADS says, not
asyncio's default executor's min(32, cores + 4); idle workers poll Redis less often."""

from __future__ import annotations

import asyncio
import threading
from types import SimpleNamespace

import pytest

from infrastructure.settings import Settings
from interfaces.webhooks.twilio import TwilioWebhooks


def test_the_setting_reads_the_environment_and_rejects_nonsense(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GOMOBILE_API_THREADS", raising=False)
    assert Settings().api_threads == 16
    monkeypatch.setenv("GOMOBILE_API_THREADS", "3")
    assert Settings().api_threads == 3
    monkeypatch.setenv("GOMOBILE_API_THREADS", "0")
    with pytest.raises(ValueError, match="GOMOBILE_API_THREADS must be from 1 to 256, not 0"):
        Settings()


def test_the_callbacks_run_in_that_many_threads_at_once() -> None:
    webhooks = TwilioWebhooks(None, SimpleNamespace(settings=SimpleNamespace(api_threads=3)))
    assert webhooks.threads is not None
    inside, release, lock = [0], threading.Event(), threading.Lock()

    def handler() -> str:
        with lock:
            inside[0] += 1
        release.wait(10)
        return threading.current_thread().name

    async def main() -> tuple[int, list[str]]:
        assert webhooks.threads is not None
        running = [asyncio.ensure_future(webhooks.threads.run(handler)) for _ in range(8)]
        await asyncio.sleep(0.3)  # every thread there is has taken a callback by now
        with lock:
            at_once = inside[0]
        release.set()
        return at_once, await asyncio.gather(*running)

    at_once, names = asyncio.run(main())
    webhooks.close()
    assert at_once == 3  # not asyncio's default (6 on 2 cores) nor all 8
    assert all(name.startswith("twilio-webhook") for name in names)


def test_idle_workers_poll_redis_less_often_than_the_embedded_queues(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GOMOBILE_WORKER_POLL_MS", raising=False)
    monkeypatch.delenv("GOMOBILE_REDIS_URL", raising=False)
    assert Settings().worker_poll_ms == 100  # the embedded broker's consumers block, not poll
    assert Settings(redis_url="redis://127.0.0.1:6379/0").worker_poll_ms == 500
    monkeypatch.setenv("GOMOBILE_WORKER_POLL_MS", "250")
    assert Settings(redis_url="redis://127.0.0.1:6379/0").worker_poll_ms == 250
    monkeypatch.setenv("GOMOBILE_WORKER_POLL_MS", "5")
    with pytest.raises(ValueError, match="GOMOBILE_WORKER_POLL_MS must be from 10 to 10000, not 5"):
        Settings()
