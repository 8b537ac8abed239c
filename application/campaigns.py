"""The campaigns application: organizations, contacts, audiences, flows, programs and
executions (the low-traffic streams). Commands load, decide in the domain, save."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

from eventsourcing.application import AggregateNotFoundError

from application.app_base import App
from domain.audience import Audience, check_description, check_name
from domain.contact import Contact
from domain.errors import (
    AudienceEmptyError,
    Conflict,
    ContactNotFoundError,
    ExecutionAlreadyRunningError,
    FlowNotFoundError,
    NotFound,
    ValidationError,
)
from domain.execution import ACTIVE, Execution
from domain.flow import Flow
from domain.flows.graph import require_graph
from domain.organization import (
    PLANS,
    ROLES,
    Organization,
    new_api_key,
    organization_of_key,
    slugify,
)
from domain.program import Program
from domain.retry import RetryStrategy
from domain.timeparse import format_instant, parse_instant
from domain.windows import CallingHours, PauseWindows, zone


def check_auto_pause_rules(rules: Any) -> list[dict[str, Any]]:
    """``[{nodeId, threshold, resetOnResume}]``: pause once a node has run ``threshold`` times."""
    if not isinstance(rules, list) or len(rules) > 50:
        raise ValidationError.single("autoPauseRules", "must be a list of at most 50 rules")
    out = []
    for i, r in enumerate(rules):
        where = f"autoPauseRules[{i}]"
        if not isinstance(r, dict) or not isinstance(r.get("nodeId"), str) or not r["nodeId"]:
            raise ValidationError.single(f"{where}.nodeId", "is required")
        t = r.get("threshold")
        if isinstance(t, bool) or not isinstance(t, int) or t < 1:
            raise ValidationError.single(f"{where}.threshold", "must be a positive integer")
        reset = r.get("resetOnResume", True)
        if not isinstance(reset, bool):
            raise ValidationError.single(f"{where}.resetOnResume", "must be true or false")
        out.append({"nodeId": r["nodeId"], "threshold": t, "resetOnResume": reset})
    return out


# Audiences with more stored events than this are snapshotted by reference at launch.
SMALL_AUDIENCE_VERSIONS = 20
# ... and so are audiences of more members than this, however few their versions.
SMALL_AUDIENCE_MEMBERS = 2000


class Principal:
    """Who is calling: an API key of an organization, with its role."""

    def __init__(self, organization_id: UUID, key_id: str, role: str, organization: Organization):
        self.organization_id = organization_id
        self.key_id = key_id
        self.role = role
        self.organization = organization

    @property
    def actor(self) -> str:
        return f"apikey:{self.key_id}"


class CampaignsApp(App):
    name = "campaigns"
    # A live audience's members, by audience id, from the directory read model (wired in
    # infrastructure/bootstrap.py); static audiences launch from their own stream.
    live_audience_members: Any = None

    # -- organizations and keys -----------------------------------------------------

    def create_organization(
        self, name: str, country: str = "MA", timezone: str = "Africa/Casablanca"
    ) -> tuple[UUID, str]:
        if not isinstance(name, str) or not name.strip():
            raise ValidationError.single("name", "is required")
        org = Organization(name.strip(), slugify(name), country.upper(), timezone)
        key = self._issue(org, "admin", "initial admin key")
        self.save(org)
        return org.id, key

    def _issue(self, org: Organization, role: str, name: str) -> str:
        from domain.organization import hash_key

        if role not in ROLES:
            raise ValidationError.single("role", f"must be one of {', '.join(ROLES)}")
        key = new_api_key(org.id)
        org.issue_api_key(uuid4().hex[:12], hash_key(key), key[:8], role, name)
        return key

    def issue_api_key(self, organization_id: UUID, role: str, name: str) -> str:
        org = self.organization(organization_id)
        key = self._issue(org, role, name)
        self.save(org)
        return key

    def organization(self, organization_id: UUID, *, read_only: bool = False) -> Organization:
        """``read_only``: as in ``execution``."""
        try:
            org = (self.latest if read_only else self.repository).get(organization_id)
        except AggregateNotFoundError:
            raise NotFound("Organization not found") from None
        assert isinstance(org, Organization)
        return org

    def update_organization_settings(self, organization_id: UUID, data: dict[str, Any]) -> Organization:
        """The organization's dialling policy (admin): calling hours in each contact's
        own time zone, concurrency and pace limits, a per-contact daily cap."""
        org = self.organization(organization_id)
        changes: dict[str, Any] = {}
        allowed = {"callingHours", "maxConcurrentCalls", "callsPerSecond", "maxCallsPerContactPerDay", "timezone", "plan"}
        unknown = set(data) - allowed
        if unknown:
            raise ValidationError(
                f"Unknown setting(s): {', '.join(sorted(unknown))}", {k: ["unknown setting"] for k in sorted(unknown)}
            )
        if "callingHours" in data:
            CallingHours.parse(data["callingHours"])
            changes["callingHours"] = data["callingHours"]
        for key, lo, hi in (("maxConcurrentCalls", 1, 10000), ("callsPerSecond", 0.01, 1000), ("maxCallsPerContactPerDay", 1, 1000)):
            if key in data:
                v = data[key]
                if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi):
                    raise ValidationError.single(key, f"must be a number between {lo} and {hi}, or null")
                changes[key] = v
        if "timezone" in data:
            changes["timezone"] = zone(data["timezone"]).key
        if "plan" in data:
            if data["plan"] not in PLANS:
                raise ValidationError.single("plan", f"must be one of {', '.join(PLANS)}")
            changes["plan"] = data["plan"]
        if changes:
            org.change_settings(changes)
            self.save(org)
        return org

    def authenticate(self, key: str) -> Principal | None:
        org_id = organization_of_key(key)
        if org_id is None:
            return None
        try:
            org = self.repository.get(org_id)
        except AggregateNotFoundError:
            return None
        if not isinstance(org, Organization) or org.status != "active":
            return None
        found = org.role_for(key)
        if found is None:
            return None
        return Principal(org.id, found[0], found[1], org)

    # -- loading, scoped to the organization ----------------------------------------

    def _get(self, cls: type, id_: UUID | str, org: UUID, error: type[NotFound], what: str) -> Any:
        try:
            agg = self.repository.get(UUID(str(id_)))
        except (AggregateNotFoundError, ValueError):
            raise error(f"{what} not found") from None
        if not isinstance(agg, cls) or agg.organization_id != org or getattr(agg, "deleted", False):
            raise error(f"{what} not found")
        return agg

    # -- contacts -------------------------------------------------------------------

    def create_contact(self, org: Organization, data: dict[str, Any]) -> Contact:
        from application.contacts import Contacts  # contact commands live there (issue 3)

        return Contacts(self).create(org, data)

    def contact(self, org: UUID, id_: UUID | str) -> Contact:
        c = self._get(Contact, id_, org, ContactNotFoundError, "Contact")
        if c.deleted_at is not None:
            raise ContactNotFoundError("Contact not found")
        return c  # type: ignore[no-any-return]

    def update_contact(self, org: Organization, id_: str, data: dict[str, Any]) -> Contact:
        from application.contacts import Contacts

        return Contacts(self).update(org, id_, data)

    def delete_contact(self, org: UUID, id_: str) -> Contact:
        from application.contacts import Contacts

        return Contacts(self).delete(org, id_)

    # -- audiences ------------------------------------------------------------------

    def create_audience(self, org: UUID, data: dict[str, Any]) -> Audience:
        audience = Audience(org, check_name(data.get("name")), check_description(data.get("description")))
        self.save(audience)
        return audience

    def audience(self, org: UUID, id_: UUID | str) -> Audience:
        return self._get(Audience, id_, org, NotFound, "Audience")  # type: ignore[no-any-return]

    def update_audience(self, org: UUID, id_: str, data: dict[str, Any]) -> Audience:
        audience = self.audience(org, id_)
        name = check_name(data["name"]) if "name" in data else audience.name
        desc = check_description(data["description"]) if "description" in data else audience.description
        audience.rename(name, desc)
        self.save(audience)
        return audience

    def delete_audience(self, org: UUID, id_: str) -> Audience:
        audience = self.audience(org, id_)
        audience.delete()
        self.save(audience)
        return audience

    def add_audience_contacts(self, org: UUID, id_: str, contacts: Any) -> int:
        audience = self.audience(org, id_)
        if not isinstance(contacts, list) or not contacts or len(contacts) > 10000:
            raise ValidationError.single("contacts", "must be a list of 1 to 10000 contact ids")
        ids: list[str] = []
        for i, c in enumerate(contacts):
            try:
                ids.append(str(UUID(str(c))))
            except ValueError:
                raise ValidationError.single(f"contacts[{i}]", f"'{c}' is not a UUID") from None
        new = audience.new_members(ids)
        for cid in new:
            try:
                self.contact(org, cid)
            except ContactNotFoundError:
                raise ContactNotFoundError(f"Contact {cid} not found", contactId=cid) from None
        if new:
            audience.add_members(new)
            self.save(audience)
        return len(new)

    # -- flows ----------------------------------------------------------------------

    def create_flow(self, org: UUID, data: dict[str, Any]) -> Flow:
        name = data.get("name")
        if not isinstance(name, str) or not name.strip() or len(name) > 255:
            raise ValidationError.single("name", "must be a string of 1 to 255 characters")
        desc = data.get("description")
        if desc is not None and not isinstance(desc, str):
            raise ValidationError.single("description", "must be a string")
        graph = require_graph(data.get("graph"))
        flow = Flow(org, name.strip(), desc, graph.to_json())
        self.save(flow)
        return flow

    def flow(self, org: UUID, id_: UUID | str) -> Flow:
        return self._get(Flow, id_, org, FlowNotFoundError, "Flow")  # type: ignore[no-any-return]

    def update_flow(self, org: UUID, id_: str, data: dict[str, Any]) -> Flow:
        flow = self.flow(org, id_)
        name = data.get("name", flow.name)
        if not isinstance(name, str) or not name.strip() or len(name) > 255:
            raise ValidationError.single("name", "must be a string of 1 to 255 characters")
        graph = require_graph(data["graph"]).to_json() if "graph" in data else None
        flow.update(name.strip(), data.get("description", flow.description), graph)
        self.save(flow)
        return flow

    def delete_flow(self, org: UUID, id_: str) -> Flow:
        flow = self.flow(org, id_)
        flow.delete()
        self.save(flow)
        return flow

    # -- programs -------------------------------------------------------------------

    def _program_settings(self, org: Organization, data: dict[str, Any], partial: bool) -> dict[str, Any]:
        out: dict[str, Any] = {}
        required = ("name", "audienceId", "flowId", "startAt", "didPool", "retryStrategy")
        if not partial:
            missing = [f for f in required if data.get(f) in (None, "", [])]
            if missing:
                raise ValidationError(
                    f"Missing required field(s): {', '.join(missing)}",
                    {f: ["is required"] for f in missing},
                )
        if "name" in data:
            if not isinstance(data["name"], str) or not data["name"].strip():
                raise ValidationError.single("name", "must be a non-empty string")
            out["name"] = data["name"].strip()
        if "audienceId" in data:
            try:
                self.audience(org.id, data["audienceId"])
            except NotFound:
                raise NotFound("Audience not found", field="audienceId") from None
            out["audienceId"] = str(UUID(str(data["audienceId"])))
        if "flowId" in data:
            self.flow(org.id, data["flowId"])
            out["flowId"] = str(UUID(str(data["flowId"])))
        if "startAt" in data:
            out["startAt"] = format_instant(parse_instant(data["startAt"], "startAt"))
        if "stopAt" in data:
            out["stopAt"] = (
                None if data["stopAt"] is None else format_instant(parse_instant(data["stopAt"], "stopAt"))
            )
        if "didPool" in data:
            pool = data["didPool"]
            if not isinstance(pool, list) or not pool:
                raise ValidationError.single("didPool", "must be a list of at least one caller id")
            numbers = []
            for i, n in enumerate(pool):
                from domain.phone import to_caller_id

                numbers.append(to_caller_id(n, org.country, f"didPool[{i}]"))
            out["didPool"] = numbers
        if "retryStrategy" in data:
            out["retryStrategy"] = RetryStrategy.parse(data["retryStrategy"]).to_json()
        if "pauseWindows" in data:
            PauseWindows.parse(data["pauseWindows"])
            out["pauseWindows"] = data["pauseWindows"]
        if "autoPauseRules" in data:
            out["autoPauseRules"] = check_auto_pause_rules(data["autoPauseRules"])
        if "requireConsent" in data:  # a consent scope every contact must hold at dial time
            from domain.consent import check_scope

            v = data["requireConsent"]
            out["requireConsent"] = None if v is None else check_scope(v, "requireConsent")
        for key, lo, hi in (("maxConcurrentCalls", 1, 10000), ("callsPerSecond", 0.01, 1000)):
            if key in data and data[key] is not None:
                v = data[key]
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
                    raise ValidationError.single(key, f"must be a number between {lo} and {hi}")
                out[key] = v
        return out

    def create_program(self, org: Organization, data: dict[str, Any]) -> Program:
        settings = self._program_settings(org, data, partial=False)
        settings.setdefault("stopAt", None)
        settings.setdefault("pauseWindows", None)
        program = Program(org.id, settings)
        self.save(program)
        return program

    def program(self, org: UUID, id_: UUID | str) -> Program:
        p = self._get(Program, id_, org, NotFound, "Program")
        if p.status == "deleted":
            raise NotFound("Program not found")
        return p  # type: ignore[no-any-return]

    def update_program(self, org: Organization, id_: str, data: dict[str, Any]) -> Program:
        program = self.program(org.id, id_)
        status = data.get("status")
        if status is not None and status not in ("archived", program.status):
            raise ValidationError.single("status", "can only be set to 'archived'")
        changes = self._program_settings(org, {k: v for k, v in data.items() if k != "status"}, True)
        if changes:
            program.configure(changes)
        if status == "archived" and program.status != "archived":
            program.archive()
        self.save(program)
        return program

    def delete_program(self, org: UUID, id_: str, now: datetime) -> Program:
        """Soft delete; a running execution of the program is cancelled (its calls in
        progress finish, the rest are skipped)."""
        program = self.program(org, id_)
        to_save: list[Any] = []
        for eid in program.execution_ids:
            execution = self.execution(org, eid)
            if execution.status in ACTIVE:
                execution.cancel(now)
                to_save.append(execution)
        program.delete()
        self.save(program, *to_save)
        return program

    def launch_program(self, org: Organization, id_: str, now: datetime) -> Execution:
        program = self.program(org.id, id_)
        if program.status == "archived":
            raise Conflict("An archived program cannot be launched")
        last = program.last_execution_id
        if last is not None and self.execution(org.id, last).status in ACTIVE:
            raise ExecutionAlreadyRunningError("Program already has a running execution")
        s = program.settings
        audience_ref = None
        members: list[str] = []
        kind, version = self._audience_head(org.id, s["audienceId"])
        if kind == "live" and self.live_audience_members is not None:
            members = [str(c.id) for c in self.contacts_of(org.id, list(self.live_audience_members(s["audienceId"])))]
        elif version > SMALL_AUDIENCE_VERSIONS:
            # A large audience: snapshot it by reference (its version) and let the
            # dispatcher read it in the background, so the launch answers at once.
            audience_ref = {"audienceId": str(s["audienceId"]), "version": version}
        else:
            audience = self.audience(org.id, s["audienceId"])
            if audience.member_count > SMALL_AUDIENCE_MEMBERS:
                # Few versions but many members (one import): by reference too; the
                # dispatcher finds which members were deleted, in bulk.
                audience_ref = {"audienceId": str(s["audienceId"]), "version": audience.version}
            else:
                members = [str(c.id) for c in self.contacts_of(org.id, audience.members)]
        if not members and audience_ref is None:
            raise AudienceEmptyError("Audience has no contacts")
        flow = self.flow(org.id, s["flowId"])
        start_at = parse_instant(s["startAt"], "startAt")
        stop_at = parse_instant(s["stopAt"], "stopAt") if s.get("stopAt") else None
        execution = Execution(
            org.id,
            program.id,
            {**s, "programId": str(program.id), "audienceKind": kind},
            {"flowId": str(flow.id), "flowName": flow.name, "flowVersion": flow.latest_version, "graph": flow.graph},
            members,
            start_at,
            stop_at,
            audience_ref,
        )
        if start_at <= now:
            execution.start(now)
        program.record_launch(str(execution.id))
        self.save(execution, program)
        return execution

    def _audience_head(self, org: UUID, audience_id: Any) -> tuple[str, int]:
        """An audience's kind and version from its first and last stored events, without
        replaying a possibly huge member list."""
        try:
            aid = UUID(str(audience_id))
        except ValueError:
            raise NotFound("Audience not found") from None
        last = self.recorder.select_events(aid, desc=True, limit=1)
        if not last:
            raise NotFound("Audience not found")
        if last[0].originator_version <= SMALL_AUDIENCE_VERSIONS:
            a = self.audience(org, aid)
            return getattr(a, "kind", "static"), a.version
        first = self.mapper.to_domain_event(self.recorder.select_events(aid, lte=1)[0])
        if getattr(first, "organization_id", None) != org or last[0].topic.endswith(".Deleted"):
            raise NotFound("Audience not found")
        second = self.recorder.select_events(aid, gt=1, lte=2)
        live = bool(second) and second[0].topic.endswith(".RulesSet")  # live audiences get rules at creation
        return ("live" if live else "static"), last[0].originator_version

    # -- bulk reads for large launches ------------------------------------------------

    def contacts_of(self, org: UUID, ids: list[str]) -> list[Contact]:
        """The contacts among ``ids`` that exist, belong to ``org`` and are not deleted, in
        the order of ``ids`` (one query per call, see ``load_many``)."""
        found = self.load_many([UUID(i) for i in ids])
        out = []
        for i in ids:
            c = found.get(UUID(i))
            if isinstance(c, Contact) and c.organization_id == org and c.deleted_at is None:
                out.append(c)
        return out

    def audience_members_at(self, audience_id: UUID, version: int, page: int = 50) -> list[str]:
        """An audience's members as of ``version``, replayed ``page`` stored events at a
        time (a million members never sit in memory twice: as events and as a list)."""
        audience: Any = None
        done = 0
        while done < version:
            stored = self.recorder.select_events(audience_id, gt=done, lte=min(version, done + page))
            if not stored:
                break
            for s in stored:
                audience = self.mapper.to_domain_event(s).mutate(audience)
            done = stored[-1].originator_version
        if audience is None:
            raise NotFound("Audience not found")
        return audience.members

    def execution(self, org: UUID | None, id_: UUID | str, *, read_only: bool = False) -> Execution:
        """``read_only``: as it stands now, for a check that changes nothing (see
        ``App.latest``): the caller must not change it."""
        try:
            e = (self.latest if read_only else self.repository).get(UUID(str(id_)))
        except (AggregateNotFoundError, ValueError):
            raise NotFound("Execution not found") from None
        if not isinstance(e, Execution) or (org is not None and e.organization_id != org):
            raise NotFound("Execution not found")
        return e
