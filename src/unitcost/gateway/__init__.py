"""The unitcost gateway: an OpenAI- and Anthropic-compatible proxy that records, caches, routes
and enforces budgets. See docs/gateway.md.

Modules, one idea each:
- `config`    the `[gateway]` TOML section as typed objects;
- `keys`      virtual API keys (stored hashed) and who they belong to;
- `usage`     provider usage payloads -> unitcost usage fields;
- `tokens`    offline token counts for worst-case reservations;
- `spool`     append-only on-disk event spool (batched fdatasync) and its drain;
- `writer`    the ledger writer process that drains the spool into the ledger;
- `budgets`   budget windows, reservations and settlement (memory or Redis);
- `cache`     exact-match response cache (memory or Redis);
- `routing`   light-by-default routing rules and cascade checks;
- `upstream`  pooled HTTP/1.1 upstream client (httptools) and the retry rules;
- `sse`       server-sent-event framing and usage capture in streams;
- `errors`    errors in each API's own format;
- `httpserver` the HTTP/1.1 server (httptools on uvloop) the gateway and simulator run on;
- `app`       the request handler: routes, budgets, forwarding, pricing, events;
- `metrics`   `GET /metrics` in Prometheus' format: requests, tokens, spend, budgets, writer;
- `simulator` a fake OpenAI + Anthropic upstream for tests, demos and benchmarks.
"""
