"""A small HTTP server on loopback for wire-format fakes of services we cannot reach (Gmail,
Microsoft Graph): a thread in the test process, a request log, and plain request/response
objects for the fakes' handlers."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit


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
        self.delay = 0.0  # seconds before each answer: a slow service
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
                if fake.delay:
                    time.sleep(fake.delay)
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


class FakeOAuthServer(FakeHTTPServer):
    """What both providers' identity services do the same way: the consent page (approves at
    once), the client check and the authorization code with PKCE (S256)."""

    client_id = ""
    client_secret = ""
    token_path = "/token"  # where our settings send refreshes (CRM_OAUTH token_uri)

    def __init__(self) -> None:
        super().__init__()
        self.codes: dict[str, dict[str, str]] = {}
        self.access_tokens: set[str] | dict[str, float] = set()  # each fake chooses its kind
        self.refresh_tokens: set[str] = set()
        self._throttle = 0

    def revoke_all(self) -> None:
        """The user withdrew consent: no token works any more."""
        self.access_tokens.clear()
        self.refresh_tokens.clear()

    def expire_access_tokens(self) -> None:
        self.access_tokens.clear()

    def throttle(self, count: int) -> None:
        """Answer the next `count` API calls with 429 and Retry-After."""
        self._throttle = count

    def throttled(self) -> bool:
        """True (and one fewer to go) while calls are being throttled."""
        if not self._throttle:
            return False
        self._throttle -= 1
        return True

    @property
    def crm_oauth(self) -> dict[str, str]:
        """The CRM_OAUTH entry that points the provider at this fake."""
        return {
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "token_uri": f"{self.base}{self.token_path}",
            "api_root": f"{self.base}/",
        }

    def authorize(self, request: Request) -> Response:
        query = request.query
        if query.get("client_id") != self.client_id:
            return Response(400, b"unknown client")
        code = secrets.token_urlsafe(16)
        self.codes[code] = query
        answer = urlencode({"code": code, "state": query.get("state", "")})
        return Response.redirect(f"{query['redirect_uri']}?{answer}")

    def known_client(self, form: dict[str, str]) -> bool:
        return (form.get("client_id"), form.get("client_secret")) == (
            self.client_id, self.client_secret,
        )  # fmt: skip

    def redeem_code(self, form: dict[str, str]) -> dict[str, str] | None:
        """The authorization request a code was issued for, if the PKCE verifier matches."""
        grant = self.codes.pop(form.get("code", ""), None)
        digest = hashlib.sha256(form.get("code_verifier", "").encode()).digest()
        challenge = base64.urlsafe_b64encode(digest).decode().rstrip("=")
        return grant if grant is not None and grant.get("code_challenge") == challenge else None
