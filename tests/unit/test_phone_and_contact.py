"""Phone numbers are stored in E.164; national numbers use the organization's default region
(DOMAIN.md §3.3, §10.8). Bad input is a ValidationError naming the field."""

from __future__ import annotations

from uuid import uuid4

import pytest

from domain.contact import Contact, clean_fields, contact_id
from domain.errors import ValidationError
from domain.phone import region_of, to_caller_id, to_e164


@pytest.mark.parametrize(
    "raw",
    ["+212612345678", "0612345678", "212612345678", "06 12 34 56 78", "06-12-34-56-78", " +212 6 12 34 56 78 "],
)
def test_moroccan_forms_normalise_to_one_e164(raw):
    assert to_e164(raw, "MA") == "+212612345678"


def test_region_is_case_insensitive_and_landlines_work():
    assert to_e164("0522123456", "ma") == "+212522123456"
    assert region_of("+212522123456") == "MA"


def test_international_numbers_keep_their_own_country():
    assert to_e164("+33612345678", "MA") == "+33612345678"
    assert to_e164("0612345678", "FR") == "+33612345678"


@pytest.mark.parametrize(
    "raw",
    ["", "   ", None, 612345678, "12", "abc", "+2126123", "0612", "+2126123456789", "1" * 40],
)
def test_invalid_numbers_raise_validation_error_naming_the_field(raw):
    with pytest.raises(ValidationError) as caught:
        to_e164(raw, "MA")
    assert list(caught.value.field_errors) == ["primaryPhone"]
    assert caught.value.message.startswith("primaryPhone: ")


def test_national_number_without_a_region_is_refused():
    with pytest.raises(ValidationError):
        to_e164("0612345678", None)


def test_the_field_name_is_the_callers():
    with pytest.raises(ValidationError) as caught:
        to_e164("abc", "MA", field="data[3].primaryPhone")
    assert list(caught.value.field_errors) == ["data[3].primaryPhone"]


def test_caller_ids_only_need_to_be_possible_numbers():
    assert to_caller_id("+212500000001", "MA", "didPool[0]") == "+212500000001"
    with pytest.raises(ValidationError) as caught:
        to_caller_id("12", "MA", "didPool[0]")
    assert list(caught.value.field_errors) == ["didPool[0]"]


def test_one_contact_per_organization_and_e164_phone():
    org = uuid4()
    e164 = to_e164("0612345678", "MA")
    assert contact_id(org, e164) == contact_id(org, to_e164("+212612345678", "MA"))
    assert contact_id(org, e164) != contact_id(uuid4(), e164)
    contact = Contact(org, e164, "0612345678", {"firstName": "Test", "customAttributes": {"balance": 1500}})
    assert contact.id == contact_id(org, e164)
    contact.update({"customAttributes": {"city": "Rabat"}, "lastName": "User"})
    # only the custom attributes that are sent change (§3.5)
    assert contact.snapshot() == {
        "id": str(contact.id),
        "phone": "+212612345678",
        "firstName": "Test",
        "lastName": "User",
        "customAttributes": {"balance": 1500, "city": "Rabat"},
    }


def test_clean_fields_reports_every_bad_field():
    with pytest.raises(ValidationError) as caught:
        clean_fields({"firstName": 3, "gender": "other", "city": "x" * 257, "customAttributes": [1]})
    assert set(caught.value.field_errors) == {"firstName", "gender", "city", "customAttributes"}
    assert clean_fields({"firstName": "A", "ignored": 1, "gender": None}) == {"firstName": "A", "gender": None}
