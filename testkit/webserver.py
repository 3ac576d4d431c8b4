"""A real HTTP server on 127.0.0.1 for the https:// source tests, in a thread of the test.

Each route answers a fixed :class:`Route`: a status, headers, a body, and optionally a delay
(a server too slow for a timeout) or a redirect target.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Route:
    body: bytes = b""
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    redirect_to: str = ""


class WebServer:
    """Routes by path; :attr:`hits` counts the GETs of each path."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.hits: dict[str, int] = {}
        routes, hits = self.routes, self.hits

        class Handler(BaseHTTPRequestHandler):
            def do_HEAD(self) -> None:
                self._answer(with_body=False)

            def do_GET(self) -> None:
                hits[self.path] = hits.get(self.path, 0) + 1
                self._answer(with_body=True)

            def _answer(self, *, with_body: bool) -> None:
                route = routes.get(self.path, Route(b"no such route", 404))
                time.sleep(route.delay)
                status = 302 if route.redirect_to else route.status
                self.send_response(status)
                if route.redirect_to:
                    self.send_header("Location", route.redirect_to)
                for name, value in route.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(route.body)))
                self.end_headers()
                if with_body:
                    # The client may have given up (a timeout test).
                    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                        self.wfile.write(route.body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"


@contextmanager
def web_server() -> Iterator[WebServer]:
    server = WebServer()
    thread = threading.Thread(target=server.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.server.shutdown()
        server.server.server_close()
        thread.join(5)
