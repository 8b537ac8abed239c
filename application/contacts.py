"""Contact commands: create, update, delete, bulk upsert, custom attribute definitions and
each contact's change history.

Every write goes through ``write_batch``: values are checked against the organization's
contact schema, unchanged contacts record nothing (importing the same data twice changes
nothing), live-audience membership is re-evaluated in the same save (each join or exit
is an event on the contact), and a batch is one ``save`` (one transaction).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError

from application.campaigns import CampaignsApp
from application.concurrent_appends import load_change_save
from application.consent import event_fields as consent_event_fields
from domain import custom_attributes as ca
from domain import rules
from domain.base import now
from domain.contact import Contact, clean_fields, contact_id
from domain.contact_schema import ContactSchema, schema_id
from domain.errors import Conflict, ContactNotFoundError, NotFound, ValidationError
from domain.organization import Organization
from domain.phone import parse_number, timezone_for
from domain.timeparse import format_instant

MAX_UPSERT = 1000


@dataclass
class Prepared:
    """One contact's input, checked: its E.164 number and the fields to record."""

    phone: str
    raw_phone: str
    fields: dict[str, Any]
    id: UUID | None = None  # the contact's id (from the organization and the number)
    number: Any = None  # the parsed number, to derive the time zone without parsing again


@dataclass
class Written:
    contact_id: str
    status: str  # created | updated | restored | unchanged


@dataclass
class BatchResult:
    results: dict[Any, Written] = field(default_factory=dict)

    def count(self, status: str) -> int:
        return sum(1 for w in self.results.values() if w.status == status)


class Contacts:
    def __init__(self, app: CampaignsApp) -> None:
        self.app = app

    # -- schema and values ----------------------------------------------------------------

    def schema(self, organization_id: UUID) -> ContactSchema:
        try:
            s = self.app.repository.get(schema_id(organization_id))
        except AggregateNotFoundError:
            return ContactSchema(organization_id)
        assert isinstance(s, ContactSchema)
        return s

    def prepare(
        self,
        org: Organization,
        schema: ContactSchema,
        data: Any,
        *,
        prefix: str = "",
        partial: bool = False,
        from_text: bool = False,
    ) -> Prepared:
        """Check one contact body; a ValidationError lists every bad field (keys ``prefix + field``)."""
        if not isinstance(data, dict):
            raise ValidationError.single(prefix.rstrip(".") or "body", "must be a JSON object")
        errors: dict[str, list[str]] = {}
        phone = raw = ""
        number = None
        if not partial or "primaryPhone" in data:
            try:
                phone, number = parse_number(data.get("primaryPhone"), org.country)
                raw = str(data.get("primaryPhone"))
            except ValidationError as exc:
                errors.update({prefix + k: v for k, v in exc.field_errors.items()})
        fields: dict[str, Any] = {}
        try:
            fields = clean_fields(data)
        except ValidationError as exc:
            errors.update({prefix + k: v for k, v in exc.field_errors.items()})
        if isinstance(fields.get("customAttributes"), dict):
            values, attr_errors = self.custom_values(org, schema, fields["customAttributes"], from_text)
            fields["customAttributes"] = values
            errors.update({prefix + k: v for k, v in attr_errors.items()})
            if not values:
                del fields["customAttributes"]
        if errors:
            first = next(iter(errors))
            raise ValidationError(f"{first}: {errors[first][0]}", errors)
        return Prepared(phone, raw, fields, contact_id(org.id, phone) if phone else None, number)

    def custom_values(
        self, org: Organization, schema: ContactSchema, raw: dict[str, Any], from_text: bool
    ) -> tuple[dict[str, Any], dict[str, list[str]]]:
        values: dict[str, Any] = {}
        errors: dict[str, list[str]] = {}
        types = schema.types()
        for name, value in raw.items():
            key = f"customAttributes.{name}"
            type_ = types.get(name)
            if type_ is None:
                errors[key] = [f"no custom attribute named '{name}' (define it at /api/custom-attributes)"]
                continue
            try:
                values[name] = ca.coerce(type_, value, from_text=from_text, region=org.country)
            except ValueError as exc:
                errors[key] = [f"{type_} value {exc}" if not str(exc).startswith("'") else f"{exc} ({type_})"]
        return values, errors

    # -- writing ------------------------------------------------------------------------

    def _load(self, ids: Sequence[UUID]) -> dict[UUID, Contact]:
        """The existing contacts among ``ids``, read in one query per thousand."""
        found = self.app.load_many(list(ids))
        return {k: v for k, v in found.items() if isinstance(v, Contact)}

    def write_batch(
        self,
        org: Organization,
        schema: ContactSchema,
        items: Iterable[tuple[Any, Prepared]],
        *,
        conflict_on_existing: bool = False,
    ) -> BatchResult:
        """Create or update each contact (matched on its number) in one save.

        Items sharing a number apply in order to one contact."""
        batch = list(items)
        for _ in range(3):
            try:
                return self._write(org, schema, batch, conflict_on_existing)
            except IntegrityError:
                # Someone wrote one of these contacts meanwhile: reload and decide again.
                continue
        return self._write(org, schema, batch, conflict_on_existing)

    def _write(
        self, org: Organization, schema: ContactSchema, batch: list[tuple[Any, Prepared]],
        conflict_on_existing: bool,
    ) -> BatchResult:
        for _, p in batch:
            if p.id is None:
                p.id = contact_id(org.id, p.phone)
        existing = self._load([p.id for _, p in batch if p.id is not None])
        touched: dict[UUID, Contact] = {}
        result = BatchResult()
        for key, p in batch:
            cid = p.id
            assert cid is not None
            contact = touched.get(cid) or existing.get(cid)
            if contact is None:
                fields = dict(p.fields)
                if "timezone" not in fields:
                    tz = timezone_for(p.phone, org.country, org.timezone, p.number)
                    if tz:
                        fields["timezone"] = tz
                contact = Contact(org.id, p.phone, p.raw_phone, fields)
                status = "created"
            elif getattr(contact, "erased", False):  # the number again after an erasure: a new life, a new key
                fields = dict(p.fields)
                if "timezone" not in fields:
                    tz = timezone_for(p.phone, org.country, org.timezone, p.number)
                    if tz:
                        fields["timezone"] = tz
                contact.recreate(org.id, p.phone, p.raw_phone, fields)
                status = "created"
            elif contact.deleted_at is not None:
                contact.restore(p.fields)
                status = "restored"
            else:
                if conflict_on_existing:
                    raise Conflict("Phone number already exists", field="primaryPhone", contactId=str(cid))
                changes = contact.changes(p.fields)
                if changes:
                    contact.update(changes)
                status = "updated" if changes else "unchanged"
            touched[cid] = contact
            result.results[key] = Written(str(cid), status)
        for contact in touched.values():
            self.reconcile(contact, schema)
        pending = [c for c in touched.values() if _has_pending(c)]
        if pending:
            self.app.save(*pending)
            # A live audience whose rules were saved after this batch read the schema
            # may have computed its first members before these contacts were stored:
            # decide again against the rules as they are now (nothing recorded if same).
            current = self.schema(org.id)
            if current.segments != schema.segments:
                for contact in touched.values():
                    self.reconcile(contact, current)
                again = [c for c in touched.values() if _has_pending(c)]
                if again:
                    self.app.save(*again)
        return result

    def reconcile(self, contact: Contact, schema: ContactSchema) -> None:
        """Record a join or an exit for each live audience whose verdict changed."""
        types = schema.types()
        doc = contact.document()
        for audience_id, tree in schema.segments.items():
            match = contact.deleted_at is None and rules.matches(tree, doc, types)
            if match and audience_id not in contact.live_audiences:
                contact.join_audience(audience_id)
            elif not match and audience_id in contact.live_audiences:
                contact.exit_audience(audience_id)
        for audience_id in sorted(contact.live_audiences - set(schema.segments)):
            contact.exit_audience(audience_id)

    # -- the documented commands ----------------------------------------------------------

    def create(self, org: Organization, data: Any) -> Contact:
        schema = self.schema(org.id)
        p = self.prepare(org, schema, data)
        self.write_batch(org, schema, [(0, p)], conflict_on_existing=True)
        return self.get(org.id, contact_id(org.id, p.phone))

    def get(self, org_id: UUID, id_: UUID | str) -> Contact:
        return self.app.contact(org_id, id_)

    def update(self, org: Organization, id_: str, data: Any) -> Contact:
        """Change the given fields (``primaryPhone`` cannot change). A concurrent write to the
        contact is retried on its new version, unless If-Match named a version (412)."""
        self.get(org.id, id_)  # 404 first: another organization's id is not a 400
        schema = self.schema(org.id)
        p = self.prepare(org, schema, data, partial=True)

        def update(contact: Contact) -> None:
            if p.phone and p.phone != contact.phone:
                raise ValidationError.single(
                    "primaryPhone", "cannot be changed: a contact is identified by its number"
                )
            changes = contact.changes(p.fields)
            if changes:
                contact.update(changes)
            self.reconcile(contact, schema)

        return load_change_save(self.app, lambda: self.get(org.id, id_), update, "contact")

    def delete(self, org_id: UUID, id_: str) -> Contact:
        """Soft delete (leaves its live audiences). Retried like ``update``; deleted meanwhile: 404."""
        schema = self.schema(org_id)

        def delete(contact: Contact) -> None:
            contact.delete()
            self.reconcile(contact, schema)

        return load_change_save(self.app, lambda: self.get(org_id, id_), delete, "contact")

    def upsert(self, org: Organization, body: Any) -> BatchResult:
        """``{"data": [contact, ...]}``, at most 1,000, matched on the phone number; all
        or nothing: one bad item is a 400 naming ``data[i].field``."""
        items = body.get("data") if isinstance(body, dict) else None
        if not isinstance(items, list) or not items or len(items) > MAX_UPSERT:
            raise ValidationError.single("data", f"must be a list of 1 to {MAX_UPSERT} contacts")
        schema = self.schema(org.id)
        prepared: list[tuple[Any, Prepared]] = []
        errors: dict[str, list[str]] = {}
        for i, item in enumerate(items):
            try:
                prepared.append((i, self.prepare(org, schema, item, prefix=f"data[{i}].")))
            except ValidationError as exc:
                errors.update(exc.field_errors)
        if errors:
            first = next(iter(errors))
            raise ValidationError(f"{len(errors)} invalid field(s); first: {first}: {errors[first][0]}", errors)
        return self.write_batch(org, schema, prepared)

    # -- history ---------------------------------------------------------------------------

    def history(self, org_id: UUID, id_: str) -> list[dict[str, Any]]:
        """Every recorded change of the contact, oldest first, with who made it."""
        try:
            cid = UUID(str(id_))
            events = list(self.app.repository.event_store.get(cid))
        except ValueError:
            raise ContactNotFoundError("Contact not found") from None
        if not events or getattr(events[0], "organization_id", None) != org_id:
            raise ContactNotFoundError("Contact not found")
        out = []
        for e in events:
            kind = type(e).__qualname__.rsplit(".", 1)[-1]
            if kind in ("Created", "Recreated"):
                changes: dict[str, Any] = {"primaryPhone": e.phone, **e.fields}
            elif hasattr(e, "fields"):
                changes = dict(e.fields)
            elif hasattr(e, "audience_id"):
                changes = {"audienceId": e.audience_id}
            else:
                changes = consent_event_fields(e)  # consent and opt-out events; {} for others
            meta = dict(getattr(e, "meta", {}) or {})
            out.append({
                "version": e.originator_version,
                "type": kind,
                "occurredAt": format_instant(e.timestamp),
                "actor": meta.get("actor"),
                "meta": meta,
                "changes": changes,
            })
        return out

    # -- custom attribute definitions ------------------------------------------------------

    def attributes(self, org_id: UUID) -> list[dict[str, Any]]:
        return [attribute_dto(org_id, a) for a in self.schema(org_id).attributes.values()]

    def attribute(self, org_id: UUID, id_: str) -> dict[str, Any]:
        a = self.schema(org_id).by_id(str(id_))
        if a is None:
            raise NotFound("Custom attribute not found")
        return attribute_dto(org_id, a)

    def define_attribute(self, org_id: UUID, data: Any) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise ValidationError.single("body", "must be a JSON object")
        display = data.get("displayName")
        if not isinstance(display, str) or not 1 <= len(display.strip()) <= 100:
            raise ValidationError.single("displayName", "must be a string of 1 to 100 characters")
        type_ = ca.check_type(data.get("type"))
        description = _description(data.get("description"))
        name = data.get("name") or ca.slug_of(display)
        if not isinstance(name, str) or not ca.NAME_RE.match(name):
            raise ValidationError.single(
                "name", "must be a slug: a lower-case letter, then letters, digits or '_' (at most 64)"
            )
        schema = self.schema(org_id)
        if name in schema.attributes:
            raise Conflict(f"A custom attribute named '{name}' already exists", field="name")
        if len(schema.attributes) >= ca.MAX_ATTRIBUTES:
            raise Conflict(f"An organization can define at most {ca.MAX_ATTRIBUTES} custom attributes")
        schema.define_attribute(name, display.strip(), description, type_, _now_iso())
        self.app.save(schema)
        return attribute_dto(org_id, schema.attributes[name])

    def describe_attribute(self, org_id: UUID, id_: str, data: Any) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise ValidationError.single("body", "must be a JSON object")
        for immutable in ("type", "name"):
            if immutable in data:
                raise ValidationError.single(immutable, "cannot be changed; only the description can")
        schema = self.schema(org_id)
        a = schema.by_id(str(id_))
        if a is None:
            raise NotFound("Custom attribute not found")
        schema.describe_attribute(a["name"], _description(data.get("description")), _now_iso())
        self.app.save(schema)
        return attribute_dto(org_id, schema.attributes[a["name"]])

    def remove_attribute(self, org_id: UUID, id_: str) -> dict[str, Any]:
        schema = self.schema(org_id)
        a = schema.by_id(str(id_))
        if a is None:
            raise NotFound("Custom attribute not found")
        used = [aid for aid, tree in schema.segments.items() if f"custom.{a['name']}" in rules.fields_of(tree)]
        if used:
            raise Conflict(
                f"Custom attribute '{a['name']}' is used by the rules of live audience(s) {', '.join(used)}",
                audienceIds=used,
            )
        dto = attribute_dto(org_id, a)
        schema.remove_attribute(a["name"])
        self.app.save(schema)
        return dto


def attribute_dto(org_id: UUID, a: dict[str, Any]) -> dict[str, Any]:
    return {"organizationId": str(org_id), **a}


def _description(value: Any) -> str | None:
    if value is not None and (not isinstance(value, str) or len(value) > 256):
        raise ValidationError.single("description", "must be a string of at most 256 characters")
    return value  # type: ignore[no-any-return]


def _now_iso() -> str:
    return format_instant(now()) or ""


def _has_pending(aggregate: Any) -> bool:
    return bool(getattr(aggregate, "_pending_events", None))
