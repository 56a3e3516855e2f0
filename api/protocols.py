"""uvicorn's HTTP protocols with JSON 400s: a request too malformed to reach the app (a bad request line, an
invalid header) is answered by uvicorn itself, in plain text; every error body of this service is
``{"detail": "…"}``, so these answers are too.

Both of uvicorn's HTTP implementations are wrapped (httptools where it is installed, as uvicorn's ``auto`` picks,
else h11); only the body and content type of ``send_400_response`` change, its status and ``connection: close``
stay uvicorn's.
"""
from __future__ import annotations

import json

from uvicorn.protocols.http.h11_impl import H11Protocol


def body(msg: str) -> bytes:
    """The JSON error body for uvicorn's message (e.g. "Invalid HTTP request received.")."""
    return json.dumps({"detail": f"malformed HTTP request: {msg}"}).encode()


class JsonH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with its own 400s (unparseable HTTP) answered as the API's JSON error body."""

    def send_400_response(self, msg: str) -> None:
        """The 400 for a request h11 could not parse: ``{"detail": ...}`` as application/json, then close."""
        import h11

        data = body(msg)
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                   (b"connection", b"close")]
        self.transport.write(self.conn.send(h11.Response(status_code=400, headers=headers, reason=b"Bad Request")))
        self.transport.write(self.conn.send(h11.Data(data=data)))
        self.transport.write(self.conn.send(h11.EndOfMessage()))
        self.transport.close()


try:
    from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
except ImportError:  # httptools not installed: uvicorn itself would use h11
    HttpToolsProtocol = None
    JsonHttpToolsProtocol = None
else:
    class JsonHttpToolsProtocol(HttpToolsProtocol):  # type: ignore[no-redef]
        def send_400_response(self, msg: str) -> None:
            data = body(msg)
            content = [STATUS_LINE[400]]
            for name, value in self.server_state.default_headers:
                content.extend([name, b": ", value, b"\r\n"])
            content.extend([b"content-type: application/json\r\n",
                            b"content-length: " + str(len(data)).encode("ascii") + b"\r\n",
                            b"connection: close\r\n", b"\r\n", data])
            self.transport.write(b"".join(content))
            self.transport.close()


def protocol() -> type:
    """The protocol class uvicorn's ``auto`` would pick, with JSON 400s."""
    return JsonHttpToolsProtocol or JsonH11Protocol
