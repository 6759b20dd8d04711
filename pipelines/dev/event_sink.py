"""A loopback webhook sink: a real HTTP server on 127.0.0.1 that records every event POSTed to
it and can be told to fail (500), hang (answer after ``hang_s``) or be down (port closed), so
tests and the demo exercise delivery against real sockets."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal

Mode = Literal["ok", "fail", "hang"]


@dataclass(frozen=True)
class Received:
    headers: dict[str, str]
    body: bytes
    at: float
    answered: int  # the status code this sink answered


@dataclass
class EventSink:
    """``with EventSink() as sink: ... sink.url``; ``sink.mode = "fail"``; ``sink.down()`` / ``up()``."""

    mode: Mode = "ok"
    hang_s: float = 5.0
    received: list[Received] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _port: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}/events"

    def up(self) -> EventSink:
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                mode = sink.mode
                if mode == "hang":
                    time.sleep(sink.hang_s)
                code = 500 if mode == "fail" else 204
                with sink._lock:
                    sink.received.append(Received(dict(self.headers.items()), body, time.time(), code))
                self.send_response(code)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", self._port), Handler)
        server.daemon_threads = True
        self._port = server.server_address[1]
        self._server = server
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return self

    def down(self) -> None:
        """Close the port (connections are refused) until :meth:`up` opens the same port again."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def accepted(self) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.answered < 300]

    def __enter__(self) -> EventSink:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()
