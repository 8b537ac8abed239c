"""A recorder's memory of each stream's organization stays bounded and keeps the newest.

At 500,000 entries, cleared whole when full, the dispatcher of a million-call launch kept
two such maps (the calls it made, the contacts it read): 486 MB at its peak, against the
launch's bound of 500 MB a process."""

from __future__ import annotations

from uuid import UUID, uuid4

import pytest

from infrastructure import audit
from infrastructure.audit import OriginCache


def test_the_older_half_is_dropped_when_the_cache_is_full(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audit, "ORIGIN_CACHE_SIZE", 100)
    cache, org = OriginCache(), uuid4()
    streams = [uuid4() for _ in range(101)]
    cache.update((s, org) for s in streams[:100])
    assert len(cache) == 100 and all(cache.get(s) == org for s in streams[:100])
    cache.update([(streams[100], org)])  # one past the bound: the newest 50 stay
    assert len(cache) == 50
    assert [s for s in streams if cache.get(s) is None] == streams[:51]
    assert all(cache.get(s) == org for s in streams[51:])


def test_a_million_streams_leave_at_most_the_bound_in_memory() -> None:
    cache, org = OriginCache(), uuid4()
    for i in range(0, 1_000_000, 2_000):  # a dispatcher's batches of a million-call launch
        cache.update((UUID(int=j + 1), org) for j in range(i, i + 2_000))
        assert len(cache) <= audit.ORIGIN_CACHE_SIZE
    assert cache.get(UUID(int=1_000_000)) == org and cache.get(UUID(int=1)) is None
