"""Group commit (infrastructure/group_commit.py): saves submitted while a transaction runs
share the next one; each save gets its own ids, or its own error when the shared
transaction fails (the others are written alone, not lost)."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import pytest

from infrastructure.group_commit import GroupCommit


class Conflict(Exception):
    pass


class Store:
    """An append-only log with a unique key per item, like an events table: a
    transaction that repeats a key fails whole."""

    def __init__(self, delay: float = 0.0) -> None:
        self.rows: list[str] = []
        self.transactions: list[list[str]] = []
        self.delay = delay
        self.lock = threading.Lock()

    def append(self, items: Sequence[str]) -> list[int] | None:
        time.sleep(self.delay)  # the round trip: others queue meanwhile
        with self.lock:
            if any(i.startswith("unknown") for i in items):
                return None
            if len(set(items)) < len(items) or any(i in self.rows for i in items):
                raise Conflict(",".join(items))
            start = len(self.rows)
            self.rows.extend(items)
            self.transactions.append(list(items))
            return list(range(start + 1, start + 1 + len(items)))


def _concurrently(group: GroupCommit[str], saves: list[list[str]]) -> list[object]:
    out: list[object] = [None] * len(saves)
    go = threading.Barrier(len(saves))

    def run(n: int) -> None:
        go.wait()
        try:
            out[n] = group.submit(saves[n])
        except Exception as exc:  # noqa: BLE001
            out[n] = exc

    threads = [threading.Thread(target=run, args=(n,)) for n in range(len(saves))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    return out


def test_a_lone_save_goes_at_once_in_its_own_transaction() -> None:
    store = Store()
    group = GroupCommit(store.append)
    assert group.submit(["a", "b"]) == [1, 2]
    assert group.submit(["c"]) == [3]
    assert store.transactions == [["a", "b"], ["c"]]


def test_concurrent_saves_share_transactions_and_each_gets_its_own_ids() -> None:
    store = Store(delay=0.02)
    group = GroupCommit(store.append, max_batch=64)
    saves = [[f"s{n}-0", f"s{n}-1"] if n % 3 == 0 else [f"s{n}-0"] for n in range(30)]
    out = _concurrently(group, saves)
    for items, ids in zip(saves, out, strict=True):
        assert isinstance(ids, list) and [store.rows[i - 1] for i in ids] == items
    assert sorted(store.rows) == sorted(i for s in saves for i in s)
    assert len(store.transactions) < len(saves)  # shared
    assert group.saves == 30 and group.transactions == len(store.transactions)
    assert max(len(t) for t in store.transactions) <= 64


def test_a_batch_never_exceeds_its_size_but_a_larger_save_still_goes_whole() -> None:
    store = Store(delay=0.02)
    group = GroupCommit(store.append, max_batch=4)
    saves = [[f"s{n}"] for n in range(12)] + [[f"big{i}" for i in range(10)]]
    out = _concurrently(group, saves)
    assert all(isinstance(ids, list) for ids in out)
    assert all(len(t) <= 4 for t in store.transactions if not t[0].startswith("big"))
    assert ["big0"] == [t[0] for t in store.transactions if t[0].startswith("big")]


def test_a_conflict_fails_only_the_saves_that_conflict() -> None:
    store = Store(delay=0.02)
    store.rows.append("taken")
    group = GroupCommit(store.append)
    saves = [[f"ok{n}"] for n in range(10)] + [["dup"], ["dup"], ["taken"]]
    out = _concurrently(group, saves)
    assert all(isinstance(ids, list) for ids in out[:10])
    dups = out[10:12]
    assert sum(isinstance(r, Conflict) for r in dups) == 1 and sum(isinstance(r, list) for r in dups) == 1
    assert isinstance(out[12], Conflict)
    assert sorted(store.rows) == sorted(["taken", "dup", *(f"ok{n}" for n in range(10))])


def test_a_save_the_store_cannot_take_gets_none_and_the_others_are_written() -> None:
    store = Store(delay=0.02)
    group = GroupCommit(store.append)
    saves = [[f"ok{n}"] for n in range(6)] + [["unknown-org"]]
    out = _concurrently(group, saves)
    assert out[-1] is None
    assert all(isinstance(ids, list) for ids in out[:-1])
    assert sorted(store.rows) == sorted(f"ok{n}" for n in range(6))


def test_an_interrupted_leader_fails_what_it_did_not_write_and_the_group_goes_on() -> None:
    calls = {"n": 0}

    def append(items: Sequence[str]) -> list[int]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise KeyboardInterrupt
        return list(range(len(items)))

    group = GroupCommit(append)
    with pytest.raises(KeyboardInterrupt):
        group.submit(["a"])
    assert group.submit(["b"]) == [0]  # the group was handed back, not left busy


def test_saves_of_one_stream_never_share_a_transaction_and_a_conflict_costs_few_transactions() -> None:
    store = Store(delay=0.02)
    store.rows.append("taken")
    group = GroupCommit(store.append, key=lambda item: item.split("-")[0])
    # Two saves of stream "x" (the later would conflict for certain) and one save that
    # conflicts with what another process stored: the rest still share transactions.
    saves = [["x-1"], ["x-2"], *([f"s{n}-1"] for n in range(12)), ["taken"]]
    out = _concurrently(group, saves)
    assert isinstance(out[-1], Conflict)
    assert all(isinstance(r, list) for r in out[:-1])
    assert not any("x-1" in t and "x-2" in t for t in store.transactions)
    assert len(store.transactions) < 10
