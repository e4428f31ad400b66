"""The dashboard as `unitcost serve` hosts it: beside the OTLP receiver and the JSON API, on the
ledger the server writes, behind the [api] token when one is set (a browser gives it as the
password), with exports still recorded while pages are read."""

from __future__ import annotations

import base64
import html
import threading
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from otlp_payloads import genai_attributes, json_request, json_span
from test_web_api import TOKEN_VAR, WINDOW, make_world, served
from unitcost.cli import app as cli


@pytest.fixture
def world(tmp_path: Path) -> tuple[Path, Path]:
    """The JSON API tests' ledger and config: 41 calls in September, 3 of them unpriced, a budget."""
    return make_world(tmp_path)


def _basic(password: str, user: str = "finops") -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_the_served_dashboard_shows_the_reports_headline(world: tuple[Path, Path]) -> None:
    ledger, config = world
    with served(ledger, config) as server:
        home = server.get("/")
        page = server.get("/dashboard", params=WINDOW)
    cli_text = CliRunner().invoke(
        cli, ["report", "--ledger", str(ledger), "--since", WINDOW["since"], "--until", WINDOW["until"]]
    )
    assert home.status_code == 307 and home.headers["location"] == "/dashboard"
    assert page.status_code == 200
    first_line = cli_text.output.splitlines()[0]  # "$… spent …": the report's first headline line
    assert first_line.startswith("Spend $") and html.escape(first_line.split(" · ")[0]) in page.text
    assert "3 calls" in page.text and "acme-local-7b" in page.text  # unpriced, counted, named


def test_the_token_guards_the_pages_and_a_browser_can_give_it(
    world: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger, config = world
    config.write_text(config.read_text() + f'\n[api]\ntoken_env = "{TOKEN_VAR}"\n')
    monkeypatch.setenv(TOKEN_VAR, "s3cret-token")
    with served(ledger, config) as server:
        anonymous = server.get("/dashboard/budgets")
        wrong = server.get("/dashboard/budgets", headers=_basic("guess"))
        garbled = server.get("/dashboard/budgets", headers={"Authorization": "Basic %%%"})
        browser = server.get("/dashboard/budgets", headers=_basic("s3cret-token"))
        script = server.get("/dashboard/alerts", headers={"Authorization": "Bearer s3cret-token"})
        # A bearer token is not a browser's: the API still wants it as a bearer token.
        api_with_basic = server.get("/api/v1/budgets", headers=_basic("s3cret-token"))
        style = server.get("/dashboard/static/dashboard.css")
    for refused in (anonymous, wrong, garbled):
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"].startswith("Basic")  # the browser asks for it
        assert "s3cret" not in refused.text
    assert (browser.status_code, script.status_code) == (200, 200)
    assert "org" in browser.text  # the budget
    assert api_with_basic.status_code == 401
    assert style.status_code == 200  # no data in the assets


def test_exports_sent_while_pages_are_read_are_all_recorded(world: tuple[Path, Path]) -> None:
    """Pages read on cursors of their own, beside the writer's commits: no export waits on them
    or is lost, and the next page shows them."""
    ledger, config = world
    start = int(datetime(2025, 9, 19, 10, tzinfo=UTC).timestamp() * 1e9)
    done = threading.Event()
    pages: list[int] = []
    with served(ledger, config) as server:

        def browse() -> None:
            with httpx.Client(base_url=str(server.base_url), timeout=60) as browser:
                for _ in range(100):  # bounded: stops with the exports or after 100 pages
                    if done.is_set():
                        return
                    pages.append(
                        browser.get("/dashboard/report", params={**WINDOW, "by": "team"}).status_code
                    )

        reader = threading.Thread(target=browse)
        reader.start()
        try:
            exports = [
                server.post(
                    "/v1/traces",
                    json=json_request([json_span(genai_attributes(model="gpt-4o"), start_ns=start)]),
                ).status_code
                for _ in range(10)
            ]
        finally:
            done.set()
            reader.join(120)
        report = server.get("/api/v1/report", params=WINDOW).json()["headline"]
    assert exports == [200] * 10
    assert pages and set(pages) == {200}
    assert report["calls"] == 41 + 10
