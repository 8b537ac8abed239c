"""Custom attribute values against their type, contact time zones, and live-audience rules
(parsing with errors that name the rule, and evaluation in memory)."""

from __future__ import annotations

import pytest

from domain import custom_attributes as ca
from domain import rules
from domain.errors import ValidationError
from domain.phone import timezone_for


@pytest.mark.parametrize(
    ("type_", "value", "from_text", "stored"),
    [
        ("number", 1500, False, 1500),
        ("number", "1500", True, 1500),
        ("number", "12,5", True, 12.5),
        ("number", 2.0, False, 2),
        ("boolean", "Yes", True, True),
        ("boolean", False, False, False),
        ("date", "2025-01-15", False, "2025-01-15"),
        ("date", "2025-01-15T10:00:00Z", True, "2025-01-15"),
        ("phone_number", "0612345678", True, "+212612345678"),
        ("email", " a@b.ma ", False, "a@b.ma"),
        ("url", "https://gomobile.ma/x", False, "https://gomobile.ma/x"),
        ("text", "  kept as is ", False, "  kept as is "),
        ("text", "   ", True, None),
        ("number", None, False, None),
    ],
)
def test_values_are_stored_in_their_types_canonical_form(type_, value, from_text, stored):
    assert ca.coerce(type_, value, from_text=from_text, region="MA") == stored


@pytest.mark.parametrize(
    ("type_", "value", "from_text"),
    [
        ("number", "12abc", True),
        ("number", True, False),
        ("number", "5", False),
        ("number", "nan", True),
        ("boolean", "maybe", True),
        ("boolean", 1, False),
        ("date", "15/01/2025", False),
        ("phone_number", "12", False),
        ("email", "not-an-email", False),
        ("url", "ftp://x.y", False),
        ("text", 3, False),
        ("text", "x" * 1025, False),
    ],
)
def test_values_of_the_wrong_type_are_refused(type_, value, from_text):
    with pytest.raises(ValueError):
        ca.coerce(type_, value, from_text=from_text, region="MA")


def test_slug_from_display_name():
    assert ca.slug_of("Account Balance") == "account_balance"
    assert ca.slug_of(" Dernière visite! ") == "derni_re_visite"
    assert ca.slug_of("2nd phone") == "attr_2nd_phone"


def test_time_zone_follows_the_number_not_phonenumbers_coarse_guess():
    # phonenumbers alone says Atlantic/Canary for every Moroccan number.
    assert timezone_for("+212612345678", "MA", "Africa/Casablanca") == "Africa/Casablanca"
    assert timezone_for("+213551234567", "MA", "Africa/Casablanca") == "Africa/Algiers"
    assert timezone_for("+14155552671", "MA", "Africa/Casablanca") == "America/Los_Angeles"
    assert timezone_for("+61412345678", "MA", "Africa/Casablanca") is None  # ambiguous, foreign


TYPES = {"balance": "number", "vip": "boolean", "since": "date", "site": "url"}


def test_rules_parse_to_a_canonical_tree():
    tree = rules.parse(
        {"combinator": "and", "rules": [
            {"field": "city", "operator": "equals", "value": "Rabat"},
            {"combinator": "OR", "rules": [
                {"field": "customAttributes.balance", "operator": "gt", "value": 10},
                {"field": "custom.vip", "operator": "is_not_empty", "value": "ignored"},
            ]},
        ]},
        TYPES,
    )
    assert tree == {"combinator": "AND", "rules": [
        {"field": "city", "operator": "equals", "value": "Rabat"},
        {"combinator": "OR", "rules": [
            {"field": "custom.balance", "operator": "gt", "value": 10},
            {"field": "custom.vip", "operator": "is_not_empty"},
        ]},
    ]}


@pytest.mark.parametrize(
    ("tree", "path", "words"),
    [
        ({"combinator": "AND", "rules": [{"field": "city", "operator": "gt", "value": "A"}]}, "rules[0]", "not allowed on text"),
        ({"combinator": "AND", "rules": [{"field": "custom.vip", "operator": "contains", "value": "x"}]}, "rules[0]", "not allowed on boolean"),
        ({"combinator": "AND", "rules": [{"field": "city", "operator": "equals", "value": "x"},
                                         {"field": "custom.balance", "operator": "gte", "value": "10"}]}, "rules[1]", "must be a number"),
        ({"combinator": "AND", "rules": [{"field": "nope", "operator": "equals", "value": "x"}]}, "rules[0]", "unknown field"),
        ({"combinator": "AND", "rules": [{"field": "city", "operator": "like", "value": "x"}]}, "rules[0]", "unknown operator"),
        ({"combinator": "XOR", "rules": [{"field": "city", "operator": "equals", "value": "x"}]}, "rules", "combinator"),
        ({"combinator": "AND", "rules": []}, "rules", "non-empty"),
        ({"combinator": "AND", "rules": [{"combinator": "OR", "rules": [
            {"combinator": "AND", "rules": [{"field": "city", "operator": "is_empty"}]}]}]}, "rules[0].rules[0]", "too deep"),
        ({"combinator": "AND", "rules": [{"field": "custom.since", "operator": "lt", "value": "yesterday"}]}, "rules[0]", "date"),
    ],
)
def test_a_bad_rule_is_named_by_its_path(tree, path, words):
    with pytest.raises(ValidationError) as caught:
        rules.parse(tree, TYPES)
    assert list(caught.value.field_errors) == [path]
    assert words in caught.value.field_errors[path][0]


def test_evaluation_in_memory():
    tree = rules.parse({"combinator": "AND", "rules": [
        {"field": "city", "operator": "equals", "value": "Rabat"},
        {"combinator": "OR", "rules": [
            {"field": "custom.balance", "operator": "gte", "value": 1000},
            {"field": "custom.vip", "operator": "equals", "value": True},
        ]},
    ]}, TYPES)
    doc = {"primaryPhone": "+212612345678", "city": "Rabat", "customAttributes": {"balance": 1500}}
    assert rules.matches(tree, doc, TYPES)
    assert not rules.matches(tree, {**doc, "city": "rabat"}, TYPES)  # exact text comparison
    assert not rules.matches(tree, {**doc, "customAttributes": {"balance": 10}}, TYPES)
    assert rules.matches(tree, {**doc, "customAttributes": {"balance": 10, "vip": True}}, TYPES)
    # A value of the wrong type (an attribute redefined since) counts as absent.
    assert not rules.matches(tree, {**doc, "customAttributes": {"balance": "1500"}}, TYPES)
    absent = rules.parse({"combinator": "OR", "rules": [
        {"field": "city", "operator": "not_equals", "value": "Rabat"},
        {"field": "lastName", "operator": "is_empty"},
    ]}, TYPES)
    assert rules.matches(absent, {"city": "Fes", "lastName": "B"}, TYPES)
    assert rules.matches(absent, {"city": "Rabat", "lastName": ""}, TYPES)
    assert not rules.matches(absent, {"city": "Rabat", "lastName": "B"}, TYPES)


def test_the_nul_character_is_refused_in_contact_text_and_text_attributes() -> None:
    """PostgreSQL's text and jsonb cannot hold U+0000: refused at the door, naming the field."""
    import pytest as _pytest

    from domain import custom_attributes as _ca
    from domain.contact import clean_fields as _clean
    from domain.errors import ValidationError as _VE

    with _pytest.raises(_VE) as exc:
        _clean({"firstName": "Am\x00ina"})
    assert "firstName" in exc.value.field_errors and "U+0000" in exc.value.field_errors["firstName"][0]
    for type_ in ("text", "email", "url"):
        with _pytest.raises(ValueError, match="U\\+0000"):
            _ca.coerce(type_, "a\x00b")
    assert _clean({"firstName": "Amina"}) == {"firstName": "Amina"}
