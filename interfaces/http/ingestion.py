"""The contact ingestion API: upload a CSV, validate it with column mappings (incl.
``custom.{name}``), page through the row results, execute the import, download the
rejected rows as CSV.

Uploads and row results are files under ``GOMOBILE_DATA_DIR/ingestions/{org}/{id}``:
the upload is streamed to disk, the row results are written as JSON lines while the
import runs, so neither is held in memory. (With several API processes they need a
shared volume.)
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import uuid
from pathlib import Path
from typing import Any

from litestar import Request, Response, get, post
from litestar.datastructures import UploadFile
from litestar.enums import RequestEncodingType
from litestar.params import Body

from application.csv_source import read_rows
from application.imports import (
    REJECTED_HEADER,
    ContactImporter,
    RowResult,
    rejected_record,
    suggest_mapping,
)
from domain.base import now
from domain.errors import Conflict, NotFound, ValidationError
from domain.timeparse import format_instant
from interfaces.http.common import acting, authenticate, body_object, envelope, in_thread, paging
from interfaces.http.contacts import contacts_of

MAX_UPLOAD_BYTES = 200 * 1024 * 1024


def _c(request: Request[Any, Any, Any]) -> Any:
    return request.app.state.container


def _dir(c: Any, org_id: Any, ingestion_id: str) -> Path:
    try:
        uuid.UUID(ingestion_id)
    except ValueError:
        raise NotFound("Ingestion not found") from None
    path = Path(c.settings.data_dir) / "ingestions" / str(org_id) / ingestion_id
    if not (path / "meta.json").exists():
        raise NotFound("Ingestion not found")
    return path


def _meta(path: Path) -> dict[str, Any]:
    return dict(json.loads((path / "meta.json").read_text()))


def _save_meta(path: Path, meta: dict[str, Any]) -> None:
    tmp = path / "meta.json.tmp"
    tmp.write_text(json.dumps(meta))
    tmp.replace(path / "meta.json")


@post("/api/contact/ingestion/upload", status_code=201)
@in_thread
def upload(request: Request[Any, Any, Any], data: dict[str, Any] = Body(media_type=RequestEncodingType.MULTI_PART)) -> dict[str, Any]:
    """Multipart field ``data``: the CSV file. Answers its columns, a sample and a suggested mapping."""
    c = _c(request)
    who = authenticate(request, c.campaigns)
    upload = data.get("data") if isinstance(data, dict) else None
    if not isinstance(upload, UploadFile):  # a text field, or no file at all
        raise ValidationError.single("data", "must be a file, sent as the multipart/form-data field 'data'")
    ingestion_id = str(uuid.uuid4())
    path = Path(c.settings.data_dir) / "ingestions" / str(who.organization_id) / ingestion_id
    path.mkdir(parents=True)
    size = 0
    with open(path / "upload.csv", "wb") as out:
        while chunk := upload.file.read(1 << 20):
            size += len(chunk)
            if size > MAX_UPLOAD_BYTES:
                shutil.rmtree(path)
                raise ValidationError.single("data", f"the file is larger than {MAX_UPLOAD_BYTES // (1 << 20)} MB")
            out.write(chunk)
    with open(path / "upload.csv", "rb") as f:
        rows = read_rows(f)
        head = next(rows, None)
        sample = [r.cells for r, _ in zip(rows, range(5)) if r.cells is not None]
    if head is None or head.cells is None:
        shutil.rmtree(path)
        raise ValidationError.single("data", "the file is empty" if head is None else f"line 1 (the header): {head.error}")
    columns = [h.strip() for h in head.cells]
    schema = contacts_of(c).schema(who.organization_id)
    meta = {
        "id": ingestion_id,
        "organizationId": str(who.organization_id),
        "filename": upload.filename,
        "size": size,
        "columns": columns,
        "sampleRows": sample,
        "suggestedMapping": suggest_mapping(columns, schema),
        "status": "uploaded",
        "mappings": None,
        "summary": None,
        "createdAt": format_instant(now()),
    }
    _save_meta(path, meta)
    return meta


def _run(request: Request[Any, Any, Any], body: Any, dry_run: bool) -> dict[str, Any]:
    c = _c(request)
    who = authenticate(request, c.campaigns)
    body = body_object(body)
    ingestion_id = body.get("ingestionId")
    if not isinstance(ingestion_id, str):
        raise ValidationError.single("ingestionId", "is required (the id answered by upload)")
    path = _dir(c, who.organization_id, ingestion_id)
    meta = _meta(path)
    if meta["status"] in ("running", "completed") and not dry_run:
        raise Conflict(f"Ingestion is already {meta['status']}")
    mappings = body.get("mappings", meta.get("mappings") or meta["suggestedMapping"])
    if isinstance(mappings, list):  # [{"column": ..., "field": ...}] is accepted too
        mappings = {m.get("column"): m.get("field") for m in mappings if isinstance(m, dict)}
    audience_id = body.get("audienceId")
    if not dry_run:
        meta["status"] = "running"
        _save_meta(path, meta)
    rejected_path = path / "rejected.csv"
    try:
        with open(path / "upload.csv", "rb") as source, open(path / "rows.jsonl", "w") as rows_out, \
                open(rejected_path, "w", newline="", encoding="utf-8") as rejected_out:
            writer = csv.writer(rejected_out)
            writer.writerow([*REJECTED_HEADER, *meta["columns"]])

            def on_row(r: RowResult) -> None:
                rows_out.write(json.dumps({"line": r.line, "status": r.status, "reason": r.reason, "contactId": r.contact_id}) + "\n")
                if r.status == "rejected":
                    writer.writerow(rejected_record(r, meta["columns"]))

            with acting(who, request):
                summary = ContactImporter(contacts_of(c), who.organization).run(
                    source, mappings, audience_id=audience_id, dry_run=dry_run, on_row=on_row
                )
    except Exception:
        meta["status"] = "failed" if not dry_run else meta["status"]
        _save_meta(path, meta)
        raise
    meta["mappings"] = summary.mapping
    meta["summary"] = summary.as_dict()
    meta["status"] = "completed" if not dry_run else "validated"
    _save_meta(path, meta)
    return {**meta, "rowsUrl": f"/api/contact/ingestion/{ingestion_id}/rows",
            "rejectedCsvUrl": f"/api/contact/ingestion/{ingestion_id}/rejected.csv"}


@post("/api/contact/ingestion/validate", status_code=200)
@in_thread
def validate(request: Request[Any, Any, Any], data: Any) -> dict[str, Any]:
    """``{"ingestionId", "mappings": {column: field}}``: check every row, write nothing."""
    return _run(request, data, dry_run=True)


@post("/api/contact/ingestion/execute", status_code=200)
@in_thread
def execute(request: Request[Any, Any, Any], data: Any) -> dict[str, Any]:
    """``{"ingestionId", "mappings"?, "audienceId"?}``: import the good rows."""
    return _run(request, data, dry_run=False)


@get("/api/contact/ingestion/{ingestion_id:str}")
@in_thread
def ingestion(request: Request[Any, Any, Any], ingestion_id: str) -> dict[str, Any]:
    c = _c(request)
    who = authenticate(request, c.campaigns)
    return _meta(_dir(c, who.organization_id, ingestion_id))


@get("/api/contact/ingestion/{ingestion_id:str}/rows")
@in_thread
def ingestion_rows(
    request: Request[Any, Any, Any], ingestion_id: str, page: int | None = None, limit: int | None = None,
    status: str | None = None,
) -> dict[str, Any]:
    """The row results of the last validate or execute, in line order; ``status=rejected`` filters."""
    c = _c(request)
    who = authenticate(request, c.campaigns)
    path = _dir(c, who.organization_id, ingestion_id)
    p, lim = paging(page, limit)
    items: list[dict[str, Any]] = []
    total = 0
    if (path / "rows.jsonl").exists():
        with open(path / "rows.jsonl") as f:
            for line in f:
                row = json.loads(line)
                if status is not None and row["status"] != status:
                    continue
                if (p - 1) * lim <= total < p * lim:
                    items.append(row)
                total += 1
    return envelope(items, p, lim, total)


@get("/api/contact/ingestion/{ingestion_id:str}/rejected.csv")
@in_thread
def rejected_csv(request: Request[Any, Any, Any], ingestion_id: str) -> Response[Any]:
    c = _c(request)
    who = authenticate(request, c.campaigns)
    path = _dir(c, who.organization_id, ingestion_id)
    if not (path / "rejected.csv").exists():
        buf = io.StringIO()
        csv.writer(buf).writerow([*REJECTED_HEADER, *_meta(path)["columns"]])
        content = buf.getvalue()
    else:
        content = (path / "rejected.csv").read_text(encoding="utf-8")
    return Response(content, media_type="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="rejected-{ingestion_id}.csv"'})


INGESTION_HANDLERS = [upload, validate, execute, ingestion, ingestion_rows, rejected_csv]
