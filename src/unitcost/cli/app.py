"""The `unitcost` command: the Typer app and the options every command shares."""

from __future__ import annotations

import functools
import socket
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.markup import escape

from ..config import ConfigError, load_config
from .output import Format, console

app = typer.Typer(
    name="unitcost",
    help="What each unit of LLM work really costs: exact prices, a priced ledger, reports.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)

LedgerOpt = Annotated[
    str | None,
    typer.Option(
        "--ledger",
        "-l",
        help="Ledger: a DuckDB file or a ClickHouse URL. "
        "Default: $UNITCOST_LEDGER, the config file, then ~/.local/share/unitcost/ledger.duckdb.",
        show_default=False,
    ),
]
ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config", help="Config file. Default: $UNITCOST_CONFIG, then ./unitcost.toml.", show_default=False
    ),
]
PricesOpt = Annotated[
    Path | None,
    typer.Option(
        "--prices",
        help="Price overrides TOML (discounts, custom models). Default: $UNITCOST_PRICES, "
        "then \\[pricing] overrides in the config file.",
        show_default=False,
    ),
]
FormatOpt = Annotated[Format, typer.Option("--format", "-f", help="Output format.")]

F = TypeVar("F", bound=Callable[..., Any])


class UserError(Exception):
    """An error whose message is the whole story: printed without a traceback."""


def friendly(func: F) -> F:
    """Turn the errors a user can fix into one red line and exit code 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except Exception as exc:
            if not isinstance(exc, _user_errors()):
                raise
            # The message is text, not markup: "[[price]] #2" must print as written.
            # Not wrapped: a path or a model name split over two lines cannot be copied back.
            console().print(
                f"[red]error:[/red] {escape(str(exc))}", markup=True, highlight=False, soft_wrap=True
            )
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


# Errors a user can fix, by module: a module that was never imported raised none of them,
# and importing it only to name its errors would cost a command that does not use it
# (the price book alone takes a third of a second to import).
_USER_ERRORS: dict[str, str | tuple[str, ...]] = {
    "unitcost.ingest.readers": "IngestFileError",
    "unitcost.ledger.base": ("LedgerBusyError", "LedgerUnreachableError", "LedgerVersionError"),
    "unitcost.pricing.book": "UnknownModelError",
    "unitcost.pricing.model": "PriceError",
}


def _user_errors() -> tuple[type[BaseException], ...]:
    loaded = [
        getattr(sys.modules[module], name)
        for module, names in _USER_ERRORS.items()
        if module in sys.modules
        for name in ((names,) if isinstance(names, str) else names)
    ]
    return (UserError, ConfigError, ValueError, FileNotFoundError, *loaded)


def listening_socket(host: str, port: int, taken_hint: str) -> socket.socket:
    """A socket bound to host:port, for a server to listen on once everything else is checked:
    a port already in use is the user's to fix (one line, exit code 2), not a traceback after
    the server has said it is listening. `taken_hint` says who may hold the port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        # Listening now, not when the server starts serving: a client that connects as soon as
        # the banner names the address waits in the backlog instead of being refused.
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc} ({taken_hint})") from None
    return sock


def open_ledger(
    ledger: str | None, config: Path | None, prices: Path | None = None, *, read_only: bool = False
) -> Any:
    from ..api import Ledger

    loaded = load_config(config)
    try:
        return Ledger(ledger, config=loaded, prices=prices, read_only=read_only)
    except Exception as exc:
        not_a_ledger = _not_a_ledger(ledger, loaded, exc)
        if not_a_ledger is None:
            raise
        raise UserError(not_a_ledger) from None


def _not_a_ledger(ledger: str | None, config: Any, exc: Exception) -> str | None:
    """What to say when the ledger path names a directory or a file DuckDB cannot open."""
    from ..config import resolve_ledger

    if type(exc).__name__ != "IOException":
        return None
    target = resolve_ledger(ledger, config)
    if "://" in target:
        return None
    path = Path(target).expanduser()
    if path.is_dir():
        return f"{target} is a directory, not a unitcost ledger (DuckDB database file)"
    if path.is_file() and "not a valid DuckDB database" in str(exc):
        return f"{target} is not a unitcost ledger (DuckDB database file)"
    return None


def require_ledger(ledger: str | None, config: Path | None) -> None:
    """For commands that change what a ledger holds: a mistyped path must not become a new,
    empty ledger with a report of nothing changed."""
    from ..config import resolve_ledger
    from ..ledger.duckdb_store import no_ledger

    target = resolve_ledger(ledger, load_config(config))
    if "://" not in target:
        if not Path(target).exists():
            raise no_ledger(target)
        return
    from ..api import open_store

    # A ClickHouse ledger is there when it opens read-only (a misspelt database is "no ledger").
    open_store(target, read_only=True).close()


def where_the_events_are(book_ledger: Any) -> str:
    """What to try when a window holds no call: the span of the ledger's events, as options."""
    span = book_ledger.sql("SELECT min(ts) AS first, max(ts) AS last, count(*) AS n FROM events")
    n = int(span["n"].iloc[0]) if len(span) else 0
    if not n:
        return "The ledger has no events yet: run `unitcost ingest FILE` (or `unitcost demo`) first."
    first, last = span["first"].iloc[0], span["last"].iloc[0]
    # --until is exclusive: the day after the last event keeps that day's events in.
    after_last = last + timedelta(days=1)
    return (
        f"The ledger has {n:,} events from {first:%Y-%m-%d} to {last:%Y-%m-%d}: "
        f"try --since {first:%Y-%m-%d} --until {after_last:%Y-%m-%d}"
    )


def open_book(config: Path | None, prices: Path | None) -> Any:
    from ..config import resolve_overrides
    from ..pricing.book import PriceBook

    return PriceBook.load(resolve_overrides(prices, load_config(config)))
