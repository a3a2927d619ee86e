"""Read every POST body as JSON, whatever its Content-Type says; refuse bodies over 1 MiB.

``curl -d '{...}'`` sends ``application/x-www-form-urlencoded``; MLflow's own server reads such
bodies as JSON, and so do we, instead of answering with a confusing validation error.

The largest sensible request (1,000 experiment ids and a 10,000-character filter) is far below
``MAX_BODY_BYTES``; a larger body is answered 400 INVALID_PARAMETER_VALUE before it is read into
memory (by its Content-Length) or as soon as the bytes received pass the limit (chunked).
"""

from __future__ import annotations

from typing import Final

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import invalid_parameter
from service.http.access import MAX_BODY_BYTES
from service.http.error_responses import error_response

# The same limit and status as access control's (service.access), which reads bodies first
# when it is on.
TOO_LARGE_MESSAGE: Final = (
    f"The request body is larger than {MAX_BODY_BYTES} bytes (1 MiB); insights requests are "
    "small JSON objects: at most 1000 experiment ids and a filter_string of 10000 characters"
)

_JSON = (b"content-type", b"application/json")


class JSONBodyMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        headers = [(k, v) for k, v in scope["headers"] if k.lower() != b"content-type"]
        scope = {**scope, "headers": [*headers, _JSON]}
        declared = dict(headers).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            await error_response(invalid_parameter(TOO_LARGE_MESSAGE))(scope, receive, send)
            return
        received = 0

        async def receive_at_most_the_limit() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > MAX_BODY_BYTES:
                    # Rendered by the HTTPException handler (service.api.handlers).
                    raise HTTPException(400, TOO_LARGE_MESSAGE)
            return message

        await self.app(scope, receive_at_most_the_limit, send)
