"""A small HTTP server on loopback for wire-format fakes of services we cannot reach (Gmail,
Microsoft Graph): a thread in the test process, a request log, and plain request/response
objects for the fakes' handlers."""

from __future__ import annotations

import json
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


@dataclass
class Request:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes

    def __post_init__(self) -> None:
        parts = urlsplit(self.target)
        self.path = parts.path
        self.params = parse_qs(parts.query, keep_blank_values=True)  # repeated values kept
        self.query = {key: values[-1] for key, values in self.params.items()}
        self.headers = {key.lower(): value for key, value in self.headers.items()}

    def json(self) -> dict:
        return json.loads(self.body or b"{}")

    def form(self) -> dict[str, str]:
        return {k: v[-1] for k, v in parse_qs(self.body.decode()).items()}

    @property
    def bearer(self) -> str:
        value = self.headers.get("authorization", "")
        return value[7:] if value.lower().startswith("bearer ") else ""


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, data: object, status: int = 200, **headers: str) -> Response:
        return cls(
            status, json.dumps(data).encode(), {"Content-Type": "application/json", **headers}
        )

    @classmethod
    def redirect(cls, location: str) -> Response:
        return cls(302, b"", {"Location": location})


class FakeHTTPServer:
    """Subclasses implement `handle(request) -> Response`. Use as a context manager."""

    def __init__(self) -> None:
        self.log: list[tuple[str, str]] = []  # (method, path) of every API call
        self.lock = threading.RLock()
        # When a list: every HTTP request as received (method, target, headers, body), so a
        # benchmark can replay exactly the same requests as its floor.
        self.recorded: list[tuple[str, str, dict[str, str], bytes]] | None = None

    @property
    def base(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def handle(self, request: Request) -> Response:
        raise NotImplementedError

    def __enter__(self) -> FakeHTTPServer:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                # Headers and body go out in separate writes: without this, Nagle's algorithm
                # and the client's delayed ACK add 40 ms to every keep-alive response.
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                request = Request(
                    self.command, self.path, dict(self.headers), self.rfile.read(length)
                )
                with fake.lock:
                    fake.log.append((request.method, request.path))
                    if fake.recorded is not None:
                        fake.recorded.append((request.method, request.target,
                                              dict(self.headers), request.body))  # fmt: skip
                    response = fake.handle(request)
                self.send_response(response.status)
                for name, value in response.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(response.body)))
                self.end_headers()
                self.wfile.write(response.body)

            do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _serve  # noqa: N815

            def log_message(self, *args: object) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def requests_to(self, prefix: str) -> int:
        return sum(1 for _method, path in self.log if path.startswith(prefix))
