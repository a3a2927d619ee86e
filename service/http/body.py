"""The request body: one reader with one size limit, and JSON whatever the Content-Type says.

``curl -d '{...}'`` sends ``application/x-www-form-urlencoded``; MLflow's own server reads such
bodies as JSON, and so do we, instead of answering with a confusing validation error.

The largest sensible request (1,000 experiment ids and a 10,000-character filter) is far below
``MAX_BODY_BYTES``; a larger body is answered 400 INVALID_PARAMETER_VALUE before it is read into
memory (by its Content-Length) or as soon as the bytes received pass the limit (chunked). Access
control, which must buffer the body to see its experiments, reads it with the same ``LimitedBody``,
so the limit and the message are the same whichever part of the edge refuses the body.
"""

from __future__ import annotations

from typing import Final

from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import invalid_parameter
from service.http.error_responses import error_response

MAX_BODY_BYTES: Final = 1024 * 1024
TOO_LARGE_MESSAGE: Final = (
    f"The request body is larger than {MAX_BODY_BYTES} bytes (1 MiB); insights requests are "
    "small JSON objects: at most 1000 experiment ids and a filter_string of 10000 characters"
)

_JSON = (b"content-type", b"application/json")


class BodyTooLarge(HTTPException):
    """The body passed ``MAX_BODY_BYTES``.

    An ``HTTPException`` because it can be raised while FastAPI reads the body for a route:
    FastAPI lets those through to their handler (``service.http.error_responses``), which answers
    400 INVALID_PARAMETER_VALUE with this message; any other exception there would become its
    generic "error parsing the body".
    """

    def __init__(self) -> None:
        super().__init__(400, TOO_LARGE_MESSAGE)


def too_large_response() -> JSONResponse:
    """The answer to a body over the limit, for middleware that refuses it before any route."""
    return error_response(invalid_parameter(TOO_LARGE_MESSAGE))


class LimitedBody:
    """One request's body, read through the limit: ``receive`` streams it, ``read`` buffers it."""

    def __init__(self, scope: Scope, receive: Receive) -> None:
        declared = dict(scope["headers"]).get(b"content-length", b"")
        self.declared_too_large = declared.isdigit() and int(declared) > MAX_BODY_BYTES
        self._receive = receive
        self._received = 0

    async def receive(self) -> Message:
        """The next ASGI message; raises ``BodyTooLarge`` once the bytes received pass the limit."""
        message = await self._receive()
        if message["type"] == "http.request":
            self._received += len(message.get("body", b""))
            if self._received > MAX_BODY_BYTES:
                raise BodyTooLarge
        return message

    async def read(self) -> bytes | None:
        """The whole body, or None if the client went away; ``BodyTooLarge`` past the limit."""
        if self.declared_too_large:
            raise BodyTooLarge
        chunks: list[bytes] = []
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                return None
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                return b"".join(chunks)


def replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands a buffered body to the app as if it were arriving now."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # later reads wait for the disconnect, as the server's would

    return replayed


class JSONBodyMiddleware:
    """Every POST: the body is JSON and at most ``MAX_BODY_BYTES``, streamed to the app."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        headers = [(k, v) for k, v in scope["headers"] if k.lower() != b"content-type"]
        scope = {**scope, "headers": [*headers, _JSON]}
        body = LimitedBody(scope, receive)
        if body.declared_too_large:
            await too_large_response()(scope, receive, send)
            return
        await self.app(scope, body.receive, send)
