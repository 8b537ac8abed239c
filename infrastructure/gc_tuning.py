"""The garbage collector's settings for the processes that work in batches."""

from __future__ import annotations

import os


def tune_gc() -> None:
    """For the commands that work in batches (an import, a rebuild, the projector's pages
    of events): collect the young generation every 50,000 allocations rather than 700
    (then the older ones every 20 and 10 of those), and leave what start-up made out of
    every collection. They make many short-lived dicts (rows, events): the collector took
    13% of an import's time (50,000 rows: 10.5 s, 9.2 s tuned), and with the projector
    tuned too the import ran at 5,051 rows/s end to end against 4,857 (bench/contacts_import.py).
    The request-serving processes (API, workers, sandbox) keep Python's defaults: tuned, the
    calls benchmark spent 10-25% more CPU a call (bench/calls_e2e.py, two pairs of runs).
    GOMOBILE_GC_THRESHOLD=700 restores the default."""
    import gc

    gc.freeze()
    gc.set_threshold(int(os.environ.get("GOMOBILE_GC_THRESHOLD", "50000")), 20, 10)
