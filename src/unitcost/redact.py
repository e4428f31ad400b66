"""Credentials never reach the ledger, the logs or an error message: the one rule every source uses.

Free tags are the only free text an event holds, and every source fills them from something
an application or an instrumentation chose (keywords of `unitcost.record`/`unitcost.tags`,
the gateway's `x-unitcost-tags` header, `unitcost.tag.*` span attributes, tools' tags). So
every free tag passes `tag_value`:

- a tag whose NAME names a credential (`api_key`, `x-api-key`, `authorization`, `password`,
  `client_secret`, `access_token`, `cookie`, ...) keeps its name, with the value `REDACTED`;
  token COUNTS are not credentials (`max_tokens`, `token_count`, `input_tokens`), and neither
  are names that describe one without holding it (`api_key_id`, `key_alias`, `token_type`);
- any other value keeps its text with what is recognisably a credential replaced by
  `REDACTED`: the `user:password@` of a URL, its query parameters that carry a key (`?key=`
  as Gemini takes it, `token=`, `sig=`, ...) and the path of a Slack, Teams or Discord
  webhook (its token), the credential after `Bearer`/`Basic`,
  `name: value` or `name=value` pairs whose name names a credential (a header dump, a JSON of
  parameters), and provider keys by their published prefixes (`sk-`, `sk-ant-`, `AIza`,
  `gsk_`, `xai-`, `hf_`, ...).

`REDACTED` is the word the OpenTelemetry semantic conventions use for `url.full` credentials.
The same rule words error messages that quote a value (`quoted`).
"""

from __future__ import annotations

import functools
import re
from urllib.parse import urlsplit

REDACTED = "REDACTED"

_WORDS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")
"""Words of a name, whatever its style: `x-api-key`, `openai_api_key`, `apiKey`, `AWSAccessKeyId`."""
_SECRET_WORDS = frozenset(
    {
        "password",
        "passwd",
        "passphrase",
        "secret",
        "secrets",
        "token",
        "apikey",
        "authorization",
        "cookie",
        "credential",
        "credentials",
        "bearer",
        "signature",
        "privatekey",
    }
)
_SECRET_KEYS = frozenset({"api", "access", "private", "secret", "session", "signing", "auth", "encryption"})
"""Words that make a following `key` a credential (`api_key`, `AWSAccessKeyId`'s access key)."""
_DESCRIBES = frozenset(
    {
        "id",
        "ids",
        "name",
        "names",
        "alias",
        "hash",
        "type",
        "types",
        "count",
        "counts",
        "usage",
        "limit",
        "limits",
        "env",
        "length",
        "len",
        "set",
        "present",
        "source",
        "kind",
    }
)
"""A last word that makes the name describe a credential rather than hold it (`api_key_id`)."""
_COUNTS = frozenset(
    {"count", "counts", "max", "min", "num", "total", "input", "output", "prompt", "completion", "budget"}
)
"""Words beside `token` that make it a token count (`max_token`, `llm.token_count.prompt`)."""
_URL_KEYS = frozenset({"key", "sig", "code", "auth"})
"""Query parameters that carry a credential though their name alone would not say so."""
_WEBHOOK_HOSTS = ("hooks.slack.com", "webhook.office.com", "discord.com", "discordapp.com")
"""Hosts whose webhook URLs hold their token in the path: the path is the secret."""


def secret_name(name: str) -> bool:
    """True when a name (of a tag, an attribute, a header, a parameter) names a credential."""
    # Names are few and short; a long one (sent by a client) is not kept in the cache.
    return _secret_name(name) if len(name) <= 256 else _words_name_a_secret(name)


@functools.lru_cache(maxsize=4096)
def _secret_name(name: str) -> bool:
    return _words_name_a_secret(name)


def _words_name_a_secret(name: str) -> bool:
    words = [w.lower() for w in _WORDS.findall(name)]
    if not words or words[-1] in _DESCRIBES:
        return False
    for i, word in enumerate(words):
        if word == "token" and _COUNTS.isdisjoint(words):
            return True
        if word != "token" and word in _SECRET_WORDS:
            return True
        if word == "key" and i > 0 and words[i - 1] in _SECRET_KEYS:
            return True
    return False


# Every pattern is linear in the text (a tag may be long): a match can only start where a run of
# its characters starts (the lookbehinds), and possessive quantifiers (`*+`) never give back.
_URL = re.compile(r"(?<![A-Za-z0-9+.-])[A-Za-z][A-Za-z0-9+.-]*+://[^\s'\"<>`]++")
_SCHEME_CREDENTIAL = re.compile(r"(?i)\b(bearer|basic|token)(\s++)([A-Za-z0-9._~+/=-]{8,}+)")
_PAIR = re.compile(
    r"(?<![A-Za-z0-9_.-])(?P<name>[A-Za-z_][A-Za-z0-9_.-]*+)(?P<q>[\"']?)(?P<sep>\s*+[:=]\s*+)"
    r"(?P<value>\"[^\"]*+\"|'[^']*+'|(?:(?i:bearer|basic|token)\s++)?+[^\s,;&}\]\"')]++)"
)
_PROVIDER_KEY = re.compile(
    r"(?<![A-Za-z0-9_-])(?:sk-(?:ant-|proj-|or-v1-|svcacct-|admin-)?|sk_live_|sk_test_|rk_live_|AIza"
    r"|gsk_|xai-|hf_|ghp_|gho_|ghs_|github_pat_|pplx-|r8_|xox[abposr]-|uc-)[A-Za-z0-9_-]{16,}+"
    r"|(?<![A-Z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Z0-9])"
)
_RANDOM_RUN = re.compile(r"[A-Za-z0-9]{16,}")
_QUICK = re.compile(r"[:=@]|[A-Za-z0-9_-]{16}|\s")
"""Text without any of these holds none of the patterns above (most tags: `eu`, `search`)."""


def _url(match: re.Match[str]) -> str:
    return redact_url(match.group(0))


def redact_url(url: str, *, mask: str = REDACTED, keep_user: bool = False) -> str:
    """The URL with its credentials replaced by `mask`: the password of `user:password@` (and
    the user too unless `keep_user`: a bare `TOKEN@host` is a credential), query parameters that
    carry one (`?password=`, `?key=`, `?token=`, `?sig=`, ...) and the path of a webhook whose
    path is its token. The URL itself when it holds none."""
    try:
        parts = urlsplit(url)
    except ValueError:  # an unreadable URL (a stray bracket): nothing of it past the scheme
        return url.split("://", 1)[0] + "://" + mask
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user, colon, _ = userinfo.partition(":")
        kept = user if keep_user else mask
        netloc = (f"{kept}:{mask}" if colon else kept) + "@" + host
    path = parts.path
    host = (parts.hostname or "").lower()
    if path not in ("", "/") and any(host == h or host.endswith("." + h) for h in _WEBHOOK_HOSTS):
        path = "/" + mask
    query = parts.query
    if query:
        pairs = []
        for pair in query.split("&"):
            name, sep, value = pair.partition("=")
            if sep and value and secret_query_parameter(name):
                value = mask
            pairs.append(name + sep + value)
        query = "&".join(pairs)
    if netloc == parts.netloc and path == parts.path and query == parts.query:
        return url
    return parts._replace(netloc=netloc, path=path, query=query).geturl()


def secret_query_parameter(name: str) -> bool:
    """True when a URL's query parameter of this name carries a credential (`password`,
    `api_key`, and the short names `key`, `sig`, `code`, `auth` that alone would not say so)."""
    return name.lower() in _URL_KEYS or secret_name(name)


def _pair(match: re.Match[str]) -> str:
    if not secret_name(match.group("name")):
        return match.group(0)
    value = match.group("value")
    quote = value[0] if value[:1] in ("'", '"') else ""
    return match.group("name") + match.group("q") + match.group("sep") + quote + REDACTED + quote


def _scheme_credential(match: re.Match[str]) -> str:
    scheme, space, credential = match.groups()
    # "Bearer <token>" in a header dump; not "basic subscription" in a sentence: a credential
    # has a digit, or the length of one.
    if len(credential) < 20 and not any(c.isdigit() for c in credential):
        return match.group(0)
    return scheme + space + REDACTED


def _provider_key(match: re.Match[str]) -> str:
    key = match.group(0)
    if key.startswith(("AKIA", "ASIA")):
        return REDACTED
    # A prefix followed by a slug ("uc-berkeley-research-2024") is not a key: keys are random,
    # with a long run of letters and digits and at least one digit.
    if _RANDOM_RUN.search(key) is None or not any(c.isdigit() for c in key):
        return key
    return REDACTED


def redact_text(text: str) -> str:
    """The text with every recognisable credential replaced by REDACTED (see the module)."""
    if not _QUICK.search(text):
        return text
    if "://" in text:
        text = _URL.sub(_url, text)
    text = _SCHEME_CREDENTIAL.sub(_scheme_credential, text)
    text = _PAIR.sub(_pair, text)
    return _PROVIDER_KEY.sub(_provider_key, text)


def tag_value(name: str, value: str) -> str:
    """What a free tag may hold: REDACTED under a name that names a credential, else the value
    with any credential in it replaced."""
    if secret_name(name):
        return REDACTED
    return redact_text(value)


def redact_tags(tags: dict[str, str]) -> dict[str, str]:
    """Every tag through `tag_value` (a new dict only when something changed)."""
    cleaned = {name: tag_value(name, value) for name, value in tags.items()}
    return tags if cleaned == tags else cleaned


def quoted(where: str, value: object, limit: int = 60) -> str:
    """A value as an error message may quote it: its repr cut to `limit`, or REDACTED when the
    field it was read from (`where`, e.g. `...attributes.http.request.header.authorization`)
    names a credential or the value holds one."""
    if secret_name(where):
        return REDACTED
    # Redacted whole, then cut: a cut key would no longer be recognised.
    return redact_text(repr(value)[:4096])[:limit]
