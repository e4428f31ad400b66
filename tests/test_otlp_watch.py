"""`unitcost serve` runs the watch loop: the server owns the DuckDB ledger's one write connection,
so a `unitcost watch` beside it could never open the ledger. A real server process, real OTLP
exports, and a real webhook receiver on 127.0.0.1."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx

from otlp_payloads import genai_attributes, json_request, json_span
from unitcost.api import Ledger
from unitcost.config import Config

UNITCOST = str(Path(sys.executable).parent / "unitcost")


class _Hook(BaseHTTPRequestHandler):
    bodies: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        _Hook.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_serve_watches_the_ledger_it_writes(tmp_path: Path) -> None:
    _Hook.bodies.clear()
    hook = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    config = tmp_path / "unitcost.toml"
    config.write_text(
        f"""
[watch]
interval_seconds = 0.2

[[watch.sink]]
type = "webhook"
url = "http://127.0.0.1:{hook.server_address[1]}/hook"
"""
    )
    ledger = tmp_path / "served.duckdb"
    server = subprocess.Popen(
        [
            UNITCOST,
            "serve",
            "--port",
            "0",
            "--decode-workers",
            "0",
            "-l",
            str(ledger),
            "--config",
            str(config),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert server.stdout is not None
        banner = server.stdout.readline()
        assert "watching it every 0.2 s" in banner, banner
        match = re.search(r"http://127\.0\.0\.1:(\d+)/v1/traces", banner)
        assert match, banner
        # Two hours ago: an hour the watch judges as complete. A self-hosted model nobody priced.
        start = int((datetime.now(UTC) - timedelta(hours=2)).timestamp() * 1e9)
        spans = [
            json_span(genai_attributes(model="gpt-4o"), start_ns=start),
            json_span(genai_attributes(model="acme-local-7b", provider="acme"), start_ns=start),
        ]
        answer = httpx.post(match.group(0), json=json_request(spans), timeout=30)
        assert answer.status_code == 200, answer.text
        for _ in range(300):
            if _Hook.bodies:
                break
            time.sleep(0.1)
        assert [b["detector"] for b in _Hook.bodies] == ["unpriced_model"], _Hook.bodies
        assert "acme-local-7b" in json.dumps(_Hook.bodies[0])
    finally:
        server.send_signal(signal.SIGINT)
        output, _ = server.communicate(timeout=60)
        hook.shutdown()
        hook.server_close()
    assert server.returncode in (0, 130), output  # uvicorn re-raises SIGINT once it has shut down cleanly
    with Ledger(ledger, config=Config(), read_only=True) as opened:
        alerts = opened.store.fetch("SELECT detector, status FROM alerts").to_pylist()
        delivered = opened.store.fetch(
            "SELECT kind, sink FROM alert_log WHERE kind = 'delivered'"
        ).to_pylist()
    assert alerts == [{"detector": "unpriced_model", "status": "open"}]
    assert delivered == [{"kind": "delivered", "sink": "webhook-1"}]
