"""The page's files as the gateway serves them (no browser needed)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.settings import GatewaySettings


@pytest.fixture
def client() -> TestClient:
    # The page needs no NATS: the app is served without its lifespan (no `with`).
    # Sync on purpose: this session's Playwright owns the main thread's event loop.
    # A loopback Host: with auth off, another is refused (DNS rebinding).
    return TestClient(create_app(GatewaySettings()), base_url="http://127.0.0.1")


def test_the_page_and_its_modules_are_served_with_a_strict_policy(
    client: TestClient,
) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "default-src 'self'" in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    assert '<script type="module" src="/static/js/main.js">' in page.text
    # Nothing is fetched from elsewhere.
    assert "http://" not in page.text and "https://" not in page.text

    for path in ("/static/js/main.js", "/static/js/markdown.js", "/static/app.css"):
        served = client.get(path)
        assert served.status_code == 200, path
    module = client.get("/static/js/main.js")
    assert module.headers["content-type"].startswith("text/javascript")
    assert (client.get("/static/app.css")).headers["content-type"].startswith("text/css")


@pytest.mark.parametrize(
    "path",
    [
        "/static/../settings.py",
        "/static/%2e%2e/settings.py",
        "/static/..%2fapp.py",
        "/static/js/../../protocols/page.py",
        "/static/nothing.js",
        "/static/js",
    ],
)
def test_nothing_outside_the_static_files_is_served(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
