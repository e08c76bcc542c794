"""A stateful fake of Google's OAuth and the Gmail API (v1), speaking their documented wire
format, for driving the real google-api-python-client, google-auth and django-allauth.

Endpoints: the OAuth authorize page (approves at once) and token endpoint (authorization code
with PKCE, refresh, `invalid_grant` once revoked); users.getProfile, labels.list,
messages.list (`q=newer_than:Nd`, `rfc822msgid:`, labelIds, paging), messages.get
(`format=metadata|raw`), messages.send, history.list (404 below the oldest kept id) and the
multipart batch endpoint. `throttle(n)` makes the next n API calls answer 429.

Push, as Gmail and Cloud Pub/Sub do it: users.watch (a topic, labels, 7 days) and users.stop;
once `push_to(url)` has set up the topic's push subscription, every message added to a
watched label is announced by a POST of the Pub/Sub push body ({"message": {"data": base64
of {"emailAddress", "historyId"}}}) with an OIDC token (RS256, signed by a key served at
/oauth2/v1/certs as Google serves its own), from a thread, as Pub/Sub does.
"""

from __future__ import annotations

import base64
import functools
import itertools
import json
import re
import secrets
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.utils import getaddresses, parsedate_to_datetime

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from .fakehttp import FakeOAuthServer, Request, Response

GMAIL_PREFIX = "/gmail/v1/users/me/"
PUSH_TOPIC = "projects/threadline-test/topics/gmail"
PUSH_SERVICE_ACCOUNT = "gmail-push@threadline-test.iam.gserviceaccount.com"
WATCH_DAYS = 7


@functools.cache
def signing_key() -> tuple[rsa.RSAPrivateKey, str]:
    """An RSA key and its self-signed certificate (PEM), as Google publishes its keys (one
    per test session: making one takes a while)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake-google-signer")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=30))
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    return key, cert.public_bytes(serialization.Encoding.PEM).decode()


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def gmail_error(code: int, message: str, reason: str, status: str) -> Response:
    return Response.json(
        {"error": {"code": code, "message": message, "status": status,
                   "errors": [{"message": message, "domain": "global", "reason": reason}]}},
        status=code,
    )  # fmt: skip


def _base_subject(subject: str) -> str:
    return re.sub(r"^((re|fwd?):\s*)+", "", subject, flags=re.I)


@dataclass
class StoredMessage:
    id: str
    thread_id: str
    raw: bytes
    labels: list[str]
    internal_ms: int
    history_id: int
    headers: dict[str, str] = field(default_factory=dict)


class FakeGoogle(FakeOAuthServer):
    def __init__(self, email: str = "ada.owner@gmail.example") -> None:
        super().__init__()
        self.email = email
        self.client_id = "threadline-test.apps.googleusercontent.com"
        self.client_secret = "google-test-secret"
        self.messages: dict[str, StoredMessage] = {}
        self.by_message_id: dict[str, StoredMessage] = {}
        self.history: list[tuple[int, str, str]] = []  # (history id, messageAdded, message id)
        self.history_id = 1000
        self.oldest_history_id = 1000
        self.access_tokens: set[str] = set()
        self.sent: list[StoredMessage] = []
        self._ids = itertools.count(0x18C0000000000000)
        # Push: the watch users.watch set up, the push subscription's endpoint, and what
        # each push delivered got back (HTTP status).
        self.watch: dict[str, object] | None = None
        self.watch_calls = 0
        self.push_endpoint = ""
        self.push_audience = ""
        self.push_statuses: list[int] = []
        self._key, self._cert = signing_key()
        self.key_id = secrets.token_hex(20)

    # -- state changed by tests -------------------------------------------------------
    def issue_tokens(self) -> tuple[str, str]:
        access, refresh = "ya29." + secrets.token_urlsafe(24), "1//" + secrets.token_urlsafe(24)
        self.access_tokens.add(access)
        self.refresh_tokens.add(refresh)
        return access, refresh

    def forget_history_before(self, history_id: int) -> None:
        self.oldest_history_id = history_id

    def add_message(
        self,
        raw: bytes,
        labels: tuple[str, ...] = ("INBOX", "UNREAD"),
        thread_id: str | None = None,
        when: float | None = None,
    ) -> StoredMessage:
        with self.lock:
            message = message_from_bytes(raw, policy=policy.compat32)
            headers = {k.lower(): str(v) for k, v in message.items()}
            if when is None:
                try:
                    when = parsedate_to_datetime(headers.get("date", "")).timestamp()
                except (TypeError, ValueError):
                    when = time.time()
            self.history_id += 1
            mid = f"{next(self._ids):x}"
            stored = StoredMessage(
                id=mid, thread_id=thread_id or self._thread_for(headers) or mid, raw=raw,
                labels=list(labels), internal_ms=int(when * 1000), history_id=self.history_id,
                headers=headers,
            )  # fmt: skip
            self.messages[mid] = stored
            self.by_message_id[headers.get("message-id", "").strip().strip("<>")] = stored
            self.history.append((self.history_id, "messageAdded", mid))
            self._publish(stored)
            return stored

    @property
    def crm_oauth(self) -> dict[str, str]:
        return {**super().crm_oauth, "certs_uri": f"{self.base}/oauth2/v1/certs"}

    @property
    def environment(self) -> dict[str, str]:
        """The settings' environment variables that point a child process at this fake."""
        return {"GOOGLE_CLIENT_ID": self.client_id, "GOOGLE_CLIENT_SECRET": self.client_secret,
                "GOOGLE_TOKEN_URI": f"{self.base}/token", "GMAIL_API_ROOT": f"{self.base}/",
                "GOOGLE_CERTS_URI": f"{self.base}/oauth2/v1/certs"}  # fmt: skip

    # -- push -----------------------------------------------------------------------
    def push_to(self, endpoint: str, audience: str = "") -> None:
        """The topic's push subscription: deliver to `endpoint`, with tokens for `audience`
        (by default the endpoint, as Pub/Sub does)."""
        self.push_endpoint, self.push_audience = endpoint, audience or endpoint

    def push_token(self, key: rsa.RSAPrivateKey | None = None, **claims: object) -> str:
        """The OIDC token Pub/Sub sends with a push; `claims` override, `key` signs instead
        (forgeries in tests)."""
        now = int(time.time())
        body = {"iss": "https://accounts.google.com", "aud": self.push_audience,
                "email": PUSH_SERVICE_ACCOUNT, "email_verified": True, "sub": "1122334455",
                "iat": now, "exp": now + 3600, **claims}  # fmt: skip
        return jwt.encode(body, key or self._key, algorithm="RS256", headers={"kid": self.key_id})

    def push_body(self, email: str | None = None, history_id: int | None = None) -> bytes:
        data = {"emailAddress": email or self.email, "historyId": history_id or self.history_id}
        return json.dumps({
            "message": {"data": base64.b64encode(json.dumps(data).encode()).decode(),
                        "messageId": secrets.token_hex(8),
                        "publishTime": datetime.now(UTC).isoformat()},
            "subscription": "projects/threadline-test/subscriptions/gmail-push",
        }).encode()  # fmt: skip

    def deliver_push(self, body: bytes, token: str) -> int:
        """One push request as Pub/Sub makes it; the status our endpoint answered."""
        request = urllib.request.Request(
            self.push_endpoint, data=body, method="POST",
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        )  # fmt: skip
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                status = answer.status
        except urllib.error.HTTPError as exc:
            status = exc.code
        except OSError:
            status = 0
        with self.lock:
            self.push_statuses.append(status)
        return status

    def _publish(self, message: StoredMessage) -> None:
        """Gmail publishes a change of a watched label; Pub/Sub pushes it, from elsewhere."""
        watch = self.watch
        if not (watch and self.push_endpoint and set(message.labels) & set(watch["labelIds"])):
            return
        if watch["expiration"] < time.time() * 1000:
            return
        body, token = self.push_body(history_id=message.history_id), self.push_token()
        threading.Thread(target=self.deliver_push, args=(body, token), daemon=True).start()

    def _thread_for(self, headers: dict[str, str]) -> str | None:
        """Gmail threads a message with the one it answers when the subjects agree."""
        subject = _base_subject(headers.get("subject", ""))
        for parent in re.findall(r"<([^>]+)>", headers.get("in-reply-to", "")):
            known = self.by_message_id.get(parent)
            if known and _base_subject(known.headers.get("subject", "")) == subject:
                return known.thread_id
        return None

    # -- HTTP -------------------------------------------------------------------------
    def handle(self, request: Request) -> Response:
        if request.path == "/token" and request.method == "POST":
            return self.token(request)
        if request.path == "/o/oauth2/v2/auth":
            return self.authorize(request)
        if request.path == "/batch" and request.method == "POST":
            return self.batch(request)
        if request.path == "/oauth2/v1/certs":
            return Response.json({self.key_id: self._cert},
                                 **{"Cache-Control": "public, max-age=19000"})  # fmt: skip
        if not request.path.startswith(GMAIL_PREFIX):
            return gmail_error(404, "Not Found", "notFound", "NOT_FOUND")
        if request.bearer not in self.access_tokens:
            return gmail_error(401, "Request had invalid authentication credentials.",
                               "authError", "UNAUTHENTICATED")  # fmt: skip
        if self.throttled():
            response = gmail_error(429, "Too many concurrent requests for user.",
                                   "rateLimitExceeded", "RESOURCE_EXHAUSTED")  # fmt: skip
            response.headers["Retry-After"] = "2"
            return response
        route = request.path[len(GMAIL_PREFIX) :]
        if route == "profile":
            return Response.json({"emailAddress": self.email, "historyId": str(self.history_id),
                                  "messagesTotal": len(self.messages)})  # fmt: skip
        if route == "labels":
            names = ["INBOX", "SENT", "DRAFT", "SPAM", "TRASH", "UNREAD", "STARRED"]
            return Response.json(
                {"labels": [{"id": n, "name": n, "type": "system"} for n in names]}
            )
        if route == "messages" and request.method == "GET":
            return self.list_messages(request)
        if route == "messages/send" and request.method == "POST":
            return self.send(request)
        if route.startswith("messages/"):
            return self.get_message(request, route.split("/", 1)[1])
        if route == "history":
            return self.list_history(request)
        if route == "watch" and request.method == "POST":
            return self.start_watch(request)
        if route == "stop" and request.method == "POST":
            self.watch = None
            return Response(204)
        return gmail_error(404, "Not Found", "notFound", "NOT_FOUND")

    def token(self, request: Request) -> Response:
        form = request.form()
        if not self.known_client(form):
            return Response.json({"error": "invalid_client"}, status=401)
        if form.get("grant_type") == "refresh_token":
            if form.get("refresh_token") not in self.refresh_tokens:
                return Response.json({"error": "invalid_grant",
                                      "error_description": "Token has been expired or revoked."},
                                     status=400)  # fmt: skip
            access = "ya29." + secrets.token_urlsafe(24)
            self.access_tokens.add(access)
            return Response.json({"access_token": access, "expires_in": 3599,
                                  "token_type": "Bearer"})  # fmt: skip
        grant = self.redeem_code(form)
        if grant is None:
            return Response.json({"error": "invalid_grant"}, status=400)
        access, refresh = self.issue_tokens()
        now = int(time.time())
        id_token = jwt.encode(
            {"iss": "https://accounts.google.com", "aud": self.client_id, "sub": "1234567890",
             "email": self.email, "email_verified": True, "iat": now, "exp": now + 3600},
            "fake-google-id-token-signing-key-0123456789", algorithm="HS256",
        )  # fmt: skip
        body = {"access_token": access, "expires_in": 3599, "token_type": "Bearer",
                "scope": grant["scope"], "id_token": id_token}  # fmt: skip
        if grant.get("access_type") == "offline":
            body["refresh_token"] = refresh
        return Response.json(body)

    def _visible(self, message: StoredMessage, request: Request) -> bool:
        labels = request.params.get("labelIds", [])
        if any(label not in message.labels for label in labels):
            return False
        q = request.query.get("q", "")
        newer = re.search(r"newer_than:(\d+)d", q)
        if newer and message.internal_ms < (time.time() - int(newer.group(1)) * 86400) * 1000:
            return False
        msgid = re.search(r"rfc822msgid:(\S+)", q)
        return not (msgid and message.headers.get("message-id", "").strip("<>") != msgid.group(1))

    def list_messages(self, request: Request) -> Response:
        found = sorted((m for m in self.messages.values() if self._visible(m, request)),
                       key=lambda m: (-m.internal_ms, m.id))  # fmt: skip
        start = int(request.query.get("pageToken") or 0)
        size = min(int(request.query.get("maxResults") or 100), 500)
        page = found[start : start + size]
        body: dict[str, object] = {"resultSizeEstimate": len(found)}
        if page:
            body["messages"] = [{"id": m.id, "threadId": m.thread_id} for m in page]
        if start + size < len(found):
            body["nextPageToken"] = str(start + size)
        return Response.json(body)

    def get_message(self, request: Request, mid: str) -> Response:
        message = self.messages.get(mid)
        if message is None:
            return gmail_error(404, "Requested entity was not found.", "notFound", "NOT_FOUND")
        body = {"id": message.id, "threadId": message.thread_id, "labelIds": message.labels,
                "historyId": str(message.history_id), "internalDate": str(message.internal_ms),
                "sizeEstimate": len(message.raw), "snippet": ""}  # fmt: skip
        form = request.query.get("format", "full")
        if form == "raw":
            body["raw"] = b64url(message.raw)
        elif form == "metadata":
            wanted = {h.lower() for h in request.params.get("metadataHeaders", [])}
            parsed = message_from_bytes(message.raw, policy=policy.compat32)
            body["payload"] = {
                "mimeType": parsed.get_content_type(),
                "headers": [{"name": k, "value": str(v)} for k, v in parsed.items()
                            if not wanted or k.lower() in wanted],
            }  # fmt: skip
        return Response.json(body)

    def send(self, request: Request) -> Response:
        data = request.json()
        raw = unb64url(data["raw"])
        stored = self.add_message(raw, labels=("SENT",), thread_id=None)
        if data.get("threadId") and data["threadId"] in {
            m.thread_id for m in self.messages.values()
        }:
            stored.thread_id = self._thread_for(stored.headers) or stored.thread_id
        self.sent.append(stored)
        return Response.json({"id": stored.id, "threadId": stored.thread_id, "labelIds": ["SENT"]})

    def start_watch(self, request: Request) -> Response:
        """users.watch: the topic must be the one Gmail may publish to."""
        body = request.json()
        if body.get("topicName") != PUSH_TOPIC:
            return gmail_error(400, "Invalid topicName does not match projects/SOME_ID/topics/"
                               "SOME_TOPIC", "invalidArgument", "INVALID_ARGUMENT")  # fmt: skip
        self.watch_calls += 1
        expiration = int((time.time() + WATCH_DAYS * 86400) * 1000)
        self.watch = {**body, "labelIds": body.get("labelIds") or ["INBOX"],
                      "expiration": expiration}  # fmt: skip
        return Response.json({"historyId": str(self.history_id), "expiration": str(expiration)})

    def list_history(self, request: Request) -> Response:
        start = int(request.query["startHistoryId"])
        if start < self.oldest_history_id:
            return gmail_error(404, "Requested entity was not found.", "notFound", "NOT_FOUND")
        label = request.query.get("labelId")
        events = [
            (hid, mid) for hid, _kind, mid in self.history
            if hid > start and mid in self.messages
            and (label is None or label in self.messages[mid].labels)
        ]  # fmt: skip
        offset = int(request.query.get("pageToken") or 0)
        size = int(request.query.get("maxResults") or 100)
        page = events[offset : offset + size]
        body: dict[str, object] = {"historyId": str(self.history_id)}
        if page:
            body["history"] = [self._history_record(hid, mid) for hid, mid in page]
        if offset + size < len(events):
            body["nextPageToken"] = str(offset + size)
        return Response.json(body)

    def _history_record(self, hid: int, mid: str) -> dict[str, object]:
        message = self.messages[mid]
        short = {"id": mid, "threadId": message.thread_id}
        return {"id": str(hid), "messages": [short],
                "messagesAdded": [{"message": {**short, "labelIds": message.labels}}]}  # fmt: skip

    def batch(self, request: Request) -> Response:
        """multipart/mixed of application/http requests, each with its own authorization."""
        boundary = re.search(r'boundary="?([^";]+)"?', request.headers["content-type"]).group(1)
        answers = []
        body = request.body.replace(b"\r\n", b"\n")  # the client writes bare newlines
        for part in body.split(b"--" + boundary.encode())[1:]:
            if part.startswith(b"--"):
                break
            head, _, inner = part.strip(b"\n").partition(b"\n\n")
            content_id = re.search(rb"Content-ID: <([^>]+)>", head, re.I).group(1).decode()
            lines = inner.split(b"\n")
            method, target, _version = lines[0].decode().split(" ", 2)
            headers, body_lines, in_body = {}, [], False
            for line in lines[1:]:
                if in_body:
                    body_lines.append(line)
                elif not line.strip():
                    in_body = True
                else:
                    name, _, value = line.decode().partition(":")
                    headers[name.strip()] = value.strip()
            with self.lock:
                self.log.append((method, target.split("?")[0]))
            answer = self.handle(Request(method, target, headers, b"\n".join(body_lines).strip()))
            reason = {200: "OK", 401: "Unauthorized", 404: "Not Found"}.get(answer.status, "Error")
            answers.append(
                f"--batch_answer\r\nContent-Type: application/http\r\n"
                f"Content-ID: <response-{content_id}>\r\n\r\n"
                f"HTTP/1.1 {answer.status} {reason}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(answer.body)}\r\n\r\n".encode()
                + answer.body + b"\r\n"
            )  # fmt: skip
        body = b"".join(answers) + b"--batch_answer--\r\n"
        return Response(200, body, {"Content-Type": "multipart/mixed; boundary=batch_answer"})

    def recipients_of(self, message: StoredMessage) -> list[str]:
        headers = message_from_bytes(message.raw, policy=policy.compat32)
        fields = [str(v) for k in ("To", "Cc", "Bcc") for v in headers.get_all(k, [])]
        return [address.lower() for _name, address in getaddresses(fields)]
