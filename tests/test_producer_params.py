"""`--param key=value` parsing."""

from __future__ import annotations

import pytest

from producer.params import split_params

pytestmark = pytest.mark.unit


def parse_params(pairs: list[str]) -> dict:
    params, problems = split_params(pairs)
    assert problems == []
    return params


def test_values_are_json_when_they_parse_text_otherwise():
    assert parse_params(
        [
            "n=2",
            "go_fast=true",
            "ratio=16:9",
            'refs=["a.png","b.png"]',
            "s=0.5",
            "q='x'",
            "empty=",
            "seed=null",
            'text="42"',
        ]
    ) == {
        "n": 2,
        "go_fast": True,
        "ratio": "16:9",
        "refs": ["a.png", "b.png"],
        "s": 0.5,
        "q": "'x'",
        "empty": "",
        "seed": None,
        "text": "42",
    }


def test_value_may_contain_equals():
    assert parse_params(["prompt_suffix=a=b"]) == {"prompt_suffix": "a=b"}


def test_every_malformed_pair_is_reported():
    params, problems = split_params(["novalue", "1bad=2", "x=1", "x=2", "=3"])
    messages = [str(p) for p in problems]
    assert len(messages) == 4
    assert all("--param" in m for m in messages)
