"""The unitcost gateway: an OpenAI- and Anthropic-compatible proxy that records, caches, routes
and enforces budgets. See docs/gateway.md.

Modules, one idea each:
- `config`    the `[gateway]` TOML section as typed objects;
- `keys`      virtual API keys (stored hashed) and who they belong to;
- `usage`     provider usage payloads -> unitcost usage fields;
- `tokens`    offline token counts for worst-case reservations;
- `spool`     append-only on-disk event spool and the ledger writer thread;
- `budgets`   budget windows, reservations and settlement (memory or Redis);
- `cache`     exact-match response cache (memory or Redis);
- `routing`   light-by-default routing rules and cascade checks;
- `upstream`  pooled upstream client with retries and fallbacks;
- `sse`       server-sent-event framing and usage capture in streams;
- `errors`    errors in each API's own format;
- `app`       the ASGI application;
- `simulator` a fake OpenAI + Anthropic upstream for tests, demos and benchmarks.
"""
