"""The hot route's fast path: a pure ASGI layer that answers a valid request without FastAPI's
per-request machinery, and hands everything else to FastAPI unchanged.

Measured on this machine (``python -m benchmarks.serving``, py-spy under load): FastAPI's request
handling — its request object, two exit stacks, dependency solving, route matching — was ~27 % of the
service's CPU at its maximum throughput, more than the online-store read. For a route a use case marks
fast (``Routes.fast(path, model)``, e.g. fraud's ``POST /v1/score``), this layer:

* takes a request only when it is a ``POST`` to that path, with a JSON ``Content-Type`` and, when an
  API key is configured, the right key; it reads the body (already bounded by the size limit) and
  validates it exactly as the FastAPI route would — ``json.loads`` then the route's pydantic model in
  Python mode, the same two calls FastAPI makes;
* if any of that fails — wrong method or content type, missing key, unparseable JSON, a validation
  error — it passes the request, body replayed, to FastAPI, which answers with the documented 4xx
  exactly as before: the fast path never produces an error body of its own for bad input;
* otherwise it submits the row to the same micro-batcher the FastAPI route uses and sends the result
  encoded once by the same response class; a dependency failure is the same 503 JSON.

The route stays declared in FastAPI (OpenAPI schema, docs, error path), so the contract, the schema
and the contract tests are unchanged; the fast path is an optimisation of the accepted case only.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from serving.limits import _replay


@dataclass(frozen=True)
class FastRoute:
    model: Any  # the route's pydantic request model
    submit: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


def _is_json(content_type: bytes) -> bool:
    media = content_type.split(b";", 1)[0].strip().lower()
    return media == b"application/json" or (media.startswith(b"application/") and media.endswith(b"+json"))


class FastPath:
    def __init__(
        self,
        app,
        routes: dict[str, FastRoute],
        render: Callable[[Any], bytes],
        on_unavailable: Callable[[str, Exception], tuple[int, dict[str, Any], dict[str, str]] | None],
        api_key: str | None = None,
        key_header: str = "x-api-key",
    ) -> None:
        self.app = app
        self.routes = routes
        self.render = render
        self.on_unavailable = on_unavailable
        self.api_key = api_key.encode() if api_key is not None else None
        self.key_header = key_header.lower().encode()

    async def __call__(self, scope, receive, send):
        route = self.routes.get(scope.get("path", "")) if scope["type"] == "http" else None
        if route is None or scope.get("method") != "POST" or not self._accepted(scope):
            await self.app(scope, receive, send)
            return
        messages, chunks = [], []
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                await self.app(scope, _replay(messages, receive), send)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        try:
            row = route.model.model_validate(json.loads(b"".join(chunks))).model_dump()
        except Exception:  # bad input: FastAPI answers it, with the documented error body
            await self.app(scope, _replay(messages, receive), send)
            return
        try:
            result = await route.submit(row)
        except Exception as exc:
            answer = self.on_unavailable(scope.get("path", ""), exc)
            if answer is None:
                raise  # a bug: the server-error layer answers 500 as for any route
            status, payload, headers = answer
            await self._send(send, status, json.dumps(payload).encode(), headers)
            return
        await self._send(send, 200, self.render(result), {})

    def _accepted(self, scope) -> bool:
        content_type, key = None, None
        for name, value in scope.get("headers", ()):
            if name == b"content-type":
                content_type = value
            elif name == self.key_header:
                key = value
        if content_type is None or not _is_json(content_type):
            return False
        if self.api_key is None:
            return True
        return key is not None and secrets.compare_digest(key, self.api_key)

    @staticmethod
    async def _send(send, status: int, body: bytes, headers: dict[str, str]) -> None:
        raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        raw += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": body})
