"""Recordings are facts on the Call (``record_stop`` in a flow turn); deleting one is a fact
of its own, on a short stream per recording, so that the hot Call stream is never touched
by an API user and the deletion says who and when."""

from __future__ import annotations

from uuid import NAMESPACE_URL, UUID, uuid5

from domain.base import AuditedAggregate


def deletion_id(recording_id: UUID | str) -> UUID:
    return uuid5(NAMESPACE_URL, f"gomobile:recording-deletion:{recording_id}")


class RecordingDeletion(AuditedAggregate):
    """Recording ``recording_id`` is deleted (soft: its row and file are kept)."""

    @staticmethod
    def create_id(recording_id: str, organization_id: UUID, deleted_by: str) -> UUID:
        return deletion_id(recording_id)

    def __init__(self, recording_id: str, organization_id: UUID, deleted_by: str) -> None:
        self.recording_id = recording_id
        self.organization_id = organization_id
        self.deleted_by = deleted_by
