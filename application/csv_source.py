"""Reading a CSV file as a stream of rows with their line numbers, without holding the file
in memory. A line that is not UTF-8 or is too long becomes a row error (with its line
number) instead of stopping the file."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

MAX_LINE_BYTES = 64 * 1024


@dataclass
class Row:
    line: int
    cells: list[str] | None = None
    error: str | None = None


def read_rows(binary: IO[bytes], max_line: int = MAX_LINE_BYTES) -> Iterator[Row]:
    """Rows of the CSV in ``binary`` (the header is the first row), or row errors."""
    state: dict[str, int | None] = {"phys": 0, "start": None}
    errors: list[Row] = []

    def lines() -> Iterator[str]:
        while True:
            raw = binary.readline(max_line + 1)
            if not raw:
                return
            state["phys"] = (state["phys"] or 0) + 1
            phys = int(state["phys"] or 0)
            if len(raw) > max_line and not raw.endswith(b"\n"):
                while raw and not raw.endswith(b"\n"):  # skip the rest of the line, chunk by chunk
                    raw = binary.readline(max_line + 1)
                errors.append(Row(phys, error=f"line is longer than {max_line} bytes"))
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                errors.append(Row(phys, error=(
                    f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at column {exc.start + 1}); save the file as UTF-8"
                )))
                continue
            if phys == 1:
                text = text.lstrip("\ufeff")
            if state["start"] is None:
                state["start"] = phys
            yield text

    reader = csv.reader(lines(), strict=False)
    while True:
        state["start"] = None
        try:
            cells = next(reader)
        except StopIteration:
            yield from errors
            return
        except csv.Error as exc:
            yield from errors
            errors.clear()
            yield Row(int(state["start"] or state["phys"] or 0), error=f"malformed CSV: {exc}")
            continue
        yield from errors
        errors.clear()
        if not cells or all(not c.strip() for c in cells):
            continue  # blank lines are not rows
        yield Row(int(state["start"] or state["phys"] or 0), cells=cells)
