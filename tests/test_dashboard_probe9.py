"""What a browser needs from the dashboard's pages, checked without one (CI has no browser).

In headless Chromium the pages drew their charts, but plotly.js 3+ labelled the unpriced calls'
axis in fractions of a call (it lines an overlaying axis's ticks up with the main axis's
gridlines unless told otherwise), the legends covered the x axis's first date and title, every
page logged a 404 for /favicon.ico, and the Content-Security-Policy admitted any inline style
('unsafe-inline'). These tests hold what fixed that: a policy with no 'unsafe-inline' nor
'unsafe-eval' that still admits each <style> plotly.js writes (by its hash: the browser checks
the text a <style> is created with), pages with no inline style, script or handler for it to
refuse, every asset a page names served, and charts laid out as they drew right.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import importlib.resources
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import cache
from html.parser import HTMLParser
from typing import Any

import httpx
import pytest

from fake_providers import serve_app
from unitcost.api import Ledger
from unitcost.config import load_config
from unitcost.otlp.server import build_app
from unitcost.pricing.book import PriceBook
from unitcost.watch.detectors.base import Finding
from unitcost.watch.incidents import Incidents
from unitcost.watch.scope import Scope
from unitcost.web.dashboard import dashboard_routes, ledger_caller

WINDOW = "since=2025-09-01&until=2025-10-01"
PAGES = [
    f"/dashboard?{WINDOW}",
    f"/dashboard/report?by=team,model&{WINDOW}",
    "/dashboard/report?by=model&since=2025-09-10&until=2025-09-11&period=hour",
    "/dashboard/budgets?now=2025-09-20T12:00Z",
    "/dashboard/alerts",
    "/dashboard/report?by=colour",  # the 400 page is a page too
]
CONFIG = """
[[budget]]
name = "ops tiny"
scope = { team = "ops" }
amount = 0.01
period = "month"

[[budget]]
name = "ops roomy"
scope = { team = "ops" }
amount = 0.05
period = "month"
"""


def _call(event_id: str, hour: int, **kw: Any) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "ts": f"2025-09-10T{hour:02d}:15:00Z",
        "model": "gpt-4o",
        "input_tokens": 1_000,
        "output_tokens": 100,
        "team": "ops",
        **kw,
    }


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A dashboard over a few calls of 2025-09-10: priced ones, and 3 then 2 unpriced calls in
    two hours; two budgets (one far over); one open alert."""
    folder = tmp_path_factory.mktemp("probe9")
    config_path = folder / "unitcost.toml"
    config_path.write_text(CONFIG, encoding="utf-8")
    config = load_config(config_path)
    path = folder / "ledger.duckdb"
    unpriced = {"model": "our-own-llm", "provider": "self"}
    with Ledger(path, book=PriceBook(), config=config) as ledger:
        records = [_call(f"p{h}", h) for h in (9, 10, 11)]
        records += [_call(f"u9-{i}", 9, **unpriced) for i in range(3)]
        records += [_call(f"u11-{i}", 11, **unpriced) for i in range(2)]
        assert ledger.ingest_records(records).rejected == 0
        finding = Finding(
            "cost_per_hour",
            Scope.of(team="ops"),
            datetime(2025, 9, 10, 10, tzinfo=UTC),
            datetime(2025, 9, 10, 9, tzinfo=UTC),
            "Cost per hour up",
            15.0,
            10.0,
            "$/hour",
        )
        Incidents(ledger.store, cooldown=timedelta(hours=2), resolve_after=timedelta(hours=3)).apply(
            [finding], datetime(2025, 9, 10, 10, tzinfo=UTC)
        )
    call = ledger_caller(lambda: Ledger(path, config=config, read_only=True))
    with serve_app(build_app([dashboard_routes(call, config=config)])) as base:
        yield base


class Markup(HTMLParser):
    """What a browser's CSP and loader act on: scripts, style sheets and style elements, style
    attributes, event handler attributes, linked assets; plus the charts and budget meters."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.scripts: list[dict[str, str | None]] = []
        self.inline_scripts: list[str] = []
        self.style_elements = 0
        self.style_attributes: list[str] = []
        self.handlers: list[str] = []
        self.links: list[dict[str, str | None]] = []
        self.charts: list[dict[str, Any]] = []
        self.meters: list[dict[str, str | None]] = []
        self._in_script = False
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if "style" in a:
            self.style_attributes.append(f"<{tag} style={a['style']!r}>")
        self.handlers += [name for name in a if name.startswith("on")]
        if tag == "script":
            self.scripts.append(a)
            self._in_script = "src" not in a
        elif tag == "style":
            self.style_elements += 1
        elif tag == "link":
            self.links.append(a)
        elif tag == "meter":
            self.meters.append(a)
        if "data-chart" in a:
            self.charts.append(json.loads(str(a["data-chart"])))

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline_scripts.append(data)


def page(url: str, path: str) -> tuple[httpx.Response, Markup]:
    response = httpx.get(url + path, timeout=30)
    assert response.headers["content-type"].startswith("text/html"), response.text[:500]
    return response, Markup(response.text)


def csp(response: httpx.Response) -> dict[str, list[str]]:
    directives = [d.split() for d in response.headers["content-security-policy"].split(";") if d.strip()]
    return {d[0]: d[1:] for d in directives}


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


@cache
def plotly_style_texts() -> list[str]:
    """The text of each <style> the installed plotly.js creates: an empty one it fills through
    the CSSOM (its own rules), and those whose text is a literal in the bundle (maplibre's)."""
    bundle = importlib.resources.files("plotly").joinpath("package_data", "plotly.min.js").read_text()
    texts = []
    for created in re.finditer(r'createElement\("style"\)', bundle):
        after = bundle[created.end() : created.end() + 400]
        if 'createTextNode("")' in after:
            texts.append("")
        elif "textContent='" in after:
            text = bundle[created.end() :].split("textContent='", 1)[1].split("'", 1)[0]
            assert "\\" not in text, "an escape in the literal: its text is not the characters here"
            texts.append(text)
        else:
            pytest.fail(f"plotly.js creates a <style> this test cannot read: {after[:200]!r}")
    assert "" in texts  # plotly's own rules (hover labels, mode bar): without them charts look broken
    return texts


@pytest.mark.parametrize("path", PAGES)
def test_the_policy_admits_plotlys_styles_and_nothing_inline_or_evaluated(url: str, path: str) -> None:
    response, _ = page(url, path)
    policy = csp(response)
    everything = response.headers["content-security-policy"]
    assert "'unsafe-inline'" not in everything and "'unsafe-eval'" not in everything
    assert "'unsafe-hashes'" not in everything
    assert policy["script-src"] == ["'self'"]
    assert policy["object-src"] == ["'none'"] and policy["base-uri"] == ["'none'"]
    style_src = policy["style-src"]
    assert "'self'" in style_src
    for text in plotly_style_texts():
        assert _sha256(text) in style_src, f"plotly.js's <style> of {len(text)} characters is refused"
    # nothing else inline is admitted: 'self' and plotly's sheets' hashes only
    assert len(style_src) == 1 + len(set(plotly_style_texts()))


@pytest.mark.parametrize("path", PAGES)
def test_a_page_holds_nothing_its_policy_refuses(url: str, path: str) -> None:
    _, markup = page(url, path)
    assert markup.style_attributes == []  # style-src without 'unsafe-inline' refuses each of them
    assert markup.style_elements == 0
    assert markup.inline_scripts == [] and markup.handlers == []
    assert [s["src"] for s in markup.scripts] == [
        f"/dashboard/static/plotly-{importlib.metadata.version('plotly')}.min.js",
        "/dashboard/static/dashboard.js",
    ]


@pytest.mark.parametrize("path", PAGES)
def test_every_asset_a_page_names_is_served_and_it_names_its_icon(url: str, path: str) -> None:
    _, markup = page(url, path)
    icons = [link for link in markup.links if link.get("rel") == "icon"]
    # Without one a browser asks for /favicon.ico, a 404 logged as an error on every page.
    assert len(icons) == 1
    expected = {"stylesheet": "text/css", "icon": "image/svg+xml"}
    for link in markup.links:
        asset = httpx.get(url + str(link["href"]), timeout=30)
        assert asset.status_code == 200, link
        assert asset.headers["content-type"].startswith(expected[str(link["rel"])])
    for script in markup.scripts:
        asset = httpx.get(url + str(script["src"]), timeout=30)
        assert asset.status_code == 200 and asset.headers["content-type"].startswith("text/javascript")


def test_the_unpriced_calls_axis_counts_whole_calls(url: str) -> None:
    _, markup = page(url, "/dashboard/report?by=model&since=2025-09-10&until=2025-09-11&period=hour")
    (spend,) = [c for c in markup.charts if c["layout"]["title"]["text"] == "Spend per hour (UTC)"]
    unpriced = [t for t in spend["data"] if t.get("yaxis") == "y2"]
    assert [n for n in unpriced[0]["y"] if n] == [3, 2]
    axis = spend["layout"]["yaxis2"]
    # Left to plotly.js's default for an overlaying axis ("sync"), the ticks were 0, 0.7, 1.4...
    assert axis.get("tickmode") == "linear" and axis["tick0"] == 0 and axis["dtick"] == 1


@pytest.mark.parametrize(
    "path", [f"/dashboard?{WINDOW}", "/dashboard/budgets?now=2025-09-20T12:00Z"], ids=["spend", "budgets"]
)
def test_a_legend_has_room_of_its_own_under_the_x_axis(url: str, path: str) -> None:
    _, markup = page(url, path)
    shown = [c["layout"] for c in markup.charts if c["layout"].get("showlegend", True) and len(c["data"]) > 1]
    assert shown
    for layout in shown:
        legend = layout["legend"]
        # At plotly's default place (just under the plot area, in paper units) it covered the
        # first date's year and the axis title.
        assert (legend.get("yref"), legend.get("y"), legend.get("yanchor")) == ("container", 0, "bottom")
        assert layout["margin"]["b"] >= 70


def test_a_budgets_meter_is_its_share_used_capped_at_the_end(url: str) -> None:
    _, markup = page(url, "/dashboard/budgets?now=2025-09-20T12:00Z")
    # 3 priced calls of $0.0035 against $0.01 and $0.05
    assert [(m["value"], m["min"], m["max"], m["aria-label"]) for m in markup.meters] == [
        ("100.0", "0", "100", "105.0% used"),
        ("21.0", "0", "100", "21.0% used"),
    ]


def test_the_page_script_draws_each_chart_from_its_data(url: str) -> None:
    script = httpx.get(url + "/dashboard/static/dashboard.js", timeout=30).text
    # What CSP forbids without 'unsafe-eval', and what would make the data code.
    assert not re.search(r"\beval\(|new Function|setTimeout\(\s*['\"]|innerHTML", script)
    assert 'querySelectorAll("[data-chart]")' in script and "JSON.parse" in script
