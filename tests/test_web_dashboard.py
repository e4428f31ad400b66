"""The dashboard in the browser shows what the CLI says: the same figures, as the same strings.

A demo month is ingested into a DuckDB ledger, with a few calls of our own (a team named
like a script, a team with a comma in its name); the dashboard is mounted as `unitcost serve`
mounts it (on the server's ledger writer) and served by uvicorn on 127.0.0.1; the pages are
fetched with httpx and compared with `unitcost report`, `budgets` and `alerts`, run on the
same ledger before the server took it.
"""

from __future__ import annotations

import importlib.resources
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest
from typer.testing import CliRunner

from fake_providers import serve_app
from unitcost.api import Ledger
from unitcost.cli import app as cli_app
from unitcost.config import load_config
from unitcost.demo.generator import generate
from unitcost.otlp.server import build_app, ledger_writer
from unitcost.pricing.book import PriceBook
from unitcost.watch.detectors.base import Finding
from unitcost.watch.incidents import Incidents
from unitcost.watch.scope import Scope
from unitcost.web.dashboard import dashboard_routes, ledger_caller

SEPTEMBER = ("--since", "2025-09-01", "--until", "2025-10-01")
WINDOW = "since=2025-09-01&until=2025-10-01"
SCRIPT_TEAM = '<script>alert("pwned")</script>'
QUOTE_TEAM = "O'Brien & <b>sons</b>"
COMMA_TEAM = "north,east"
NOW = "2025-09-20T12:00:00Z"
CONFIG = """
[[budget]]
name = "eng monthly"
scope = { team = "eng" }
amount = 150
period = "month"
timezone = "Europe/Paris"

[[budget]]
name = "support weekly"
scope = { team = "support" }
amount = 2
period = "week"
"""

# What the CLI prints for the same questions, run before the server holds the ledger.
CLI_RUNS = {
    "team_model": ["report", *SEPTEMBER, "--by", "team,model", "--wide"],
    "team_top": ["report", *SEPTEMBER, "--by", "team", "--top", "5"],
    "model_top": ["report", *SEPTEMBER, "--by", "model", "--top", "5"],
    "model": ["report", *SEPTEMBER, "--by", "model", "--wide"],
    "eng_by_model": ["report", *SEPTEMBER, "--by", "model", "--where", "team=eng", "--wide"],
    "day": ["report", *SEPTEMBER, "--by", "feature", "--period", "week", "--top", "3", "--wide"],
    "budgets": ["budgets", "--now", NOW],
    "alerts": ["alerts", "--status", "open"],
}


@dataclass
class Served:
    url: str
    cli: dict[str, str]


def _call(event_id: str, team: str, **kw: Any) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "ts": "2025-09-10T10:00:00Z",
        "model": "gpt-4o",
        "input_tokens": 1_000,
        "output_tokens": 100,
        "team": team,
        **kw,
    }


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    folder = tmp_path_factory.mktemp("dashboard")
    month = generate(seed=5, scale=0.01)
    events, outcomes = folder / "events.jsonl", folder / "outcomes.csv"
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.register("events", month.events)
    con.register("outcomes", month.outcomes)
    con.execute(f"COPY events TO '{events}' (FORMAT JSON)")
    con.execute(f"COPY outcomes TO '{outcomes}' (FORMAT CSV, HEADER)")
    con.close()
    config_path = folder / "unitcost.toml"
    config_path.write_text(CONFIG, encoding="utf-8")
    config = load_config(config_path)
    path = folder / "ledger.duckdb"
    with Ledger(path, book=PriceBook(), config=config) as ledger:
        assert ledger.ingest(events).rejected == 0
        ledger.import_outcomes(outcomes)
        summary = ledger.ingest_records(
            [
                _call("x-script", SCRIPT_TEAM),
                _call("x-quote", QUOTE_TEAM),
                _call("x-comma", COMMA_TEAM),
                _call("x-unpriced", COMMA_TEAM, model="our-own-llm", provider="self"),
            ]
        )
        assert summary.rejected == 0
        # An open alert whose scope and title come from user data.
        finding = Finding(
            "cost_per_hour",
            Scope.of(team=SCRIPT_TEAM),
            datetime(2025, 9, 17, 10, tzinfo=UTC),
            datetime(2025, 9, 17, 9, tzinfo=UTC),
            "Cost per hour up <img src=x onerror=alert(1)>",
            15.0,
            10.0,
            "$/hour",
        )
        Incidents(ledger.store, cooldown=timedelta(hours=2), resolve_after=timedelta(hours=3)).apply(
            [finding], datetime(2025, 9, 17, 10, tzinfo=UTC)
        )
    runner = CliRunner()
    cli = {}
    for name, args in CLI_RUNS.items():
        result = runner.invoke(
            cli_app, [*args, "--ledger", str(path), "--config", str(config_path), "--format", "markdown"]
        )
        assert result.exit_code == 0, result.output
        cli[name] = result.stdout
    writer = ledger_writer(Ledger(path, book=PriceBook(), config=config), config=config)
    app = build_app([dashboard_routes(writer.call, config=config)], on_shutdown=[writer.close])
    with serve_app(app) as url:
        yield Served(url, cli)


# --------------------------------------------------------------------------- reading pages


class Page(HTMLParser):
    """The parts of a page the tests read: its tables (title, headers, cells, links, caption),
    the headline lines, charts, error message and every src/href."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tables: list[dict[str, Any]] = []
        self.headline: list[str] = []
        self.charts: list[Any] = []
        self.urls: list[str] = []
        self.error = ""
        self._text: list[str] | None = None
        self._where = ""
        self._row: list[str] | None = None
        self._links: list[str | None] | None = None
        self._href: str | None = None
        self._section: dict[str, Any] | None = None
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        for key in ("src", "href", "action"):
            if a.get(key):
                self.urls.append(str(a[key]))
        classes = (a.get("class") or "").split()
        if tag == "section" and "table" in classes:
            self._section = {
                "title": "",
                "headers": [],
                "rows": [],
                "links": [],
                "caption": "",
                "id": a.get("id"),
            }
            self.tables.append(self._section)
        elif tag == "figure" and "data-chart" in a:
            self.charts.append(json.loads(str(a["data-chart"])))
        elif tag == "tr" and self._section is not None:
            self._row, self._links = [], []
        elif tag in ("td", "th", "h2") or (
            tag == "p" and classes and classes[0] in ("caption", "error-message")
        ):
            self._text, self._where = [], tag if tag != "p" else classes[0]
            self._href = None
        elif tag == "p" and self._in_headline:
            self._text, self._where = [], "headline"
        elif tag == "section" and "headline" in classes:
            self._in_headline = True
        elif tag == "a" and self._text is not None:
            self._href = a.get("href")

    _in_headline = False

    def handle_endtag(self, tag: str) -> None:
        if tag == "section":
            self._in_headline = False
        if tag == "tr" and self._row is not None and self._section is not None:
            if self._header_row:
                self._section["headers"] = self._row
            else:
                self._section["rows"].append(self._row)
                self._section["links"].append(self._links)
            self._row, self._header_row = None, False
        if self._text is None:
            return
        text = "".join(self._text).strip()
        if tag in ("td", "th") and self._row is not None:
            self._row.append(text)
            assert self._links is not None
            self._links.append(self._href)
            self._header_row = tag == "th"
        elif tag == "h2" and self._section is not None:
            self._section["title"] = text
        elif tag == "p" and self._where == "caption" and self._section is not None:
            self._section["caption"] = text
        elif tag == "p" and self._where == "error-message":
            self.error = text
        elif tag == "p" and self._where == "headline":
            self.headline.append(text)
        else:
            return
        self._text = None

    _header_row = False

    def handle_data(self, data: str) -> None:
        if self._text is not None:
            self._text.append(data)

    def table(self, title: str) -> dict[str, Any]:
        found = [t for t in self.tables if t["title"] == title]
        assert found, f"no table {title!r} in {[t['title'] for t in self.tables]}"
        return found[0]


def markdown_tables(text: str) -> dict[str, dict[str, Any]]:
    """The CLI's markdown tables by title: headers, rows of cell strings, the caption after."""
    tables: dict[str, dict[str, Any]] = {}
    lines = text.splitlines()
    for i, line in enumerate(lines):
        match = re.fullmatch(r"\*\*(.+)\*\*", line.strip())
        if not match:
            continue
        rows = []
        j = i + 2
        while j < len(lines) and lines[j].startswith("|"):
            rows.append([c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", lines[j])[1:-1]])
            j += 1
        caption = lines[j + 1].strip() if j + 1 < len(lines) and lines[j].strip() == "" else ""
        if caption.startswith(("**", "|", "- ")):
            caption = ""
        tables[match.group(1)] = {"headers": rows[0], "rows": rows[2:], "caption": caption}
    return tables


def headline(cli: str) -> list[str]:
    return [line[2:] for line in cli.splitlines() if line.startswith("- ") and "spend per " not in line]


def get(served: Served, path: str, code: int = 200) -> Page:
    response = httpx.get(served.url + path, timeout=30)
    assert response.status_code == code, response.text[:2000]
    assert response.headers["content-type"].startswith("text/html")
    return Page(response.text)


# --------------------------------------------------------------------------- the same figures


def test_the_drill_down_table_is_the_reports_to_the_cent(served: Served) -> None:
    page = get(served, f"/dashboard/report?by=team,model&{WINDOW}")
    cli = markdown_tables(served.cli["team_model"])
    assert page.headline == headline(served.cli["team_model"])
    table = page.table("By team, model")
    assert table["headers"] == cli["By team, model"]["headers"]
    assert table["rows"] == cli["By team, model"]["rows"]
    assert len(table["rows"]) > 10
    for title in ("Business units", "Unpriced calls (counted, never $0)"):
        assert page.table(title)["rows"] == cli[title]["rows"]


def test_the_overview_shows_the_reports_headline_and_top_groups(served: Served) -> None:
    page = get(served, f"/dashboard?{WINDOW}")
    assert page.headline == headline(served.cli["team_top"])
    assert page.headline[0].startswith("Spend $")
    for name, dim in (("team_top", "team"), ("model_top", "model")):
        cli = markdown_tables(served.cli[name])[f"By {dim}"]
        shown = page.table(f"Top 5 {dim}s")
        columns = [cli["headers"].index(h) for h in shown["headers"]]
        assert shown["rows"] == [[row[i] for i in columns] for row in cli["rows"]]
        # what the top five leave out, so the rows and this line add up to the headline
        assert shown["caption"] == cli["caption"] and shown["caption"].startswith("and ")
    # the spend per day is drawn from the report's buckets, one per day of September
    (chart,) = page.charts
    assert len(chart["data"][0]["x"]) == 30 and chart["layout"]["title"]["text"] == "Spend per day (UTC)"


def test_unpriced_calls_are_counted_and_never_shown_as_zero(served: Served) -> None:
    page = get(served, f"/dashboard/report?by=model&{WINDOW}")
    cli = markdown_tables(served.cli["model"])
    unpriced = page.table("Unpriced calls (counted, never $0)")
    assert unpriced["rows"] == cli["Unpriced calls (counted, never $0)"]["rows"]
    assert any(row[:3] == ["self", "our-own-llm", "1"] for row in unpriced["rows"])
    table = page.table("By model")
    row = next(r for r in table["rows"] if r[0] == "our-own-llm")
    headers = table["headers"]
    assert row[headers.index("spend")] == "—" and row[headers.index("unpriced")] == "1"
    # the headline counts them, and the page says so above everything else
    line = next(line for line in page.headline if line.startswith("unpriced: "))
    assert line == next(line for line in headline(served.cli["model"]) if line.startswith("unpriced: "))
    response = httpx.get(f"{served.url}/dashboard?{WINDOW}", timeout=30)
    alarm = re.search(r'<section class="unpriced-alarm"[^>]*>(.*?)</section>', response.text, re.S)
    assert alarm is not None
    calls = re.search(r"unpriced: ([\d,]+) calls", line)
    assert calls is not None and f"<strong>{calls.group(1)} calls</strong>" in alarm.group(1)


def test_a_period_split_with_top_is_the_reports(served: Served) -> None:
    page = get(served, f"/dashboard/report?by=feature&period=week&top=3&{WINDOW}")
    cli = markdown_tables(served.cli["day"])["By feature, period"]
    table = page.table("By feature, period")
    assert table["rows"] == cli["rows"] and table["caption"] == cli["caption"]


# --------------------------------------------------------------------------- drill-down


def test_drill_down_parameters_narrow_the_report(served: Served) -> None:
    page = get(served, f"/dashboard/report?by=model&where=team%3Deng&{WINDOW}")
    cli = markdown_tables(served.cli["eng_by_model"])["By model"]
    assert page.table("By model")["rows"] == cli["rows"]
    assert page.headline == headline(served.cli["eng_by_model"])


def test_each_value_links_to_the_report_narrowed_to_it(served: Served) -> None:
    overview = get(served, f"/dashboard?{WINDOW}")
    teams = overview.table("Top 5 teams")
    eng = teams["rows"].index(next(r for r in teams["rows"] if r[0] == "eng"))
    link = teams["links"][eng][0]
    assert link.startswith("/dashboard/report?")
    page = get(served, link)
    assert page.table("By model")["rows"] == markdown_tables(served.cli["eng_by_model"])["By model"]["rows"]
    # a value with a comma in it is one value, not two
    page = get(served, f"/dashboard/report?by=team&{WINDOW}")
    table = page.table("By team")
    index = next(i for i, r in enumerate(table["rows"]) if r[0] == COMMA_TEAM)
    narrowed = get(served, table["links"][index][0])
    rows = narrowed.table("By model")["rows"]
    assert sorted(r[0] for r in rows) == ["gpt-4o", "our-own-llm"]


# --------------------------------------------------------------------------- escaping


def test_user_data_is_escaped_everywhere(served: Served) -> None:
    for path in (f"/dashboard?{WINDOW}", f"/dashboard/report?by=team&{WINDOW}", "/dashboard/alerts"):
        response = httpx.get(served.url + path, timeout=30)
        assert response.status_code == 200
        body = response.text
        assert "<script>alert(" not in body and "<img src=x" not in body and "<b>sons" not in body
        assert "&lt;script&gt;alert(" in body
        # the only scripts are the dashboard's own, from this server
        assert re.findall(r"<script[^>]*>", body) == [
            f'<script src="/dashboard/static/{_plotly_name()}">',
            '<script src="/dashboard/static/dashboard.js">',
        ]
        assert "script-src 'self'" in response.headers["content-security-policy"]
    page = get(served, f"/dashboard/report?by=team&{WINDOW}")
    assert SCRIPT_TEAM in [r[0] for r in page.table("By team")["rows"]]
    # the chart's data survives a quote in a team name, as data
    (groups,) = [c for c in page.charts if c["data"][0].get("orientation") == "h"]
    assert QUOTE_TEAM in groups["data"][0]["y"] and SCRIPT_TEAM in groups["data"][0]["y"]


def test_open_alerts_show_their_explanation(served: Served) -> None:
    response = httpx.get(f"{served.url}/dashboard/alerts", timeout=30)
    page = Page(response.text)
    cli = markdown_tables(served.cli["alerts"])
    ((title, cli_table),) = cli.items()
    table = page.table(title)
    assert table["rows"] == cli_table["rows"] and len(table["rows"]) == 1
    message = re.search(r'<pre class="message">(.*?)</pre>', response.text, re.S)
    assert message is not None
    assert "what changed: $/hour 15.00 against 10.00 expected (+50%)" in message.group(1)
    assert "&lt;img src=x onerror=alert(1)&gt;" in message.group(1)
    alert_id = table["rows"][0][0]
    detail = get(served, f"/dashboard/alerts/{alert_id}")
    assert [r[1] for r in detail.table("History")["rows"]] == ["opened"]


def test_budgets_show_spend_forecast_and_run_out_day_as_the_cli(served: Served) -> None:
    page = get(served, f"/dashboard/budgets?now={NOW}")
    ((title, cli),) = markdown_tables(served.cli["budgets"]).items()
    table = page.table(title)
    assert title == "Budgets at 2025-09-20 12:00 UTC"
    headers = table["headers"]
    assert headers[: len(cli["headers"])] == cli["headers"]
    assert [row[: len(cli["headers"])] for row in table["rows"]] == cli["rows"]
    eng = dict(zip(headers, table["rows"][0], strict=True))
    # the month in the budget's own time zone, a forecast with its 90 % interval, a run-out day
    assert eng["period"] == "month from 2025-09-01 (Europe/Paris)"
    assert re.fullmatch(r"\$[\d,]+\.\d\d – \$[\d,]+\.\d\d", eng["forecast 90 %"])
    assert re.fullmatch(r"2025-\d\d-\d\d|not this period", eng["runs out"])
    assert eng["forecast basis"].startswith("mean of ")


# --------------------------------------------------------------------------- bad parameters


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("report?by=nope", "unknown dimension 'nope'; use one of provider, model,"),
        (
            "report?since=yesterday",
            "since: not a date, a datetime, a month (2025-09) or an age like 30d/12h/2w",
        ),
        ("report?since=2025-09-10&until=2025-09-01", "the window is empty: since 2025-09-10"),
        ("report?top=0", "top: is how many groups to show, at least 1 (got 0)"),
        ("report?top=five", "top: expected a whole number of groups to show (1 or more), got 'five'"),
        ("report?period=fortnight", "unknown period 'fortnight'; use one of hour, day, week, month"),
        ("report?where=team", "a filter is dimension=value or dimension!=value, got 'team'"),
        ("report?where=colour%3Dred", "unknown dimension 'colour'"),
        ("report?by=team,team", "a dimension is repeated in --by: team, team"),
        ("report?bye=team", "unknown parameter 'bye': this page takes by, since, until, where, period, top"),
        ("?since=1d&since=2d", "since is given 2 times ('1d', '2d'): give it once"),
        ("budgets?now=soon", "now: not a date"),
        ("alerts?status=shouting", "status: unknown alert status 'shouting'; use one of open, acknowledged"),
        ("alerts?limit=-3", "limit: expected a whole number of alerts (1 or more), got '-3'"),
    ],
)
def test_a_bad_parameter_is_a_400_page_that_says_why(served: Served, query: str, message: str) -> None:
    page = get(served, "/dashboard" + ("" if query.startswith("?") else "/") + query, code=400)
    assert message in page.error, page.error


def test_an_unknown_alert_is_a_404_page(served: Served) -> None:
    page = get(served, "/dashboard/alerts/ffffffff", code=404)
    assert page.error == "no alert with id 'ffffffff': see `unitcost alerts`"


# --------------------------------------------------------------------------- offline


def _plotly_name() -> str:
    from importlib.metadata import version

    return f"plotly-{version('plotly')}.min.js"


def test_the_chart_library_is_served_by_the_dashboard_itself(served: Served) -> None:
    response = httpx.get(f"{served.url}/dashboard?{WINDOW}", timeout=30)
    page = Page(response.text)
    # every asset and link of the page is on this server: nothing from a CDN
    assert page.urls and all(url.startswith(("/", "#")) and not url.startswith("//") for url in page.urls)
    plotly_js = importlib.resources.files("plotly").joinpath("package_data", "plotly.min.js").read_bytes()
    for encoding in ("identity", "gzip"):
        asset = httpx.get(
            f"{served.url}/dashboard/static/{_plotly_name()}",
            headers={"accept-encoding": encoding},
            timeout=30,
        )
        assert asset.status_code == 200 and asset.content == plotly_js
        assert asset.headers["content-type"].startswith("text/javascript")
        assert "immutable" in asset.headers["cache-control"]
    assert (
        httpx.get(f"{served.url}/dashboard/static/dashboard.js", timeout=30).text.count("Plotly.newPlot") == 1
    )
    assert httpx.get(f"{served.url}/dashboard/static/nothing.js", timeout=30).status_code == 404


def test_a_dashboard_can_open_a_ledger_read_only_for_each_page(tmp_path: Path, book: PriceBook) -> None:
    path = tmp_path / "ro.duckdb"
    with Ledger(path, book=book, config=load_config(None)) as ledger:
        ledger.ingest_records([_call("r1", "ops"), _call("r2", "ops", model="our-own-llm", provider="self")])
    config = load_config(None)
    call = ledger_caller(lambda: Ledger(path, config=config, read_only=True))
    with serve_app(build_app([dashboard_routes(call, config=config, prefix="/costs")])) as url:
        served = Served(url, {})
        page = get(served, f"/costs/report?by=team&{WINDOW}")
        assert page.table("By team")["rows"][0][:3] == ["ops", "2", "$0.0035"]
        assert page.headline[-1] == "unpriced: 1 calls, 1,100 tokens (cost unknown, not zero)"
        assert all(url.startswith(("/costs", "#")) for url in page.urls)
