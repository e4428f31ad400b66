"""Errors in the caller's own API format, so SDKs raise their usual exception types.

OpenAI: `{"error": {"message", "type", "param", "code"}}`.
Anthropic: `{"type": "error", "error": {"type", "message"}}`.
"""

from __future__ import annotations

from typing import Any, Literal

import orjson

from .httpserver import Response

Api = Literal["openai", "anthropic"]

_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "api_error",
}
_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "permission_error",
    404: "invalid_request_error",
    413: "invalid_request_error",
    429: "budget_exceeded",
}


class GatewayError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.extra = extra or {}
        self.headers = headers or {}


def error_body(api: Api, error: GatewayError) -> dict[str, Any]:
    if api == "anthropic":
        return {
            "type": "error",
            "error": {
                "type": _ANTHROPIC_TYPES.get(error.status, "api_error"),
                "message": error.message,
                **error.extra,
            },
        }
    return {
        "error": {
            "message": error.message,
            "type": _OPENAI_TYPES.get(error.status, "api_error"),
            "param": error.param,
            "code": error.code,
            **error.extra,
        }
    }


def error_response(api: Api, error: GatewayError) -> Response:
    headers = {"x-should-retry": "false"} if error.status < 500 else {}
    headers.update(error.headers)
    return Response(orjson.dumps(error_body(api, error)), error.status, headers)


class ModelNotAllowedError(GatewayError):
    """A virtual key asked for a model outside its `models` list, or outside its team's
    ([gateway.teams]): a 403 permission error, refused before anything is sent upstream. The
    message says which list refused it and quotes that list only (the caller's own key's, or
    its own team's); it names the key, never its secret."""

    def __init__(
        self,
        key_name: str,
        team: str | None,
        model: str,
        allowed: tuple[str, ...],
        refused_by: Literal["key", "team"] = "key",
    ) -> None:
        if refused_by == "team":
            message = (
                f"the unitcost virtual key {key_name!r} may not call the model `{model}`: "
                f"its team {team!r} may call only: {', '.join(allowed)}"
            )
        else:
            message = (
                f"the unitcost virtual key {key_name!r} may not call the model `{model}`; "
                f"it may call: {', '.join(allowed)}"
            )
        super().__init__(403, message, code="model_not_allowed", param="model")
        self.team = team
        self.model = model
