"""interfaces/http/handoff.py: blocking calls from the event loop to a fixed set of threads."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time

import pytest

from interfaces.http.handoff import HandOff

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


def test_results_errors_and_the_callers_context_come_back() -> None:
    pool = HandOff(2, "t")

    def work(x: int) -> tuple[int, str, str]:
        return x * 2, request_id.get(), threading.current_thread().name

    def boom() -> None:
        raise KeyError("a bug")

    async def main() -> None:
        async def one(i: int) -> tuple[int, str, str]:
            request_id.set(f"req-{i}")  # each task its own context, as each request
            return await pool.run(work, i)

        results = await asyncio.gather(*(one(i) for i in range(20)))
        assert [r[0] for r in results] == [i * 2 for i in range(20)]
        assert [r[1] for r in results] == [f"req-{i}" for i in range(20)]
        assert {r[2] for r in results} <= {"t-0", "t-1"}
        with pytest.raises(KeyError, match="a bug"):
            await pool.run(boom)
        value, rid, _ = await pool.run(work, 1)
        assert (value, rid) == (2, "-")  # the tasks' ids stayed in their own contexts

    asyncio.run(main())
    pool.close()
    assert not any(t.name.startswith("t-") for t in threading.enumerate())


def test_no_more_than_its_threads_run_at_once() -> None:
    pool = HandOff(3, "bound")
    inside, lock, release = [0], threading.Lock(), threading.Event()

    def block() -> None:
        with lock:
            inside[0] += 1
        release.wait(10)

    async def main() -> int:
        running = [asyncio.ensure_future(pool.run(block)) for _ in range(8)]
        await asyncio.sleep(0.3)
        with lock:
            at_once = inside[0]
        release.set()
        await asyncio.gather(*running)
        return at_once

    assert asyncio.run(main()) == 3
    pool.close()


def test_a_caller_that_stops_waiting_does_not_stop_the_call() -> None:
    pool = HandOff(1, "cancel")
    finished = threading.Event()

    def slow() -> str:
        time.sleep(0.2)
        finished.set()
        return "done"

    async def main() -> str:
        task = asyncio.ensure_future(pool.run(slow))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return await pool.run(lambda: "next")  # the thread is not lost

    assert asyncio.run(main()) == "next"
    assert finished.is_set()
    pool.close()


def test_closed_means_closed_and_sizes_are_checked() -> None:
    pool = HandOff(1, "closed")
    pool.close()
    with pytest.raises(RuntimeError, match="closed is closed"):
        asyncio.run(pool.run(lambda: None))
    with pytest.raises(ValueError, match="at least one thread, not 0"):
        HandOff(0)


def test_close_waits_once_for_all_its_threads_not_once_each() -> None:
    pool = HandOff(4, "stuck")
    release = threading.Event()

    async def main() -> None:
        for _ in range(4):
            asyncio.ensure_future(pool.run(release.wait, 5))
        await asyncio.sleep(0.2)  # all four threads hold a call that will not end soon

    asyncio.run(main())
    started = time.monotonic()
    pool.close(timeout=0.5)
    assert time.monotonic() - started < 1.5  # 0.5 s in all, not 0.5 s a thread
    release.set()
