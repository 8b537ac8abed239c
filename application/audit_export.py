"""Signed audit exports (issue 7): the stored events of a contact or an execution, decoded
and as stored, with the audit-chain rows that cover them, signed with the platform's
Ed25519 key so that a third party holding the published public key can check them.

The file (JSON)::

    {"format": "gomobile-audit-export/1", "algorithm": "Ed25519",
     "publicKeyFingerprint": sha256(raw 32-byte public key) hex,
     "payload": "<a JSON document, as text>",
     "signature": base64(Ed25519 signature of the payload's UTF-8 bytes)}

The signature covers the payload's exact bytes (no canonical JSON to agree on). To
verify: check the signature; parse the payload; for every event, base64-decode
``state`` and check that ``sha256(topic + "\\n" + state)`` equals its ``sha256`` and the
chain entry of the same (application, originatorId, version, notificationId); each
chain row's ``entries`` hex is 64 bytes per entry: originator id (16), version (int64,
big endian), notification id (int64), sha256 (32), as listed beside it. The chain
hashes are HMACs under the platform's secret key: ``gomobile audit verify`` checks them
on the platform; the export carries them so that a later export or a verify run can
be compared with this one.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import struct
from collections.abc import Iterable, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Protocol
from uuid import UUID

FORMAT = "gomobile-audit-export/1"
ENTRY = struct.Struct(">16sqq32s")


class ExportInvalid(Exception):
    """The export does not verify; the message says why."""


# -- keys --------------------------------------------------------------------------------


def new_private_key_pem() -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _private_key(pem: bytes) -> Any:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise TypeError("the audit signing key must be an Ed25519 private key (PEM)")
    return key


def _public_key(pem: bytes) -> Any:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    key = serialization.load_pem_public_key(pem)
    if not isinstance(key, Ed25519PublicKey):
        raise ExportInvalid("the public key is not an Ed25519 key")
    return key


def _raw(public_key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return bytes(
        public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )


def public_key_pem(private_pem: bytes) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return bytes(
        _private_key(private_pem)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def fingerprint(public_pem: bytes) -> str:
    return hashlib.sha256(_raw(_public_key(public_pem))).hexdigest()


# -- building ------------------------------------------------------------------------------


class StoredEventRow(Protocol):
    notification_id: int
    originator_id: UUID
    version: int
    topic: str
    state: bytes


class ChainRowLike(Protocol):
    org: UUID
    seq: int
    first_id: int
    entries: bytes
    chain_hash: bytes


class AuditSource(Protocol):
    """One application's stored events and chain rows (infrastructure.audit's readers)."""

    def stream_events(self, originator_id: UUID) -> Sequence[StoredEventRow]: ...
    def chain_rows_covering(
        self, org: UUID, notification_ids: Sequence[int]
    ) -> Sequence[ChainRowLike]: ...


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (UUID, Decimal)):
        return str(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _jsonable(dataclasses.asdict(value))
    if hasattr(value, "__dict__"):
        return _jsonable(vars(value))
    return str(value)


def decode_event(app: Any, row: StoredEventRow) -> dict[str, Any]:
    """The event as the application reads it (with its ``meta``), as JSON values."""
    from eventsourcing.persistence import StoredEvent

    try:
        event = app.mapper.to_domain_event(
            StoredEvent(row.originator_id, row.version, row.topic, row.state)
        )
    except Exception as exc:  # noqa: BLE001 - an undecodable (e.g. erased or forged) event is still exported as stored
        return {"undecodable": f"{type(exc).__name__}: {exc}"}
    fields = {k: v for k, v in vars(event).items() if not k.startswith("_")}
    return {"type": type(event).__qualname__, **_jsonable(fields)}


def build_export(
    subject: dict[str, str],
    organization_id: UUID,
    streams: Iterable[tuple[str, Any, AuditSource, UUID]],
    private_pem: bytes,
    generated_at: str,
) -> dict[str, Any]:
    """The signed export of ``streams``: (application name, application, its source, stream id)."""
    events_out: list[dict[str, Any]] = []
    chain_out: list[dict[str, Any]] = []
    for application, app, source, originator_id in streams:
        rows = list(source.stream_events(originator_id))
        for r in rows:
            state = bytes(r.state)
            events_out.append({
                "application": application, "originatorId": str(r.originator_id), "version": r.version,
                "notificationId": r.notification_id, "topic": r.topic,
                "sha256": hashlib.sha256(r.topic.encode() + b"\n" + state).hexdigest(),
                "state": base64.b64encode(state).decode(), "event": decode_event(app, r),
            })  # fmt: skip
        for c in source.chain_rows_covering(organization_id, [r.notification_id for r in rows]):
            key = (application, str(c.org), c.seq)
            if any((x["application"], x["organizationId"], x["seq"]) == key for x in chain_out):
                continue
            chain_out.append({
                "application": application, "organizationId": str(c.org), "seq": c.seq,
                "firstNotificationId": c.first_id, "entries": bytes(c.entries).hex(),
                "entryList": [
                    {"originatorId": str(UUID(bytes=o)), "version": v, "notificationId": n, "sha256": d.hex()}
                    for o, v, n, d in ENTRY.iter_unpack(bytes(c.entries))
                ],
                "chainHash": bytes(c.chain_hash).hex(),
            })  # fmt: skip
    public_pem = public_key_pem(private_pem)
    payload = {
        "format": FORMAT,
        "subject": subject,
        "organizationId": str(organization_id),
        "generatedAt": generated_at,
        "publicKeyFingerprint": fingerprint(public_pem),
        "events": events_out,
        "chain": chain_out,
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    signature = _private_key(private_pem).sign(text.encode())
    return {
        "format": FORMAT,
        "algorithm": "Ed25519",
        "publicKeyFingerprint": payload["publicKeyFingerprint"],
        "payload": text,
        "signature": base64.b64encode(signature).decode(),
    }


# -- verifying ----------------------------------------------------------------------------


def verify_export(document: dict[str, Any] | bytes | str, public_pem: bytes) -> dict[str, Any]:
    """Check a signed export against the platform's public key; return its payload.
    Raises ExportInvalid naming the first thing that does not hold."""
    from cryptography.exceptions import InvalidSignature

    if isinstance(document, (bytes, str)):
        try:
            document = json.loads(document)
        except ValueError as exc:
            raise ExportInvalid(f"not JSON: {exc}") from None
    if (
        not isinstance(document, dict)
        or document.get("format") != FORMAT
        or document.get("algorithm") != "Ed25519"
    ):
        raise ExportInvalid(f"not a {FORMAT} document signed with Ed25519")
    key = _public_key(public_pem)
    expected = hashlib.sha256(_raw(key)).hexdigest()
    if document.get("publicKeyFingerprint") != expected:
        raise ExportInvalid(
            "signed with another key (publicKeyFingerprint differs from the given public key's)"
        )
    payload_text = document.get("payload")
    try:
        signature = base64.b64decode(str(document.get("signature")), validate=True)
        key.verify(signature, str(payload_text).encode())
    except (InvalidSignature, ValueError):
        raise ExportInvalid(
            "the signature does not match the payload (altered, or not signed by this key)"
        ) from None
    payload = json.loads(str(payload_text))
    if payload.get("publicKeyFingerprint") != expected or payload.get("format") != FORMAT:
        raise ExportInvalid("the payload names another key or format")
    chained: dict[tuple[str, str, int, int], str] = {}
    for row in payload["chain"]:
        entries = bytes.fromhex(row["entries"])
        listed = [
            {
                "originatorId": str(UUID(bytes=o)),
                "version": v,
                "notificationId": n,
                "sha256": d.hex(),
            }
            for o, v, n, d in ENTRY.iter_unpack(entries)
        ]
        if listed != row["entryList"]:
            raise ExportInvalid(
                f"chain row {row['seq']} of {row['application']}: entries and their list differ"
            )
        for e in listed:
            chained[(row["application"], e["originatorId"], e["version"], e["notificationId"])] = e[
                "sha256"
            ]
    uncovered = 0
    for ev in payload["events"]:
        state = base64.b64decode(ev["state"])
        digest = hashlib.sha256(ev["topic"].encode() + b"\n" + state).hexdigest()
        where = f"{ev['application']} {ev['originatorId']} v{ev['version']}"
        if digest != ev["sha256"]:
            raise ExportInvalid(f"{where}: its stored state does not hash to its sha256")
        found = chained.get(
            (ev["application"], ev["originatorId"], ev["version"], ev["notificationId"])
        )
        if found is None:
            uncovered += 1  # stored before the chain was enabled
        elif found != digest:
            raise ExportInvalid(f"{where}: differs from its chain entry")
    return {**payload, "eventsNotChained": uncovered}
