"""Run one ``gomobile`` process under yappi (CPU clock, every thread) and save its
profile after ``YAPPI_SECONDS`` (default 50) to ``$YAPPI_OUT.pstat``: what py-spy's
sampling cannot show (where a thread pool's CPU goes, call counts). Used by
bench/common.py when ``GOMOBILE_BENCH_YAPPI`` names a folder, for the roles listed in
``GOMOBILE_BENCH_YAPPI_ROLES`` (default ``api``)::

    GOMOBILE_BENCH_YAPPI=/tmp/prof GOMOBILE_BENCH_YAPPI_ROLES=api,worker \\
        python -m bench.calls_e2e --contacts 1000 --workers 1
    python -c "import pstats; pstats.Stats('/tmp/prof/api.pstat').sort_stats('cumulative').print_stats(40)"

The profiled process runs several times slower: its figures are not the benchmark's.
"""

from __future__ import annotations

import os
import sys
import threading

import yappi


def _save() -> None:
    yappi.stop()
    yappi.get_func_stats().save(os.environ["YAPPI_OUT"] + ".pstat", type="pstat")


def main() -> None:
    sys.argv = ["interfaces.cli", *sys.argv[1:]]
    yappi.set_clock_type("cpu")
    yappi.start(builtins=False)
    threading.Timer(float(os.environ.get("YAPPI_SECONDS", "50")), _save).start()
    from interfaces.cli import main as cli

    cli()


if __name__ == "__main__":
    main()
