"""The documentation page: served locally, and rendered by a real browser."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from flask import Flask

from tests.conftest import make_app
from tests.live import Server
from tests.test_users import assert_envelope

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SPEC = "/v1/internal/openapi.json"


@pytest.fixture
def plain(sqlite_url: str, redis_url: str) -> Flask:
    return make_app(sqlite_url, redis_url)


def test_page_has_the_first_request_guide_and_its_own_csp(plain: Flask) -> None:
    response = plain.test_client().get("/docs")
    page = response.get_data(as_text=True)

    assert response.status_code == 200
    assert response.mimetype == "text/html"
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-eval" not in csp and "'unsafe-inline'" not in csp.split(";")[1]
    assert (
        'curl -s http://localhost/v1/internal -H "x-api-key: $PARTNER_API_KEY"' in page
    )
    assert "http" not in page.split("<script", 1)[1].split(">", 1)[0]
    assert f'data-spec-url="{SPEC}"' in page


@pytest.mark.parametrize(
    ("name", "mimetype"),
    [
        ("swagger-ui-bundle.js", "text/javascript"),
        ("swagger-ui.css", "text/css"),
        ("docs.js", "text/javascript"),
        ("docs.css", "text/css"),
    ],
)
def test_assets_are_served_from_the_app(plain: Flask, name: str, mimetype: str) -> None:
    response = plain.test_client().get(f"/docs/assets/{name}")

    assert response.status_code == 200
    assert response.mimetype == mimetype
    assert "max-age" in response.headers["Cache-Control"]
    response.close()


@pytest.mark.parametrize(
    "name", ["index.html", "..%2Fdocs.py", "LICENSE", "swagger-ui.js.map"]
)
def test_nothing_else_is_served(plain: Flask, name: str) -> None:
    assert_envelope(plain.test_client().get(f"/docs/assets/{name}"), 404, "not_found")


# --- in a browser -------------------------------------------------------------


@pytest.fixture
def browser() -> Iterator[Any]:
    """Headless Chromium through chromedriver, with a profile of its own."""
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.path.exists(path)]
    if missing:
        pytest.skip(
            f"{' and '.join(missing)} not installed: apt-get install chromium "
            "chromium-driver (.ci/run does)"
        )

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="partner-api-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def test_the_page_renders_every_operation(
    sqlite_url: str, redis_url: str, browser: Any
) -> None:
    make_app(sqlite_url, redis_url)
    server = Server({"DATABASE_URL": sqlite_url, "REDIS_URL": redis_url}, workers=1)
    try:
        spec = requests.get(f"{server.url}{SPEC}", timeout=10).json()
        expected = {
            (method.upper(), path)
            for path, item in spec["paths"].items()
            for method in item
            if method != "parameters"
        }
        browser.get(f"{server.url}/docs")
        rendered = wait_for_operations(browser, len(expected))
        guide = browser.find_element("id", "first-request").text
        console = browser.get_log("browser")
    finally:
        server.stop()

    assert rendered == expected
    assert "x-api-key: $PARTNER_API_KEY" in guide
    # A script blocked by the CSP, or a failed request, shows up here.
    assert [entry for entry in console if entry["level"] == "SEVERE"] == []


def wait_for_operations(browser: Any, count: int) -> set[tuple[str, str]]:
    """The (method, path) of each operation Swagger UI drew, once all are."""
    deadline = time.monotonic() + 20
    while True:
        blocks = browser.find_elements("css selector", ".opblock-summary")
        if len(blocks) >= count or time.monotonic() > deadline:
            break

        time.sleep(0.2)

    return {
        (
            block.find_element("css selector", ".opblock-summary-method").text,
            block.find_element("css selector", ".opblock-summary-path").text,
        )
        for block in blocks
    }
