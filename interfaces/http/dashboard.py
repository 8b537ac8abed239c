"""The operators' dashboard: server-rendered pages from the same app and read models as
the API. Sign in by pasting an API key (kept in an HttpOnly cookie); executions with
live counters (Server-Sent Events), pause/resume/cancel issuing the same commands as
the API, the flow drawn with how many calls reached each node and the keypress split,
each call's timeline, and an audit search by phone number."""

from __future__ import annotations

import asyncio
import json
from html import escape
from typing import Any
from urllib.parse import quote

from eventsourcing.persistence import IntegrityError
from litestar import Request, Response, get, post
from litestar.concurrency import sync_to_thread
from litestar.response import Redirect, ServerSentEvent

from application.campaigns import Principal
from domain.errors import DomainError, NotFound
from interfaces.http.common import READ_ONLY_ROLES, in_thread
from interfaces.http.executions import attempt_report, call_row_dto
from interfaces.http.reports import (
    breakdown_report,
    node_stats_report,
    outcomes_over_time,
    summary_report,
)

COOKIE = "gm_dashboard_key"
FINAL = ("completed", "stopped", "cancelled")
LIVE_INTERVAL = 0.5  # seconds between two counter checks of one open page

STYLE = """
body{font-family:system-ui,sans-serif;margin:0;color:#1d2430;background:#f6f7f9}
header{background:#1d2430;color:#fff;padding:.6rem 1.2rem;display:flex;gap:1.2rem;align-items:center}
header a{color:#fff;text-decoration:none}header form{margin-left:auto}
main{padding:1.2rem;max-width:1200px}table{border-collapse:collapse;width:100%;background:#fff}
td,th{border-bottom:1px solid #e3e6ea;padding:.35rem .5rem;text-align:left;font-size:.9rem}
.cards{display:flex;gap:.8rem;flex-wrap:wrap;margin:.8rem 0}.card{background:#fff;padding:.6rem 1rem;
border-radius:6px;min-width:7rem;box-shadow:0 1px 2px #0001}.card b{display:block;font-size:1.5rem}
.status{padding:.1rem .5rem;border-radius:4px;background:#e3e6ea}.actions form{display:inline}
button{padding:.35rem .9rem;border-radius:4px;border:1px solid #8893a2;background:#fff;cursor:pointer}
.error{color:#a61b1b}svg text{font-size:11px}
.legend{margin-right:1rem;font-size:.85rem}.legend i{display:inline-block;width:.8rem;height:.8rem;margin-right:.3rem;
vertical-align:middle}#outcomes-chart{background:#fff;padding:.5rem;display:inline-block}
"""


def _c(request: Request[Any, Any, Any]) -> Any:
    return request.app.state.container


def _principal(request: Request[Any, Any, Any]) -> Principal | None:
    key = request.cookies.get(COOKIE)
    return _c(request).campaigns.authenticate(key) if key else None


def _page(title: str, body: str, who: Principal | None = None, status: int = 200) -> Response[Any]:
    nav = ""
    if who is not None:
        nav = (
            '<a href="/dashboard">Executions</a><a href="/dashboard/audit">Audit search</a>'
            f'<span>{escape(who.organization.name)} · {escape(who.role)}</span>'
            '<form method="post" action="/dashboard/logout"><button>Sign out</button></form>'
        )
    html = (
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{escape(title)} · Gomobile</title>"
        f"<style>{STYLE}</style></head><body><header><b>Gomobile</b>{nav}</header><main>{body}</main></body></html>"
    )
    return Response(html, media_type="text/html", status_code=status)


def _login_redirect() -> Response[Any]:
    return Redirect("/dashboard/login", status_code=303)


# -- sign in ------------------------------------------------------------------------------


def _login_form(error: str = "") -> Response[Any]:
    body = (
        "<h1>Sign in</h1><p>Paste an API key of your organization (any role; auditors can only look).</p>"
        + (f'<p class="error" role="alert">{escape(error)}</p>' if error else "")
        + '<form method="post" action="/dashboard/login"><label>API key <input name="apiKey" size="60" '
        'autocomplete="off" required></label> <button type="submit">Sign in</button></form>'
    )
    return _page("Sign in", body, status=401 if error else 200)


@get("/dashboard/login", include_in_schema=False, sync_to_thread=False)
def login_page() -> Response[Any]:
    return _login_form()


@post("/dashboard/login", include_in_schema=False)
async def login(request: Request[Any, Any, Any]) -> Response[Any]:
    form = await request.form()
    key = str(form.get("apiKey") or "").strip()
    who = await sync_to_thread(_c(request).campaigns.authenticate, key) if key else None
    if who is None:
        return _login_form("That API key is not valid (expired, revoked or mistyped).")
    response = Redirect("/dashboard", status_code=303)
    response.set_cookie(COOKIE, key, httponly=True, samesite="strict", path="/dashboard")
    return response


@post("/dashboard/logout", include_in_schema=False, sync_to_thread=False)
def logout() -> Response[Any]:
    response = Redirect("/dashboard/login", status_code=303)
    response.delete_cookie(COOKIE, path="/dashboard")
    return response


# -- executions ---------------------------------------------------------------------------

COUNTERS = (("total", "Contacts"), ("pending", "Pending"), ("in_progress", "Calling"),
            ("completed", "Completed"), ("failed", "Failed"), ("skipped", "Skipped"))  # fmt: skip


@get("/dashboard", include_in_schema=False)
@in_thread
def executions_page(request: Request[Any, Any, Any]) -> Response[Any]:
    who = _principal(request)
    if who is None:
        return _login_redirect()
    c = _c(request)
    rows = c.progress.executions(str(who.organization_id))
    programs = {r["program_id"]: json.loads(r["program"]).get("name") for r in rows}
    lines = "".join(
        f'<tr><td><a href="/dashboard/executions/{r["id"]}">{escape(programs.get(r["program_id"]) or r["id"])}</a></td>'
        f'<td><span class="status">{escape(r["status"])}</span></td>'
        + "".join(f"<td>{r[k]}</td>" for k, _ in COUNTERS)
        + f"<td>{escape(r['created_at'] or '')}</td></tr>"
        for r in rows
    )
    head = "<tr><th>Program</th><th>Status</th>" + "".join(f"<th>{t}</th>" for _, t in COUNTERS) + "<th>Launched</th></tr>"
    body = f"<h1>Executions</h1><table id=executions>{head}{lines}</table>"
    if not rows:
        body += "<p>No execution yet: launch a program through the API.</p>"
    return _page("Executions", body, who)


def _flow_svg(graph: dict[str, Any], stats: dict[str, Any]) -> str:
    """The flow laid out by depth from the start node, each node with its call count."""
    nodes = {n["id"]: n for n in graph.get("nodes") or []}

    def targets(node: dict[str, Any]) -> list[tuple[str, str]]:
        out = []
        for name, value in (node.get("outputs") or {}).items():
            if isinstance(value, str):
                out.append((name, value))
            elif isinstance(value, dict):
                out.extend((f"{name}.{k}", v) for k, v in value.items() if isinstance(v, str))
        return [(n, t) for n, t in out if t in nodes]

    depth: dict[str, int] = {}
    queue = [graph.get("startNodeId")] if graph.get("startNodeId") in nodes else []
    if queue:
        depth[queue[0]] = 0
    while queue:
        node_id = queue.pop(0)
        for _, t in targets(nodes[node_id]):
            if t not in depth:
                depth[t] = depth[node_id] + 1
                queue.append(t)
    for node_id in nodes:
        depth.setdefault(node_id, max(depth.values(), default=-1) + 1)
    layers: dict[int, list[str]] = {}
    for node_id in nodes:
        layers.setdefault(depth[node_id], []).append(node_id)
    w, h, gx, gy = 150, 54, 30, 46
    pos = {nid: (20 + i * (w + gx), 20 + d * (h + gy)) for d, ids in layers.items() for i, nid in enumerate(ids)}
    width = 40 + max((len(ids) for ids in layers.values()), default=1) * (w + gx)
    height = 40 + (max(layers, default=0) + 1) * (h + gy)
    by_id = {n["nodeId"]: n for n in stats.get("nodes", [])}
    parts = [f'<svg id=flow width="{width}" height="{height}" role="img" aria-label="Flow graph">',
             ('<defs><marker id=arrow markerWidth=8 markerHeight=8 refX=8 refY=4 orient=auto>'
             '<path d="M0,0 L8,4 L0,8 z" fill="#8893a2"/></marker></defs>')]  # fmt: skip
    for node_id, node in nodes.items():
        x, y = pos[node_id]
        for name, t in targets(node):
            tx, ty = pos[t]
            parts.append(f'<line x1="{x + w / 2}" y1="{y + h}" x2="{tx + w / 2}" y2="{ty}" stroke="#8893a2" '
                         f'marker-end="url(#arrow)"><title>{escape(name)}</title></line>')  # fmt: skip
    for node_id, node in nodes.items():
        x, y = pos[node_id]
        s = by_id.get(node_id, {})
        label = node.get("label") or node_id
        split = " ".join(f"{escape(d)}:{n}" for d, n in sorted((s.get("dtmfBreakdown") or {}).items()))
        parts.append(
            f'<g class=node data-node="{escape(node_id)}"><rect x="{x}" y="{y}" width="{w}" height="{h}" rx=6 '
            f'fill="#fff" stroke="#1d2430"/><text x="{x + 8}" y="{y + 16}"><tspan font-weight=bold>'
            f'{escape(label[:22])}</tspan> ({escape(node.get("type", ""))})</text>'
            f'<text x="{x + 8}" y="{y + 32}"><tspan class=node-calls>{s.get("uniqueCalls", 0)}</tspan> calls · '
            f'{s.get("percentage", 0)}%</text><text x="{x + 8}" y="{y + 47}" class=dtmf>{split}</text></g>'
        )
    parts.append("</svg>")
    return "".join(parts)


OUTCOME_COLOURS = {
    "completed": "#2e7d32", "voicemail": "#6a1b9a", "no_answer": "#f9a825", "busy": "#ef6c00",
    "rejected": "#8d6e63", "failed": "#c62828", "cancelled": "#9e9e9e",
}  # fmt: skip


def _outcomes_svg(data: dict[str, Any]) -> str:
    """Attempts ended per outcome in each interval of the run, as stacked bars, with a
    legend of the totals (every bar segment says its count on hover)."""
    outcomes, buckets = data["outcomes"], data["buckets"]
    legend = "".join(
        f'<span class=legend><i style="background:{OUTCOME_COLOURS.get(o, "#607d8b")}"></i>{escape(o)} '
        f'<b data-outcome-total="{escape(o)}">{data["totals"][o]}</b></span>'
        for o in outcomes
    )
    w, h, left, bottom, top = 640, 180, 36, 22, 8
    if not buckets:
        return "<div id=outcomes-chart data-buckets=0><p>No call has ended yet.</p></div>"
    peak = max(sum(b["counts"].values()) for b in buckets) or 1
    step = (w - left - 8) / len(buckets)
    bar = max(1.0, min(step * 0.8, 48.0))
    scale = (h - bottom - top) / peak
    parts = [f'<svg width="{w}" height="{h}" role="img" aria-label="Outcomes over time">',
             f'<line x1="{left}" y1="{h - bottom}" x2="{w - 4}" y2="{h - bottom}" stroke="#8893a2"/>',
             f'<text x="{left - 4}" y="{top + 8}" text-anchor=end>{peak}</text>',
             f'<text x="{left - 4}" y="{h - bottom}" text-anchor=end>0</text>']  # fmt: skip
    for i, b in enumerate(buckets):
        x, y = left + i * step + (step - bar) / 2, float(h - bottom)
        label = b["start"][11:19]
        parts.append(f'<g class=bar data-start="{escape(b["start"])}">')
        for o in outcomes:
            n = b["counts"].get(o, 0)
            if not n:
                continue
            y -= n * scale
            parts.append(
                f'<rect class=seg data-outcome="{escape(o)}" data-count="{n}" x="{x:.1f}" y="{y:.1f}" '
                f'width="{bar:.1f}" height="{n * scale:.1f}" fill="{OUTCOME_COLOURS.get(o, "#607d8b")}">'
                f"<title>{label} UTC · {escape(o)}: {n}</title></rect>"
            )
        parts.append("</g>")
    first, last = buckets[0]["start"][11:19], buckets[-1]["start"][11:19]
    parts.append(f'<text x="{left}" y="{h - 6}">{first} UTC</text>')
    parts.append(f'<text x="{w - 4}" y="{h - 6}" text-anchor=end>{last} · {data["bucketSeconds"]} s a bar</text></svg>')
    return f'<div id=outcomes-chart data-buckets="{len(buckets)}"><div>{legend}</div>{"".join(parts)}</div>'


def _live_state(c: Any, who: Principal, execution_id: str, execution: Any = None, nodes: Any = None) -> dict[str, Any]:
    """The counters, call metrics and node counts the page shows and the live stream sends
    (``execution`` and ``nodes``: already read by the caller, not read again)."""
    execution = execution or c.campaigns.execution(who.organization_id, execution_id)
    summary = summary_report(c, who.organization, execution_id, execution=execution)
    nodes = nodes or node_stats_report(c, who.organization, execution_id, execution=execution)
    m = summary["contactMetrics"]
    return {
        "status": summary["status"],
        "effectiveStatus": summary["effectiveStatus"],
        "counters": {
            "total": m["totalContacts"], "pending": m["pending"] + m["queued"] + m["pendingRetry"],
            "in_progress": m["calling"], "completed": m["completed"], "failed": m["failed"], "skipped": m["skipped"],
        },
        "calls": summary["callMetrics"],
        "nodes": {n["nodeId"]: {"uniqueCalls": n["uniqueCalls"], "dtmf": n.get("dtmfBreakdown") or {}} for n in nodes["nodes"]},
    }  # fmt: skip


LIVE_JS = """
const es = new EventSource(location.pathname + '/live');
es.addEventListener('state', (m) => {
  const s = JSON.parse(m.data);
  for (const [k, v] of Object.entries(s.counters)) {
    const el = document.querySelector('[data-counter="' + k + '"]'); if (el) el.textContent = v;
  }
  for (const [k, v] of Object.entries(s.calls)) {
    const el = document.querySelector('[data-call-metric="' + k + '"]'); if (el) el.textContent = v;
  }
  const ended = JSON.stringify(s.calls);
  if (ended !== window.__callMetrics) {  // some call ended: redraw the outcomes chart
    window.__callMetrics = ended;
    fetch(location.pathname + '/chart').then((r) => r.ok ? r.text() : null).then((html) => {
      const chart = document.getElementById('outcomes-chart');
      if (html && chart) chart.outerHTML = html;
    });
  }
  document.getElementById('status').textContent = s.status;
  document.getElementById('effective-status').textContent = s.effectiveStatus;
  for (const [id, n] of Object.entries(s.nodes)) {
    const g = document.querySelector('g.node[data-node="' + CSS.escape(id) + '"]'); if (!g) continue;
    g.querySelector('.node-calls').textContent = n.uniqueCalls;
    g.querySelector('.dtmf').textContent = Object.entries(n.dtmf).sort().map(([d, k]) => d + ':' + k).join(' ');
  }
  document.body.dataset.live = 'on';
});
es.addEventListener('end', () => { es.close(); document.body.dataset.live = 'ended'; });
"""


@get("/dashboard/executions/{execution_id:str}", include_in_schema=False)
@in_thread
def execution_page(request: Request[Any, Any, Any], execution_id: str) -> Response[Any]:
    who = _principal(request)
    if who is None:
        return _login_redirect()
    c = _c(request)
    try:
        execution = c.campaigns.execution(who.organization_id, execution_id)
        stats = node_stats_report(c, who.organization, execution_id, execution=execution)
        state = _live_state(c, who, execution_id, execution, stats)
        breakdown = breakdown_report(c, who.organization, execution_id)
    except NotFound:
        return _page("Not found", "<h1>Execution not found</h1>", who, status=404)
    rows, total = c.history.attempts_page(execution_id, 1, 50, request.query_params.get("status") or None)
    name = execution.program.get("name") or execution_id
    cards = "".join(
        f'<div class=card>{label}<b data-counter="{key}">{state["counters"][key]}</b></div>' for key, label in COUNTERS
    )
    call_cards = "".join(
        f'<div class=card>{label}<b data-call-metric="{key}">{state["calls"][key]}</b></div>'
        for key, label in (("totalCalls", "Calls"), ("answered", "Answered"), ("voicemail", "Voicemail"),
                           ("noAnswer", "No answer"), ("busy", "Busy"), ("failed", "Failed calls"))
    )  # fmt: skip
    actions = ""
    if who.role not in READ_ONLY_ROLES:
        actions = '<div class=actions>' + "".join(
            f'<form method="post" action="/dashboard/executions/{execution_id}/{a}"><button name=action value="{a}">'
            f"{a.title()}</button></form> "
            for a in ("pause", "resume", "cancel")
        ) + "</div>"
    error = request.query_params.get("error")
    per_attempt = "".join(
        f"<tr><td>{a['attemptNumber']}</td><td>{a['callsAttempted']}</td><td>{a['callsAnswered']}</td>"
        f"<td>{a['callsCompleted']}</td><td>{a['answeredPercentage']}%</td><td>{a['averageDurationMs']} ms</td></tr>"
        for a in breakdown["perAttempt"]
    )
    calls = "".join(
        f'<tr><td><a href="/dashboard/calls/{r["callId"]}">{escape(r["to"])}</a></td><td>{r["attempt"]}</td>'
        f'<td>{escape(r["status"])}</td><td>{escape(r.get("outcome") or "")}</td><td>{escape(r.get("from") or "")}</td>'
        f'<td>{escape(r.get("startedAt") or "")}</td><td>{r.get("durationMs") or ""}</td></tr>'
        for r in map(call_row_dto, rows)
    )
    body = (
        f"<h1>{escape(name)}</h1><p>Status <span class=status id=status>{escape(state['status'])}</span> "
        f"(<span id=effective-status>{escape(state['effectiveStatus'])}</span>) · flow "
        f"{escape(str(execution.flow.get('flowName')))} v{execution.flow.get('flowVersion')}</p>"
        + (f'<p class=error role=alert>{escape(error)}</p>' if error else "")
        + actions
        + f"<div class=cards id=counters>{cards}</div><div class=cards>{call_cards}</div>"
        + "<h2>Outcomes over time</h2>" + _outcomes_svg(outcomes_over_time(c, who.organization, execution_id, execution=execution))
        + "<h2>Flow</h2>" + _flow_svg(execution.flow.get("graph") or {}, stats)
        + "<h2>Attempts</h2><table><tr><th>Attempt</th><th>Dialled</th><th>Answered</th><th>Completed</th>"
        + f"<th>Answer rate</th><th>Average duration</th></tr>{per_attempt}</table>"
        + f"<h2>Calls ({total})</h2><table id=calls><tr><th>To</th><th>Attempt</th><th>Status</th><th>Outcome</th>"
        + f"<th>From</th><th>Started</th><th>Duration ms</th></tr>{calls}</table>"
        + f"<script>{LIVE_JS}</script>"
    )
    return _page(str(name), body, who)


@get("/dashboard/executions/{execution_id:str}/live", include_in_schema=False)
async def execution_live(request: Request[Any, Any, Any], execution_id: str) -> Response[Any]:
    """Server-Sent Events: the counters whenever they change, until the execution ends."""
    who = await sync_to_thread(_principal, request)
    if who is None:
        return Response("sign in first", status_code=401, media_type="text/plain")
    c = _c(request)
    try:
        first = await sync_to_thread(_live_state, c, who, execution_id)
    except NotFound:
        return Response("not found", status_code=404, media_type="text/plain")

    async def states() -> Any:
        last = None
        state = first
        while True:
            if state != last:
                yield {"event": "state", "data": json.dumps(state)}
                last = state
            if state["status"] in FINAL:
                yield {"event": "end", "data": state["status"]}
                return
            await asyncio.sleep(LIVE_INTERVAL)
            state = await sync_to_thread(_live_state, c, who, execution_id)

    return ServerSentEvent(states())


@get("/dashboard/executions/{execution_id:str}/chart", include_in_schema=False)
@in_thread
def execution_chart(request: Request[Any, Any, Any], execution_id: str) -> Response[Any]:
    """The outcomes chart alone, for the page to redraw it as calls end."""
    who = _principal(request)
    if who is None:
        return Response("sign in first", status_code=401, media_type="text/plain")
    try:
        data = outcomes_over_time(_c(request), who.organization, execution_id)
    except NotFound:
        return Response("not found", status_code=404, media_type="text/plain")
    return Response(_outcomes_svg(data), media_type="text/html")


def _command(request: Request[Any, Any, Any], execution_id: str, action: str) -> Response[Any]:
    from interfaces.http.common import acting

    who = _principal(request)
    if who is None:
        return _login_redirect()
    target = f"/dashboard/executions/{execution_id}"
    if who.role in READ_ONLY_ROLES:
        return Redirect(f"{target}?error=" + quote(f"The '{who.role}' role is read-only"), status_code=303)
    c = _c(request)
    try:
        with acting(who, request):
            execution = c.campaigns.execution(who.organization_id, execution_id)
            if action == "cancel":
                execution.cancel(c.clock.now())
            else:
                getattr(execution, action)()
            c.campaigns.save(execution)
    except DomainError as exc:
        return Redirect(f"{target}?error=" + quote(exc.message), status_code=303)
    except IntegrityError:  # the dispatcher wrote the execution at the same moment
        return Redirect(f"{target}?error=" + quote("The execution changed meanwhile: try again"), status_code=303)
    return Redirect(target, status_code=303)


@post("/dashboard/executions/{execution_id:str}/pause", include_in_schema=False)
@in_thread
def pause(request: Request[Any, Any, Any], execution_id: str) -> Response[Any]:
    return _command(request, execution_id, "pause")


@post("/dashboard/executions/{execution_id:str}/resume", include_in_schema=False)
@in_thread
def resume(request: Request[Any, Any, Any], execution_id: str) -> Response[Any]:
    return _command(request, execution_id, "resume")


@post("/dashboard/executions/{execution_id:str}/cancel", include_in_schema=False)
@in_thread
def cancel(request: Request[Any, Any, Any], execution_id: str) -> Response[Any]:
    return _command(request, execution_id, "cancel")


# -- calls and audit ----------------------------------------------------------------------


@get("/dashboard/calls/{call_id:str}", include_in_schema=False)
@in_thread
def call_page(request: Request[Any, Any, Any], call_id: str) -> Response[Any]:
    who = _principal(request)
    if who is None:
        return _login_redirect()
    c = _c(request)
    row = c.history.attempt(call_id)
    if row is None or row["organization_id"] != str(who.organization_id):
        return _page("Not found", "<h1>Call not found</h1>", who, status=404)
    report = attempt_report(c, row)
    call = report["call"]
    timeline = "".join(
        f"<tr><td>{escape(e['timestamp'] or '')}</td><td>{escape(e['type'])}</td><td><code>"
        f"{escape(json.dumps({k: v for k, v in e.items() if k not in ('type', 'timestamp')}))}</code></td></tr>"
        for e in report["events"]
    )
    path = " → ".join(
        f"{escape(s['nodeLabel'] or s['nodeId'])}" + (f" <small>[{escape(s['outputPath'])}]</small>" if s["outputPath"] else "")
        for s in report["flowExecution"]["executionPath"]
    )
    body = (
        f"<h1>Call to {escape(call['to'])} · attempt {report['attempt']}</h1>"
        f"<p>From {escape(call['from'] or '-')} · status {escape(report['status'])} · outcome "
        f"<b id=outcome>{escape(report['outcome'] or '-')}</b> · {call['durationMs'] or 0} ms · "
        f'<a href="/dashboard/executions/{report["programExecutionId"]}">execution</a></p>'
        f"<h2>Path</h2><p id=path>{path}</p><h2>Timeline</h2><table id=timeline><tr><th>At</th><th>Event</th>"
        f"<th>Data</th></tr>{timeline}</table><h2>Variables</h2><pre>"
        f"{escape(json.dumps(report['flowExecution']['finalVariables'], indent=2))}</pre>"
    )
    return _page("Call", body, who)


@get("/dashboard/audit", include_in_schema=False)
@in_thread
def audit_page(request: Request[Any, Any, Any], phone: str | None = None) -> Response[Any]:
    who = _principal(request)
    if who is None:
        return _login_redirect()
    c = _c(request)
    body = (
        '<h1>Audit search</h1><form method="get" action="/dashboard/audit"><label>Phone number '
        f'<input name="phone" value="{escape(phone or "")}" placeholder="+212612345678"></label> '
        "<button>Search</button></form>"
    )
    if phone:
        from domain.phone import to_e164

        try:
            number = to_e164(phone, who.organization.country, "phone")
        except DomainError as exc:
            return _page("Audit", body + f'<p class=error role=alert>{escape(exc.message)}</p>', who, status=400)
        rows = c.history.number_attempts(str(who.organization_id), number)
        lines = "".join(
            f'<tr><td>{escape(r["created_at"])}</td><td>{escape(r.get("program_name") or r["program_id"])}</td>'
            f'<td>{escape(r.get("launched_by") or "")}</td><td>{r["attempt"]}</td><td>{escape(r.get("from_number") or "")}</td>'
            f'<td>{escape(r.get("outcome") or r["status"])}</td>'
            f'<td><a href="/dashboard/calls/{r["call_id"]}">timeline</a></td></tr>'
            for r in rows
        )
        body += (
            f"<h2>{len(rows)} attempt(s) to {escape(number)}</h2><table id=audit><tr><th>Queued</th><th>Program</th>"
            f"<th>Launched by</th><th>Attempt</th><th>From</th><th>Outcome</th><th></th></tr>{lines}</table>"
        )
    return _page("Audit", body, who)


DASHBOARD_HANDLERS = [
    login_page, login, logout, executions_page, execution_page, execution_live, execution_chart,
    pause, resume, cancel, call_page, audit_page,
]  # fmt: skip
