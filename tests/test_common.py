"""The shared small helpers (shared/common.py): the one copy each module uses."""

from __future__ import annotations

import math

import pytest

from shared.common import format_usd, is_int, is_number, redact_url, type_name

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "value, expected",
    [
        (0, True),
        (-3, True),
        (2**70, True),
        (True, False),
        (False, False),
        (1.0, False),
        ("1", False),
        (None, False),
    ],
)
def test_is_int_leaves_out_bools_and_floats(value, expected):
    assert is_int(value) is expected


@pytest.mark.parametrize(
    "value, expected",
    [
        (0, True),
        (1.5, True),
        (-1e300, True),
        (math.nan, False),
        (math.inf, False),
        (-math.inf, False),  # not JSON, no parameter takes them
        (True, False),
        ("2", False),
        (None, False),
        ([1], False),
    ],
)
def test_is_number_is_finite_and_never_a_bool(value, expected):
    assert is_number(value) is expected


class Items(list):
    pass


@pytest.mark.parametrize(
    "value, expected",
    [
        (None, "null"),
        (True, "a boolean"),
        (3, "an integer"),
        (3.5, "a number"),
        ("x", "a string"),
        ([], "a list"),
        (Items(), "a list"),
        ({}, "an object"),
        ((1, 2), "tuple"),
        (b"x", "bytes"),
    ],
)
def test_type_name_says_what_a_json_value_is(value, expected):
    assert type_name(value) == expected


@pytest.mark.parametrize(
    "url, expected",
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://:s3cret@h:6379/1", "redis://:***@h:6379/1"),
        ("https://user:p@ss@api.example/v1/account", "https://user:***@api.example/v1/account"),
        ("sentinel://:s3cret@s1:26380/2;sentinel://s2", "sentinel://:***@s1:26380/2;sentinel://s2"),
        ("http://user@h/", "http://user@h/"),
    ],
)
def test_redact_url_hides_every_password(url, expected):
    assert redact_url(url) == expected


@pytest.mark.parametrize(
    "amount, expected",
    [
        (0.025, "$0.025"),
        (0.15, "$0.15"),
        (0.2, "$0.20"),
        (0, "$0.00"),
        (1234.5, "$1,234.50"),
        (0.0011, "$0.0011"),
        (0.00583, "$0.0058"),
        (0.3300000001, "$0.33"),
    ],
)
def test_format_usd_keeps_the_precision_a_price_has(amount, expected):
    assert format_usd(amount) == expected
