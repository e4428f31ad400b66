"""A local SMTP server's mailbox for the tests that deliver email (aiosmtpd's handler)."""

from __future__ import annotations

from typing import Any


class Mailbox:
    """Keeps every message the server accepts, envelope and all."""

    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(envelope)
        return "250 OK"
