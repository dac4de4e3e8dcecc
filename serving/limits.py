"""Request-size limit of the scoring API: a pure ASGI middleware in front of the app.

A body over ``max_bytes`` is answered **413** before the app (FastAPI's JSON parsing) sees a byte of it:

* a declared ``Content-Length`` over the limit is refused from the headers alone, without reading the body;
* a body without a length (``Transfer-Encoding: chunked``, streamed) is read by the middleware up to the
  limit and refused as soon as it passes it; under the limit it is handed to the app as one message.

The answer is JSON naming the field and the rule (``{"error": "payload_too_large", "field": "body",
"rule": "max_request_bytes", "reason": ...}``) and closes the connection (the rest of the body is not read).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any


def too_large_body(size: int | None, max_bytes: int) -> dict[str, str]:
    got = f"{size} bytes" if size is not None else f"more than {max_bytes} bytes (streamed)"
    return {
        "error": "payload_too_large",
        "field": "body",
        "rule": "max_request_bytes",
        "reason": f"request body of {got} is over the limit of {max_bytes} bytes (MLP_SERVING_MAX_REQUEST_BYTES)",
    }


class BodySizeLimit:
    def __init__(self, app, max_bytes: int, on_refused: Callable[[str], Any] | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.on_refused = on_refused

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = None
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit():  # servers reject a malformed one before us
                declared = int(value)
                break
        if declared is not None:
            if declared > self.max_bytes:
                await self._refuse(scope, send, declared)
                return
            # the server never delivers more than the declared length: nothing to bound
            await self.app(scope, receive, send)
            return
        chunks, total = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away: let the app see it
                await self.app(scope, _replay([message], receive), send)
                return
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > self.max_bytes:
                await self._refuse(scope, send, None)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        await self.app(scope, _replay([body], receive), send)

    async def _refuse(self, scope, send, size: int | None) -> None:
        if self.on_refused is not None:
            self.on_refused(scope.get("path", ""))
        payload = json.dumps(too_large_body(size, self.max_bytes)).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})


def _replay(messages: list[dict], receive):
    pending = list(messages)

    async def replayed():
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed
