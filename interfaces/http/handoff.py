"""Blocking calls handed from the event loop to a fixed set of threads, for the hot path
(Twilio's callbacks: three a call, hundreds a second).

``loop.run_in_executor`` (litestar's ``sync_to_thread``) makes a ``concurrent.futures``
future a call, each with its own ``threading.Condition`` and lock, then chains it to an
asyncio future through two more callbacks. Under load that was 12-16% of the API process's
CPU (py-spy, docs/PERFORMANCE.md session 15). Here a call is one tuple on a C queue and one
``call_soon_threadsafe`` back: the asyncio future is resolved in the loop directly.

As with ``sync_to_thread``, the call runs in a copy of the caller's context (the request and
correlation ids the logs and the appended events carry), and a caller that stops waiting
(a client gone) does not stop the call: it runs to its end, its result dropped."""

from __future__ import annotations

import asyncio
import contextvars
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_STOP = object()


def _resolve(future: asyncio.Future[Any], result: Any, failed: bool) -> None:
    if future.cancelled():
        return
    if failed:
        future.set_exception(result)
    else:
        future.set_result(result)


class HandOff:
    """``await hand_off.run(fn, *args)``: ``fn(*args)`` in one of ``threads`` threads (started
    at the first call). ``close()`` lets the threads finish what they hold and end."""

    def __init__(self, threads: int, name: str = "handoff") -> None:
        if threads < 1:
            raise ValueError(f"a hand-off needs at least one thread, not {threads}")
        self.size = threads
        self.name = name
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._closed = False

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        if not self._threads:
            self._start()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put((loop, future, contextvars.copy_context(), fn, args))
        return await future

    def _start(self) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError(f"{self.name} is closed")
            if self._threads:
                return
            for i in range(self.size):
                thread = threading.Thread(target=self._work, name=f"{self.name}-{i}", daemon=True)
                thread.start()
                self._threads.append(thread)

    def _work(self) -> None:
        take = self._queue.get
        while True:
            item = take()
            if item is _STOP:
                return
            loop, future, context, fn, args = item
            try:
                result, failed = context.run(fn, *args), False
            except Exception as exc:  # noqa: BLE001 - handed back to the awaiting coroutine
                result, failed = exc, True
            try:
                loop.call_soon_threadsafe(_resolve, future, result, failed)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                pass

    def close(self, timeout: float = 10.0) -> None:
        """Stop taking calls; wait up to ``timeout`` in all for the threads to finish what
        they hold (they are daemons: one stuck past it does not hold the process)."""
        with self._lock:
            self._closed = True
            threads, self._threads = self._threads, []
        for _ in threads:
            self._queue.put(_STOP)
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
