"""The file-store port: where uploaded audio, dictionary entries and fetched recordings
keep their bytes (a local directory by default; an object store implements the same)."""

from __future__ import annotations

from typing import Protocol


class FileStore(Protocol):
    def put(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key`` (replacing any previous content), atomically."""
        ...

    def get(self, key: str) -> bytes:
        """The bytes stored under ``key``; raises FileNotFoundError."""
        ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None:
        """Forget ``key``; nothing happens if it is absent."""
        ...
