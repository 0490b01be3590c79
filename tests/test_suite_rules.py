"""The suite's own rules. A test that needs a tool the machine lacks skips, except where the tool is
required (CI): there it fails, so CI cannot pass by proving less (tests/support/requirements.py).
A unit test that asks for a server fails, so the unit tier stays fast (tests/support/unit.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support import requirements
from tests.support.requirements import Tool, required

ROOT = Path(__file__).resolve().parent.parent
CI_SCRIPT = ROOT / ".ci" / "run"


@pytest.mark.unit
def test_a_tool_is_required_in_ci_or_when_named():
    assert required("browser", {"CI": "true"}) and required("netns", {"CI": "1"})
    assert required("faketime", {"FLEET_REQUIRE": "all"})
    assert required("netns", {"FLEET_REQUIRE": "browser, netns"})
    assert not required("faketime", {"FLEET_REQUIRE": "browser,netns"})
    assert not required("browser", {}) and not required("browser", {"CI": "false"})
    assert not required("browser", {"CI": ""})


@pytest.mark.unit
def test_ci_requires_every_tool_and_installs_it():
    script = CI_SCRIPT.read_text()
    assert re.search(r"^export FLEET_REQUIRE=all\b", script, flags=re.MULTILINE)
    for package in ("chromium", "faketime", "iproute2", "redis-server"):
        assert re.search(rf"\b{package}\b", script), f".ci/run does not install {package}"


@pytest.mark.unit
def test_the_code_type_checks(monkeypatch):
    """make check's mypy (settings in pyproject.toml), also in the unit tier that every landing
    runs: a type error on main would fail CI's make check before any test. In process and
    incremental (.mypy_cache): about 10 s cold, under a second after."""
    from mypy import api

    monkeypatch.chdir(ROOT)
    out, err, status = api.run([])
    assert status == 0, out + err


@pytest.fixture
def absent_tool(monkeypatch):
    monkeypatch.setitem(
        requirements.TOOLS, "absent-tool", Tool(lambda: "not on this machine", "apt-get install it")
    )
    requirements.missing.cache_clear()
    yield "absent-tool"
    requirements.missing.cache_clear()


@pytest.mark.parametrize("require, outcome", [("", "skipped"), ("absent-tool", "errors"), ("all", "errors")])
def test_a_missing_tool_skips_unless_required(pytester, monkeypatch, absent_tool, require, outcome):
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setenv("FLEET_REQUIRE", require)
    pytester.makepyfile("""
        import pytest

        @pytest.mark.needs("absent-tool")
        def test_uses_it():
            pass
    """)
    result = pytester.runpytest_inprocess(
        "-p", "tests.support.requirements", "-p", "no:cacheprovider", "-rsf"
    )
    result.assert_outcomes(**{outcome: 1})
    result.stdout.fnmatch_lines(["*not on this machine (apt-get install it)*"])


@pytest.mark.parametrize(
    "fixture, outcome", [("tmp_path", "passed"), ("redis_client", "errors"), ("sim", "errors")]
)
def test_a_unit_test_that_asks_for_a_server_fails(pytester, fixture, outcome):
    pytester.makepyfile(f"""
        import pytest

        @pytest.fixture
        def {fixture}():
            return None  # never a real server here: the rule looks at the names a test asks for

        @pytest.mark.unit
        def test_uses_it({fixture}):
            pass
    """)
    result = pytester.runpytest_inprocess("-p", "tests.support.unit", "-p", "no:cacheprovider")
    result.assert_outcomes(**{outcome: 1})
