"""Do-not-call (suppression) lists: add, remove, import, and the check the dialer makes at
dial time.

The dial-time check reads the number's own stream (current state, not a read model), so a
number suppressed a moment ago is already never dialled:

    Suppressions(campaigns_app).is_suppressed(organization_id, "+212612345678") -> bool
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError

from application.campaigns import CampaignsApp
from domain.errors import NotFound, ValidationError
from domain.organization import Organization
from domain.phone import to_e164
from domain.suppression import Suppression, check_reason, check_source, suppression_id

BATCH = 500


@dataclass
class ImportReport:
    added: int = 0
    unchanged: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)


class Suppressions:
    def __init__(self, app: CampaignsApp) -> None:
        self.app = app

    def _find(self, organization_id: UUID | str, e164: str) -> Suppression | None:
        try:
            s = self.app.repository.get(suppression_id(organization_id, e164))
        except AggregateNotFoundError:
            return None
        return s if isinstance(s, Suppression) else None

    @staticmethod
    def entry_id(organization_id: UUID | str, e164: str) -> UUID:
        """The stream of a number's entry (whether or not it exists)."""
        return suppression_id(organization_id, e164)

    @staticmethod
    def listed(entry: Any) -> bool:
        """Does this entry (its stream read as it stands now, None: no entry) keep the
        number from being called?"""
        return isinstance(entry, Suppression) and entry.active

    def is_suppressed(self, organization_id: UUID | str, e164: str) -> bool:
        """Must this organization not call ``e164`` (an E.164 number)? Current state."""
        s = self._find(organization_id, e164)
        return s is not None and s.active

    def entry(self, org: Organization, phone: Any) -> Suppression:
        s = self._find(org.id, to_e164(phone, org.country, "phone"))
        if s is None or not s.active:
            raise NotFound("Number is not on the do-not-call list")
        return s

    def _stage(self, org_id: UUID, e164: str, reason: str | None, source: str, existing: Suppression | None) -> Suppression | None:
        if existing is None:
            return Suppression(org_id, e164, reason, source)
        if not existing.active:
            existing.readd(reason, source)
            return existing
        return None  # already suppressed: nothing to record

    def add(self, org: Organization, phone: Any, reason: Any = None, source: Any = "api") -> Suppression:
        e164 = to_e164(phone, org.country, "phone")
        reason_, source_ = check_reason(reason), check_source(source)
        for _ in range(3):
            existing = self._find(org.id, e164)
            staged = self._stage(org.id, e164, reason_, source_, existing)
            if staged is None:
                assert existing is not None
                return existing
            try:
                self.app.save(staged)
                return staged
            except IntegrityError:
                continue
        raise ValidationError.single("phone", "is being changed concurrently; try again")

    def remove(self, org: Organization, phone: Any, reason: Any = None) -> Suppression:
        s = self.entry(org, phone)
        s.remove(check_reason(reason))
        self.app.save(s)
        return s

    def import_numbers(
        self, org: Organization, rows: Iterable[tuple[int, Any, Any]], source: str = "import"
    ) -> ImportReport:
        """``rows`` are (line, phone, reason); a bad row is reported and skipped, the good
        ones are saved in batches; numbers already suppressed are left as they are."""
        report = ImportReport()
        batch: dict[str, tuple[int, str | None]] = {}

        def flush() -> None:
            staged = []
            for e164, (_, reason) in batch.items():
                s = self._stage(org.id, e164, reason, source, self._find(org.id, e164))
                if s is None:
                    report.unchanged += 1
                else:
                    staged.append(s)
            if staged:
                self.app.save(*staged)
                report.added += len(staged)
            batch.clear()

        for line, phone, reason in rows:
            try:
                e164 = to_e164(phone, org.country, "phone")
                batch_reason = check_reason(reason)
            except ValidationError as exc:
                report.rejected.append({"line": line, "value": phone, "reason": exc.message})
                continue
            if e164 in batch:
                report.unchanged += 1
                continue
            batch[e164] = (line, batch_reason)
            if len(batch) >= BATCH:
                flush()
        flush()
        return report
