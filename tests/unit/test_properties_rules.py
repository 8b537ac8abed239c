"""Property tests: live-audience rules over the directory read model, fed the way
production feeds it (real Contact events through ``DirectoryView.apply_batch``, created,
updated, cleared, deleted and restored, split into batches at random), agree with the
in-memory evaluation over the Contact aggregate itself (domain.rules.matches).

test_properties_contacts.py holds the first version of this property over rows written
straight into the table, with a few fields and words; this one adds every standard field,
every attribute type (email, url and phone number too), arbitrary Unicode text, integers
and floats at the edges, updates merged by the batched projection, and the preview's
count and sample. tests/integration/test_properties_rules_postgres.py runs the same
property on PostgreSQL (jsonb).

The membership property: joins and exits, in any order and batching, leave exactly the
final members in the read model and the right count on the audience.
"""

from __future__ import annotations

import itertools
import tempfile
import uuid
from pathlib import Path
from typing import Any

from eventsourcing.persistence import Tracking
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain import rules
from domain.audience import Audience
from domain.contact import STANDARD_FIELDS, Contact
from projections.directory import DirectoryView
from projections.store import make_view

ORG = uuid.UUID("00000000-0000-4000-8000-000000000001")
TYPES = {"n": "number", "flag": "boolean", "day": "date", "note": "text", "mail": "email", "site": "url",
         "tel": "phone_number"}
CATALOG = rules.field_catalog(TYPES)
TEXT_FIELDS = [*STANDARD_FIELDS, "timezone"]

# Text: a few words that trip SQL (wildcards, quotes, case, combining accents, ß/SS) and any Unicode.
TRICKY = st.sampled_from(["", " ", "a", "A", "ab", "b a", "%", "_", "'", '"', "\\", "é", "e\u0301", "Rabat",
                          "rabat", "ß", "SS", "ı", "I", "2024-01-01", "+212612345678", "a@b.ma"])
UNICODE = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00\ufffd"), max_size=5)
RULE_TEXT = st.one_of(TRICKY, UNICODE)
STORED_TEXT = st.one_of(TRICKY, UNICODE, st.just("a\x00b"))  # U+0000 may reach the projection
# Numbers as the write side stores them (domain.custom_attributes.coerce: finite, whole floats as ints).
INTS = st.one_of(st.integers(-1000, 1000), st.integers(-(2**53), 2**53), st.sampled_from([0, 1, -1, 2**53 - 1]))
FLOATS = st.one_of(st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False),
                   st.sampled_from([0.5, -0.5, 0.1, 1e-300, -1e-300, 1.5e300])).filter(lambda f: not f.is_integer())
NUMBERS = st.one_of(INTS, FLOATS)
RULE_NUMBERS = NUMBERS.filter(lambda v: abs(v) < rules.MAX_NUMBER)  # rules.parse refuses the rest
# Stored values are not bounded: huge integers, and whole floats beyond 2**53 that stay floats.
STORED_NUMBERS = st.one_of(NUMBERS, st.integers(-(2**70), 2**70),
                           st.sampled_from([2**53 + 1, -(2**53) - 1, 2**63, 2**64 + 1, 2.0**60, 1e22, -1e22]))
DATES = st.dates().map(lambda d: d.isoformat())
STORED: dict[str, Any] = {"number": STORED_NUMBERS, "boolean": st.booleans(), "date": DATES, "text": STORED_TEXT}
ANY_STORED = st.one_of(STORED_NUMBERS, st.booleans(), DATES, STORED_TEXT)  # a redefined attribute's old values


@st.composite
def leaf(draw: Any) -> dict[str, Any]:
    field = draw(st.sampled_from(sorted(CATALOG)))
    type_ = CATALOG[field]
    op = draw(st.sampled_from(rules.OPERATORS[type_]))
    node: dict[str, Any] = {"field": field, "operator": op}
    if op in rules.EMPTINESS:
        return node
    if type_ == "number":
        node["value"] = draw(RULE_NUMBERS)
    elif type_ == "boolean":
        node["value"] = draw(st.booleans())
    elif type_ == "date":
        node["value"] = draw(DATES)
    else:
        node["value"] = draw(RULE_TEXT.filter(bool) if op in ("contains", "not_contains") else RULE_TEXT)
    return node


def group(children: Any) -> Any:
    return st.builds(lambda c, r: {"combinator": c, "rules": r}, st.sampled_from(["AND", "OR"]),
                     st.lists(children, min_size=1, max_size=4))


# Depth 3 at most, counting the root group and the leaves (root → group → condition).
TREES = group(st.one_of(leaf(), group(leaf())))


@st.composite
def custom_values(draw: Any, clearing: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in draw(st.lists(st.sampled_from(sorted(TYPES)), unique=True, max_size=len(TYPES))):
        kind = "text" if TYPES[name] in rules.TEXTUAL else TYPES[name]
        choices = [STORED[kind], ANY_STORED] + ([st.none()] if clearing else [])
        out[name] = draw(st.one_of(*choices))
    return out


@st.composite
def fields(draw: Any, clearing: bool) -> dict[str, Any]:
    out: dict[str, Any] = {f: draw(st.one_of(st.none(), STORED_TEXT))
                           for f in draw(st.lists(st.sampled_from(TEXT_FIELDS), unique=True, max_size=4))}
    attrs = draw(custom_values(clearing))
    if attrs or draw(st.booleans()):
        out["customAttributes"] = attrs
    return out


@st.composite
def contact_history(draw: Any, index: int) -> Contact:
    """A contact, created and then changed a few times, with its events still pending."""
    phone = draw(st.sampled_from(["+2126123456", "+336123456", "+14155550"])) + f"{index:02d}"  # one contact each
    contact = Contact(ORG, phone, phone, draw(fields(clearing=False)))
    for _ in range(draw(st.integers(0, 3))):
        step = draw(st.sampled_from(["update", "update", "delete", "restore"]))
        if step == "update" and contact.deleted_at is None:
            contact.update(draw(fields(clearing=True)))
        elif step == "delete" and contact.deleted_at is None:
            contact.delete()
        elif step == "restore" and contact.deleted_at is not None:
            contact.restore(draw(fields(clearing=True)))
    return contact


CONTACTS = st.integers(1, 8).flatmap(lambda n: st.tuples(*(contact_history(i) for i in range(n))))
_positions = itertools.count(1)


def project(view: DirectoryView, events: list[Any], cuts: list[int]) -> None:
    """Apply ``events`` in order, in batches cut at ``cuts`` (as the projection runner does)."""
    items = [(e, Tracking("campaigns", next(_positions))) for e in events]
    bounds = sorted({0, len(items), *(c % (len(items) + 1) for c in cuts)})
    for lo, hi in itertools.pairwise(bounds):
        view.apply_batch(items[lo:hi], view.handle)


def interleave(contacts: tuple[Contact, ...], order: list[int]) -> list[Any]:
    """Every contact's events, each contact's in its own order, contacts interleaved."""
    queues = [list(c.collect_events()) for c in contacts]
    out: list[Any] = []
    picks = iter(order)
    while any(queues):
        live = [q for q in queues if q]
        out.append(live[next(picks, 0) % len(live)].pop(0))
    return out


def check_rules_agree(view: DirectoryView, tree: dict[str, Any], contacts: tuple[Contact, ...],
                      order: list[int], cuts: list[int]) -> None:
    with view.transaction() as c:
        view.ex(c, "DELETE FROM dir_contacts")
    expected = {str(c.id) for c in contacts
                if c.deleted_at is None and rules.matches(tree, c.document(), TYPES)}
    project(view, interleave(contacts, order), cuts)
    assert view.matching_contact_ids(str(ORG), tree, TYPES) == expected
    count, sample = view.preview(str(ORG), tree, TYPES, 3)
    assert count == len(expected)
    created = {r["id"]: r["created_at"] for r in view.rows("SELECT id, created_at FROM dir_contacts")}
    newest = sorted(sorted(expected), key=lambda i: created[i], reverse=True)[:3]  # newest first, then by id
    assert [r["id"] for r in sample] == newest


_views: list[DirectoryView] = []


def sqlite_view() -> DirectoryView:
    if not _views:
        path = Path(tempfile.mkdtemp()) / "directory.sqlite"
        _views.append(make_view(DirectoryView, "directory", {"PERSISTENCE_MODULE": "eventsourcing.sqlite",
                                                             "DIRECTORY_SQLITE_DBNAME": str(path)}))
    return _views[0]


ORDERS = st.lists(st.integers(0, 7), max_size=40)
CUTS = st.lists(st.integers(0, 40), max_size=3)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(TREES, CONTACTS, ORDERS, CUTS)
def test_rules_over_the_projected_directory_agree_with_rules_in_memory(
    tree: dict[str, Any], contacts: tuple[Contact, ...], order: list[int], cuts: list[int]
) -> None:
    check_rules_agree(sqlite_view(), rules.parse(tree, TYPES), contacts, order, cuts)


# -- membership: joins and exits, batched ------------------------------------------------------

MEMBER_OPS = st.lists(st.tuples(st.integers(0, 2), st.integers(0, 3), st.sampled_from(["join", "exit", "join", "exit", "add", "remove"])),
                      max_size=30)


def check_memberships(view: DirectoryView, ops: list[tuple[int, int, str]], cuts: list[int]) -> None:
    with view.transaction() as c:
        for t in ("dir_audience_members", "dir_audiences", "dir_contacts"):
            view.ex(c, f"DELETE FROM {t}")
    audiences = [Audience(ORG, f"Audience {i}", None) for i in range(3)]
    contacts = [Contact(ORG, f"+21261234567{i}", "x", {}) for i in range(5)]
    truth: dict[int, set[str]] = {i: set() for i in range(3)}
    events: list[Any] = [*audiences[0].collect_events(), *audiences[1].collect_events(), *audiences[2].collect_events()]
    for a, k, op in ops:
        cid = str(contacts[k].id)
        if op == "join":  # a live audience's join or exit is an event on the contact
            contacts[k].join_audience(str(audiences[a].id))
            truth[a].add(cid)
        elif op == "exit":
            contacts[k].exit_audience(str(audiences[a].id))
            truth[a].discard(cid)
        elif op == "add":  # a static audience's, on the audience
            audiences[a].add_members([cid, cid])
            truth[a].add(cid)
        else:
            audiences[a].remove_members([cid])
            truth[a].discard(cid)
        events += [*contacts[k].collect_events(), *audiences[a].collect_events()]
    project(view, events, cuts)
    for i, a in enumerate(audiences):
        assert set(view.audience_member_ids(str(a.id))) == truth[i]
        row = view.one("SELECT contact_count FROM dir_audiences WHERE id = ?", (str(a.id),))
        assert row is not None and row["contact_count"] == len(truth[i])


@settings(max_examples=150, deadline=None)
@given(MEMBER_OPS, CUTS)
def test_batched_joins_and_exits_leave_exactly_the_final_members(ops: list[tuple[int, int, str]], cuts: list[int]) -> None:
    check_memberships(sqlite_view(), ops, cuts)


# -- what rules.parse refuses, so that both evaluations can agree ----------------------------------


def test_rule_values_that_sql_cannot_compare_exactly_are_refused_naming_the_rule() -> None:
    import pytest

    from domain.errors import ValidationError

    for field, value in (("custom.n", 10**20), ("custom.n", float("nan")), ("custom.n", -(2**53)),
                         ("city", "a\x00b"), ("custom.note", "\ufffd")):
        with pytest.raises(ValidationError) as caught:
            rules.parse({"combinator": "AND", "rules": [{"field": "city", "operator": "is_empty"},
                                                        {"field": field, "operator": "equals", "value": value}]}, TYPES)
        assert list(caught.value.field_errors) == ["rules[1]"]
    assert rules.parse({"combinator": "OR", "rules": [{"field": "custom.n", "operator": "lt", "value": 2**53 - 1}]},
                       TYPES)["rules"][0]["value"] == 2**53 - 1


def test_a_text_holding_u0000_is_not_equal_to_its_prefix_in_the_sqlite_directory() -> None:
    """Found by the property above: SQLite's string functions end a text at U+0000, so a
    note "a<U+0000>b" equalled the rule value "a" there, while the rule in memory (and on
    PostgreSQL, which stores U+FFFD for it) said no."""
    for operator, value, matches in (("equals", "a", False), ("equals", "ab", False), ("contains", "b", True),
                                     ("not_contains", "a", False)):
        contact = Contact(ORG, "+212612345600", "+212612345600", {"customAttributes": {"note": "a\x00b"}})
        tree = rules.parse({"combinator": "AND", "rules": [{"field": "custom.note", "operator": operator, "value": value}]}, TYPES)
        assert rules.matches(tree, contact.document(), TYPES) is matches
        check_rules_agree(sqlite_view(), tree, (contact,), [], [])
