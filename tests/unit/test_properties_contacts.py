"""Property tests: phone normalisation, and live-audience rules evaluated in SQL on the
directory read model agree with the in-memory evaluation, for any contacts and rules."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import phonenumbers
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain import rules
from domain.errors import ValidationError
from domain.phone import to_e164
from projections.directory import DirectoryView
from projections.store import dumps, make_view

# -- phone numbers ------------------------------------------------------------------------

MOBILE = st.integers(min_value=600000000, max_value=799999999).map(str)


@given(MOBILE, st.sampled_from(["0{n}", "+212{n}", "212{n}", "00212{n}", " 0{n} ", "+212 {n}"]))
def test_every_written_form_of_a_number_normalises_to_one_e164(national: str, form: str) -> None:
    try:
        expected = to_e164("+212" + national, "MA")
    except ValidationError:
        return  # not an assigned range
    assert to_e164(form.format(n=national), "MA") == expected
    assert expected.startswith("+212") and expected[1:].isdigit()


@given(
    st.one_of(
        st.text(max_size=40),
        st.text(alphabet=st.characters(max_codepoint=127), max_size=40),
        st.text(alphabet="0123456789+-(). \uff10\uff15\u0660\u0665\u06f3\u0967\u00b2x#*", max_size=30),
    ),
    st.booleans(),
)
def test_the_fast_digit_normalisation_agrees_with_the_librarys(text: str, keep_non_digits: bool) -> None:
    """domain/phone.py replaces phonenumbers' per-character digit lookup with a fast path
    for ASCII text: it must return what the library's own function returns, for any text."""
    from phonenumbers import phonenumberutil

    from domain import phone

    assert phonenumberutil.normalize_digits_only is phone._ascii_digits_only
    original = phone._normalize_digits_only
    assert original.__module__ == "phonenumbers.phonenumberutil"
    assert phone._ascii_digits_only(text, keep_non_digits) == original(text, keep_non_digits)


@given(st.text(max_size=40))
def test_normalisation_either_refuses_or_returns_a_valid_fixed_point(raw: str) -> None:
    try:
        e164 = to_e164(raw, "MA")
    except ValidationError as exc:
        assert list(exc.field_errors) == ["primaryPhone"]
        return
    assert phonenumbers.is_valid_number(phonenumbers.parse(e164))
    assert to_e164(e164, "FR") == e164  # E.164 does not depend on the default region


# -- rules: SQL and memory agree -------------------------------------------------------------

TYPES = {"balance": "number", "vip": "boolean", "since": "date", "tier": "text"}
WORDS = st.sampled_from(["", "a", "ab", "Rabat", "rabat", "Fès", "b a", "%", "_"])
DATES = st.dates().map(lambda d: d.isoformat())
NUMBERS = st.one_of(st.integers(-1000, 1000), st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False))
VALUES = {"number": NUMBERS, "boolean": st.booleans(), "date": DATES, "text": WORDS}
FIELDS = {"city": "text", "firstName": "text", "custom.balance": "number", "custom.vip": "boolean",
          "custom.since": "date", "custom.tier": "text", "primaryPhone": "phone_number"}


@st.composite
def leaf(draw: Any) -> dict[str, Any]:
    field = draw(st.sampled_from(sorted(FIELDS)))
    type_ = FIELDS[field]
    op = draw(st.sampled_from(rules.OPERATORS[type_]))
    node: dict[str, Any] = {"field": field, "operator": op}
    if op not in rules.EMPTINESS:
        values = VALUES["text" if type_ == "phone_number" else type_]
        node["value"] = draw(values.filter(lambda v: v != "") if op in ("contains", "not_contains") else values)
    return node


def group(children: Any) -> Any:
    return st.builds(lambda c, r: {"combinator": c, "rules": r}, st.sampled_from(["AND", "OR"]),
                     st.lists(children, min_size=1, max_size=3))


TREES = group(st.one_of(leaf(), group(leaf())))
ANY_VALUE = st.one_of(st.none(), NUMBERS, st.booleans(), WORDS, DATES)


@st.composite
def contact(draw: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"primaryPhone": draw(st.sampled_from(["+212612345678", "+33612345678"]))}
    for f in ("city", "firstName"):
        if draw(st.booleans()):
            doc[f] = draw(WORDS)
    # Custom values of any type: a wrong-typed value (a redefined attribute) must count as absent.
    doc["customAttributes"] = {k: v for k in TYPES if (v := draw(ANY_VALUE)) is not None}
    return doc


_view: list[DirectoryView] = []


def view() -> DirectoryView:
    if not _view:
        path = Path(tempfile.mkdtemp()) / "directory.sqlite"
        _view.append(make_view(DirectoryView, "directory", {"PERSISTENCE_MODULE": "eventsourcing.sqlite",
                                                            "DIRECTORY_SQLITE_DBNAME": str(path)}))
    return _view[0]


def sql_matches(v: DirectoryView, docs: list[dict[str, Any]], tree: dict[str, Any]) -> set[int]:
    with v.transaction() as c:
        v.ex(c, "DELETE FROM dir_contacts")
        for i, d in enumerate(docs):
            data = {k: x for k, x in d.items() if k != "primaryPhone"}
            v.ex(c, "INSERT INTO dir_contacts (id, organization_id, primary_phone, data, created_at, updated_at) "
                    "VALUES (?, 'org', ?, ?, 'x', 'x')", (str(i), d["primaryPhone"], dumps(data)))
    return {int(i) for i in v.matching_contact_ids("org", tree, TYPES)}


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(TREES, st.lists(contact(), min_size=1, max_size=8))
def test_rules_in_sql_agree_with_rules_in_memory(tree: dict[str, Any], docs: list[dict[str, Any]]) -> None:
    canonical = rules.parse(tree, TYPES)
    in_memory = {i for i, d in enumerate(docs) if rules.matches(canonical, d, TYPES)}
    assert sql_matches(view(), docs, canonical) == in_memory
