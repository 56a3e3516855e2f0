"""Raw ASGI layers in front of the FastAPI routes: HEAD on every GET route, and the hot path of ``/arch/{hash}``.

``GET /arch/{hash}`` is what benchmark users call in a loop, and its answers are immutable bytes cached per
(space, architecture, curves). Going through FastAPI's routing, parameter validation and response classes costs
more than the lookup itself, so :class:`CachedArchs` answers the request forms it can recognise exactly (a known
hash; no query string or ``curves=true|false|1|0``) straight from the store's cache with the same status, headers
and body as the route, and hands everything else (unknown hashes, other parameters, malformed input) to FastAPI,
which stays the one place that validates and documents the route. ``tests/test_http.py`` checks that both paths
answer byte for byte alike.
"""
from __future__ import annotations

_CURVES = {b"": True, b"curves=true": True, b"curves=1": True, b"curves=false": False, b"curves=0": False}
_JSON = (b"content-type", b"application/json")


class CachedArchs:
    """Answer ``GET``/``HEAD /arch/<known hash>[?curves=…]`` from the cache; pass every other request on."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"].startswith("/arch/") and scope["method"] in ("GET", "HEAD"):
            body = self._cached(scope)
            if body is not None:
                await send({"type": "http.response.start", "status": 200,
                            "headers": [(b"content-length", str(len(body)).encode()), _JSON]})
                await send({"type": "http.response.body", "body": body if scope["method"] == "GET" else b""})
                return
        await self.app(scope, receive, send)

    @staticmethod
    def _cached(scope) -> bytes | None:
        curves = _CURVES.get(scope["query_string"])
        key = scope["path"][6:]
        if curves is None or len(key) != 16:
            return None
        store = getattr(scope["app"].state, "store", None)
        return None if store is None else store.cached_record(key, curves)


class HeadAsGet:
    """Answer ``HEAD`` on every GET route: run it as GET and send the headers without the body (RFC 9110)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "HEAD":
            return await self.app(scope, receive, send)

        async def headers_only(message):
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, headers_only)
