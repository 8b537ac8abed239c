"""CSV contact import: map columns to fields, check every row, write the good ones in
batches (one save per batch), report every rejected row with its line number and reason.

A bad row never stops the good ones; the file is read as a stream; importing the same
file twice records nothing the second time (contacts are matched on their number and
unchanged contacts record no event).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

from application.contacts import Contacts, Prepared
from application.csv_source import read_rows
from domain.audience import Audience
from domain.contact import STANDARD_FIELDS
from domain.contact_schema import ContactSchema
from domain.errors import ValidationError
from domain.organization import Organization

BATCH_SIZE = 1000  # rows a save (500: 5-10% slower end to end, bench/contacts_import.py)
TARGETS = ("primaryPhone", *STANDARD_FIELDS, "timezone")
ALIASES = {
    "phone": "primaryPhone", "phonenumber": "primaryPhone", "primaryphone": "primaryPhone", "mobile": "primaryPhone",
    "telephone": "primaryPhone", "tel": "primaryPhone", "msisdn": "primaryPhone", "number": "primaryPhone",
    "email": "primaryEmail", "primaryemail": "primaryEmail", "mail": "primaryEmail",
    "firstname": "firstName", "prenom": "firstName", "lastname": "lastName", "nom": "lastName",
    "fullname": "fullName", "name": "fullName", "zipcode": "zip", "postalcode": "zip", "postcode": "zip",
    "timezone": "timezone", "tz": "timezone",
    **{f.lower(): f for f in STANDARD_FIELDS},
}


def _key(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def suggest_mapping(header: list[str], schema: ContactSchema) -> dict[str, str]:
    """A column → field guess from the column names (standard fields and custom attributes)."""
    custom = {}
    for name, a in schema.attributes.items():
        custom[_key(name)] = f"custom.{name}"
        custom[_key(str(a["displayName"]))] = f"custom.{name}"
    out: dict[str, str] = {}
    used: set[str] = set()
    for col in header:
        k = _key(col)
        target = ALIASES.get(k) or custom.get(k) or (custom.get(_key(col[7:])) if k.startswith("custom") else None)
        if target and target not in used:
            out[col] = target
            used.add(target)
    return out


def check_mapping(mapping: Any, header: list[str], schema: ContactSchema) -> dict[int, str]:
    """Column index → target field; a ValidationError names each bad entry."""
    if not isinstance(mapping, dict):
        raise ValidationError.single("mappings", "must be an object {column: field}")
    errors: dict[str, list[str]] = {}
    out: dict[int, str] = {}
    seen: dict[str, str] = {}
    positions = {h: i for i, h in reversed(list(enumerate(header)))}
    for col, target in mapping.items():
        key = f"mappings.{col}"
        if col not in positions:
            errors[key] = [f"no column '{col}' in the file (columns: {', '.join(header)})"]
            continue
        if target in (None, "", "ignore"):
            continue
        if not isinstance(target, str):
            errors[key] = ["must name a field"]
            continue
        if target.startswith(("custom.", "customAttributes.")):
            name = target.split(".", 1)[1]
            if name not in schema.attributes:
                errors[key] = [f"no custom attribute named '{name}' (define it at /api/custom-attributes)"]
                continue
            target = f"custom.{name}"
        elif target not in TARGETS:
            errors[key] = [f"unknown field '{target}' (fields: {', '.join(TARGETS)}, custom.NAME)"]
            continue
        if target in seen:
            errors[key] = [f"'{target}' is already mapped from column '{seen[target]}'"]
            continue
        seen[target] = col
        out[positions[col]] = target
    if "primaryPhone" not in seen and not errors:
        errors["mappings"] = ["one column must map to primaryPhone"]
    if errors:
        first = next(iter(errors))
        raise ValidationError(f"Invalid column mapping: {first}: {errors[first][0]}", errors)
    return out


@dataclass
class RowResult:
    line: int
    status: str  # created | updated | restored | unchanged | valid | rejected
    reason: str | None = None
    contact_id: str | None = None
    cells: list[str] | None = None


@dataclass
class ImportSummary:
    rows: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    valid: int = 0
    rejected: int = 0
    added_to_audience: int = 0
    header: list[str] = field(default_factory=list)
    mapping: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows, "created": self.created, "updated": self.updated, "unchanged": self.unchanged,
            "valid": self.valid, "rejected": self.rejected, "addedToAudience": self.added_to_audience,
        }


class ContactImporter:
    def __init__(self, contacts: Contacts, org: Organization, batch_size: int = BATCH_SIZE) -> None:
        self.contacts = contacts
        self.org = org
        self.batch_size = batch_size

    def run(
        self,
        source: IO[bytes],
        mapping: dict[str, str] | None = None,
        *,
        audience_id: str | None = None,
        dry_run: bool = False,
        on_row: Callable[[RowResult], None] | None = None,
        on_progress: Callable[[ImportSummary], None] | None = None,
    ) -> ImportSummary:
        """Import (or with ``dry_run`` only check) the CSV in ``source``.

        Raises ValidationError before any row when the file or the mapping cannot work
        (empty file, bad header, no phone column); otherwise every row ends in ``on_row``."""
        org = self.org
        schema = self.contacts.schema(org.id)
        audience: Audience | None = None
        if audience_id is not None:
            audience = self.contacts.app.audience(org.id, audience_id)
            if getattr(audience, "kind", "static") != "static":
                raise ValidationError.single("audienceId", "contacts can only be added to a static audience")
        rows = read_rows(source)
        head = next(rows, None)
        if head is None:
            raise ValidationError.single("file", "the file is empty")
        if head.cells is None:
            raise ValidationError.single("file", f"line {head.line} (the header): {head.error}")
        header = [h.strip() for h in head.cells]
        mapping = mapping if mapping is not None else suggest_mapping(header, schema)
        columns = check_mapping(mapping, header, schema)
        summary = ImportSummary(header=header, mapping={header[i]: t for i, t in columns.items()})
        seen: dict[str, int] = {}  # E.164 → first line (duplicates inside the file)
        pending: list[tuple[int, Prepared, list[str]]] = []
        done: list[RowResult] = []

        def emit(results: list[RowResult]) -> None:
            for r in sorted(results, key=lambda r: r.line):
                if r.status == "rejected":
                    summary.rejected += 1
                else:
                    setattr(summary, "created" if r.status == "restored" else r.status,
                            getattr(summary, "created" if r.status == "restored" else r.status) + 1)
                if on_row is not None:
                    on_row(r)

        def flush() -> None:
            nonlocal audience
            if pending and not dry_run:
                written = self.contacts.write_batch(org, schema, [(line, p) for line, p, _ in pending])
                done.extend(RowResult(line, written.results[line].status, None, written.results[line].contact_id)
                            for line, _, _ in pending)
                if audience is not None:
                    ids = [written.results[line].contact_id for line, _, _ in pending]
                    audience = self.contacts.app.audience(org.id, str(audience.id))
                    new = audience.new_members(ids)
                    if new:
                        audience.add_members(new)
                        self.contacts.app.save(audience)
                        summary.added_to_audience += len(new)
            elif pending:
                done.extend(RowResult(line, "valid") for line, _, _ in pending)
            pending.clear()
            emit(done)
            done.clear()
            if on_progress is not None:
                on_progress(summary)

        width = len(header)
        for row in rows:
            summary.rows += 1
            if row.cells is None:
                done.append(RowResult(row.line, "rejected", row.error))
                continue
            cells = row.cells
            if len(cells) != width:
                done.append(RowResult(row.line, "rejected",
                                      f"has {len(cells)} columns but the header has {width}", cells=cells))
                continue
            data: dict[str, Any] = {}
            attrs: dict[str, Any] = {}
            for i, target in columns.items():
                value = cells[i].strip()
                if not value and target != "primaryPhone":
                    continue  # an empty cell leaves the stored value as it is
                if target.startswith("custom."):
                    attrs[target[7:]] = value
                elif target == "gender":
                    data[target] = value.lower()
                else:
                    data[target] = value
            if attrs:
                data["customAttributes"] = attrs
            try:
                prepared = self.contacts.prepare(org, schema, data, from_text=True)
            except ValidationError as exc:
                reasons = "; ".join(f"{k}: {v[0]}" for k, v in exc.field_errors.items()) or exc.message
                done.append(RowResult(row.line, "rejected", reasons, cells=cells))
                continue
            first = seen.get(prepared.phone)
            if first is not None:
                done.append(RowResult(row.line, "rejected",
                                      f"primaryPhone: {prepared.phone} is already on line {first}", cells=cells))
                continue
            seen[prepared.phone] = row.line
            pending.append((row.line, prepared, cells))
            if len(pending) >= self.batch_size:
                flush()
        flush()
        return summary


REJECTED_HEADER = ["line", "reason"]


def rejected_record(r: RowResult, header: list[str]) -> list[str]:
    """A row of the rejected-rows CSV: its line, why, then the original cells."""
    cells = list(r.cells or [])
    return [str(r.line), r.reason or "", *cells, *([""] * (len(header) - len(cells)))]
