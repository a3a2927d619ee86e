"""Every insights response says which path answered and as of when (API.md §7).

The headers live outside the body so that both paths' JSON stays comparable byte for byte.
This middleware stamps each insights request ``live`` as of its start; the session dependency
(``service.api.deps``) restamps it when the store answers. Errors answered before any session
was opened are live too: nothing but the tracking DB's rules decided them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

from starlette.types import ASGIApp, Message, Receive, Scope, Send

AnsweredBy = Literal["live", "store"]

_STATE_KEY = "insights_answer"


@dataclass
class Answer:
    answered_by: AnsweredBy
    as_of_ms: int


def answer_of(scope: Scope) -> Answer | None:
    """The stamp of an insights request (``None`` for any other request)."""
    answer: Answer | None = scope.get("state", {}).get(_STATE_KEY)
    return answer


class AnsweringPathMiddleware:
    def __init__(self, app: ASGIApp, prefixes: tuple[str, ...]) -> None:
        self.app = app
        self.prefixes = prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefixes):
            await self.app(scope, receive, send)
            return
        answer = Answer("live", time.time_ns() // 1_000_000)
        # Inner layers copy the scope but share its state dict, so they see this same stamp.
        scope.setdefault("state", {})[_STATE_KEY] = answer

        async def send_with_answer(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"x-insights-answered-by", answer.answered_by.encode()))
                headers.append((b"x-insights-as-of", str(answer.as_of_ms).encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_answer)
