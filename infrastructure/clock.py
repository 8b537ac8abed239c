"""Clocks: the system clock, and one shifted by an offset that tests control.

The offset clock reads a file holding seconds to add, so several processes (api,
worker, dispatcher) share one test-controlled time without sleeping."""

from __future__ import annotations

import os
import threading
from datetime import UTC, datetime, timedelta


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class OffsetClock:
    def __init__(self, offset_seconds: float = 0.0) -> None:
        self.offset = timedelta(seconds=offset_seconds)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.offset += timedelta(seconds=seconds)


class FileOffsetClock:
    def __init__(self, path: str) -> None:
        self.path = path
        self._mtime = -1
        self._offset = 0.0

    def now(self) -> datetime:
        try:
            mtime = os.stat(self.path).st_mtime_ns
            if mtime != self._mtime:
                with open(self.path) as f:
                    self._offset = float(f.read().strip() or 0)
                self._mtime = mtime
        except (FileNotFoundError, ValueError):
            pass
        return datetime.now(UTC) + timedelta(seconds=self._offset)
