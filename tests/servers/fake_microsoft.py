"""A stateful fake of the Microsoft identity platform (OAuth v2.0) and Microsoft Graph mail,
speaking their documented wire format, for driving the real O365 client and django-allauth.

Endpoints: authorize (approves at once) and token (authorization code with PKCE; refresh,
which rotates the refresh token; `invalid_grant` once consent is revoked); /v1.0/me;
mailFolders (well-known names inbox, sentitems); messages delta per folder (pages with
@odata.nextLink, then @odata.deltaLink; 410 for a token older than `oldest_delta`); a folder's
messages listed with `$filter=internetMessageId eq '<id>'` or `receivedDateTime ge <time>`,
`$count=true`, `$select` and `$top`; a message's MIME (`$value`); sendMail with a base64
MIME body (filed in Sent Items).
`throttle(n)` answers the next n calls 429; `move_mailbox()` answers like a migrated mailbox.

Change notifications, as Graph does them: POST /v1.0/subscriptions validates the notification
and lifecycle URLs first (a POST with `?validationToken=`, which must come back as plain text
within 10 s) and refuses a lifetime over 10,080 minutes; PATCH renews, DELETE removes. Every
message added then is announced to each live subscription ({"value": [...]} with its
clientState), from a thread, and `lifecycle(event)` sends a lifecycle notification.
"""

from __future__ import annotations

import base64
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
from urllib.parse import quote, urlencode

from .fakehttp import FakeOAuthServer, Request, Response

# Graph keeps a subscription to Outlook messages at most this long.
MAX_SUBSCRIPTION = timedelta(minutes=10_080)
TENANT = "aaaabbbb-0000-cccc-1111-dddd2222eeee"
FOLDERS = {"inbox": ("AAMkInbox", "Inbox"), "sentitems": ("AAMkSent", "Sent Items")}


def graph_error(status: int, code: str, message: str) -> Response:
    return Response.json({"error": {"code": code, "message": message,
                                    "innerError": {"date": datetime.now(UTC).isoformat()}}},
                         status=status)  # fmt: skip


@dataclass
class StoredMessage:
    id: str
    folder: str
    raw: bytes
    received: datetime
    change: int
    headers: list[tuple[str, str]] = field(default_factory=list)


class FakeMicrosoft(FakeOAuthServer):
    token_path = "/common/oauth2/v2.0/token"

    def __init__(self, email: str = "grace.owner@contoso.example") -> None:
        super().__init__()
        self.email = email
        self.client_id = "00000000-test-4000-8000-threadline01"
        self.client_secret = "microsoft-test-secret"
        self.messages: dict[str, StoredMessage] = {}
        self.change = 0
        self.oldest_delta = 0
        self.access_tokens: dict[str, float] = {}  # token -> expiry
        self.sent: list[StoredMessage] = []
        self.moved = False
        self._ids = itertools.count(1)
        # Change notifications: live subscriptions by id, and what each notification we
        # posted got back (URL, HTTP status).
        self.subscriptions: dict[str, dict[str, object]] = {}
        self.notified: list[tuple[str, int]] = []

    # -- state changed by tests -------------------------------------------------------
    def issue_tokens(self) -> tuple[str, str]:
        access, refresh = "eyJ0" + secrets.token_urlsafe(24), "M.R3_" + secrets.token_urlsafe(24)
        self.access_tokens[access] = time.time() + 3600
        self.refresh_tokens.add(refresh)
        return access, refresh

    def move_mailbox(self) -> None:
        self.moved = True

    def expire_delta_tokens(self) -> None:
        self.oldest_delta = self.change + 1

    def add_message(
        self, raw: bytes, folder: str = "inbox", when: float | None = None
    ) -> StoredMessage:
        with self.lock:
            parsed = message_from_bytes(raw, policy=policy.compat32)
            if when is None:
                try:
                    when = parsedate_to_datetime(str(parsed.get("Date", ""))).timestamp()
                except (TypeError, ValueError):
                    when = time.time()
            self.change += 1
            stored = StoredMessage(
                id=f"AAMkMsg{next(self._ids):06d}=", folder=folder, raw=raw,
                received=datetime.fromtimestamp(when, UTC), change=self.change,
                headers=[(k, str(v)) for k, v in parsed.items()],
            )  # fmt: skip
            self.messages[stored.id] = stored
            self._announce(stored)
            return stored

    @property
    def environment(self) -> dict[str, str]:
        """The settings' environment variables that point a child process at this fake."""
        return {"MICROSOFT_CLIENT_ID": self.client_id,
                "MICROSOFT_CLIENT_SECRET": self.client_secret,
                "MICROSOFT_LOGIN_URL": self.base, "MICROSOFT_GRAPH_URL": self.base}  # fmt: skip

    # -- change notifications ---------------------------------------------------------
    def post(
        self, url: str, body: bytes, content_type: str = "application/json"
    ) -> tuple[int, bytes]:
        """A POST as Graph makes it to a subscriber: (status, body); status 0 unreachable."""
        request = urllib.request.Request(url, data=body, method="POST",
                                         headers={"Content-Type": content_type})  # fmt: skip
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return answer.status, answer.read()
        except urllib.error.HTTPError as exc:
            return exc.code, b""
        except OSError:
            return 0, b""

    def _notify(self, url: str, items: list[dict[str, object]]) -> None:
        status, _ = self.post(url, json.dumps({"value": items}).encode())
        with self.lock:
            self.notified.append((url, status))

    def _announce(self, message: StoredMessage) -> None:
        now = datetime.now(UTC)
        for sid, sub in list(self.subscriptions.items()):
            if sub["expires"] < now or "created" not in str(sub["changeType"]).split(","):
                continue
            item = {"subscriptionId": sid, "clientState": sub.get("clientState"),
                    "changeType": "created", "tenantId": TENANT,
                    "subscriptionExpirationDateTime": sub["expirationDateTime"],
                    "resource": f"Users/{self.user_id}/Messages/{message.id}",
                    "resourceData": {"@odata.type": "#Microsoft.Graph.Message",
                                     "@odata.id": f"Users/{self.user_id}/Messages/{message.id}",
                                     "id": message.id}}  # fmt: skip
            args = (str(sub["notificationUrl"]), [item])
            threading.Thread(target=self._notify, args=args, daemon=True).start()

    def lifecycle(self, event: str, subscription_id: str | None = None) -> int:
        """A lifecycle notification for a subscription (the only one, by default), posted
        now; "subscriptionRemoved" removes it first. The status our endpoint answered."""
        sid = subscription_id or next(iter(self.subscriptions))
        sub = self.subscriptions[sid]
        if event == "subscriptionRemoved":
            del self.subscriptions[sid]
        item = {"subscriptionId": sid, "clientState": sub.get("clientState"),
                "lifecycleEvent": event, "tenantId": TENANT,
                "subscriptionExpirationDateTime": sub["expirationDateTime"]}  # fmt: skip
        status, _ = self.post(
            str(sub["lifecycleNotificationUrl"]), json.dumps({"value": [item]}).encode()
        )
        return status

    def _validate(self, url: str) -> bool:
        token = f"Validation: Testing client application reachability {secrets.token_hex(8)}"
        status, body = self.post(f"{url}?{urlencode({'validationToken': token})}", b"",
                                 "text/plain; charset=utf-8")  # fmt: skip
        return status == 200 and body.decode(errors="replace") == token

    def subscribe(self, request: Request) -> Response:
        body = request.json()
        try:
            expires = datetime.fromisoformat(str(body["expirationDateTime"]).replace("Z", "+00:00"))
            resource, url = str(body["resource"]), str(body["notificationUrl"])
        except (KeyError, ValueError):
            return graph_error(400, "InvalidRequest", "Subscription request is malformed.")
        if expires > datetime.now(UTC) + MAX_SUBSCRIPTION:
            return graph_error(400, "InvalidRequest", "Subscription expiration can only be "
                               "10080 minutes in the future.")  # fmt: skip
        if resource not in {"me/messages", "/me/messages"}:
            return graph_error(400, "InvalidRequest", f"Unsupported resource '{resource}'.")
        lifecycle = body.get("lifecycleNotificationUrl")
        for target in filter(None, [url, lifecycle]):
            if not self._validate(str(target)):
                return graph_error(400, "InvalidRequest", "Subscription validation request "
                                   f"failed. Notification endpoint must respond with 200 OK "
                                   f"to validation request: {target}")  # fmt: skip
        sid = f"{secrets.token_hex(4)}-{secrets.token_hex(2)}-{secrets.token_hex(2)}"
        self.subscriptions[sid] = {**body, "id": sid, "expires": expires}
        return Response.json(self._subscription(sid), status=201)

    def _subscription(self, sid: str) -> dict[str, object]:
        return {k: v for k, v in self.subscriptions[sid].items() if k != "expires"}

    def subscription(self, request: Request, sid: str) -> Response:
        if sid not in self.subscriptions:
            return graph_error(404, "ResourceNotFound", f"The object '{sid}' doesn't exist.")
        if request.method == "DELETE":
            del self.subscriptions[sid]
            return Response(204)
        if request.method == "PATCH":
            text = str(request.json().get("expirationDateTime", ""))
            expires = datetime.fromisoformat(text.replace("Z", "+00:00"))
            if expires > datetime.now(UTC) + MAX_SUBSCRIPTION:
                return graph_error(400, "InvalidRequest", "Subscription expiration can only "
                                   "be 10080 minutes in the future.")  # fmt: skip
            self.subscriptions[sid].update(expirationDateTime=text, expires=expires)
        return Response.json(self._subscription(sid))

    # -- HTTP -------------------------------------------------------------------------
    user_id = "11111111-2222-3333-4444-555555555555"

    def handle(self, request: Request) -> Response:
        path = request.path
        if path.endswith("/oauth2/v2.0/authorize"):
            return self.authorize(request)
        if path.endswith("/oauth2/v2.0/token") and request.method == "POST":
            return self.token(request)
        if not path.startswith(("/v1.0/me", "/v1.0/subscriptions")):
            return graph_error(404, "ResourceNotFound", "Unknown path")
        if self.access_tokens.get(request.bearer, 0) < time.time():
            return graph_error(401, "InvalidAuthenticationToken", "Access token has expired.")
        if self.throttled():
            response = graph_error(429, "ApplicationThrottled", "Too many requests.")
            response.headers["Retry-After"] = "2"
            return response
        if self.moved:
            return graph_error(404, "MailboxNotEnabledForRESTAPI",
                               "The mailbox is either inactive, soft-deleted, or is hosted "
                               "on-premise.")  # fmt: skip
        if path == "/v1.0/subscriptions" and request.method == "POST":
            return self.subscribe(request)
        if path.startswith("/v1.0/subscriptions/"):
            return self.subscription(request, path.rsplit("/", 1)[1])
        if path == "/v1.0/me":
            return Response.json({"id": self.user_id,
                                  "displayName": "Grace Owner", "mail": self.email,
                                  "userPrincipalName": self.email})  # fmt: skip
        if path == "/v1.0/me/mailFolders":
            return Response.json({"value": [self._folder(key) for key in FOLDERS]})
        if path == "/v1.0/me/sendMail" and request.method == "POST":
            return self.send_mail(request)
        parts = path.split("/")  # /v1.0/me/<kind>/<id>/...
        if len(parts) >= 5 and parts[3] == "mailFolders":
            key = self._folder_key(parts[4])
            if key is None:
                return graph_error(404, "ErrorInvalidIdMalformed", "Unknown folder")
            if len(parts) == 5:
                return Response.json(self._folder(key))
            if parts[5:] == ["messages", "delta"]:
                return self.delta(request, key)
            if parts[5:] == ["messages"] and request.method == "GET":
                return self.list_messages(request, key)
        if len(parts) == 6 and parts[3] == "messages" and parts[5] == "$value":
            message = self.messages.get(parts[4])
            if message is None:
                return graph_error(404, "ErrorItemNotFound", "The item was not found.")
            return Response(200, message.raw, {"Content-Type": "text/plain"})
        return graph_error(404, "ResourceNotFound", "Unknown path")

    def _folder_key(self, name: str) -> str | None:
        for key, (fid, display) in FOLDERS.items():
            if name.lower() in {key, fid.lower(), display.lower().replace(" ", "")}:
                return key
        return None

    def _folder(self, key: str) -> dict[str, object]:
        fid, display = FOLDERS[key]
        count = sum(1 for m in self.messages.values() if m.folder == key)
        return {"id": fid, "displayName": display, "parentFolderId": "AAMkRoot",
                "childFolderCount": 0, "unreadItemCount": 0, "totalItemCount": count}  # fmt: skip

    def token(self, request: Request) -> Response:
        form = request.form()
        if not self.known_client(form):
            return Response.json({"error": "invalid_client"}, status=401)
        if form.get("grant_type") == "refresh_token":
            old = form.get("refresh_token", "")
            if old not in self.refresh_tokens:
                return Response.json(
                    {
                        "error": "invalid_grant",
                        "error_codes": [65001],
                        "suberror": "consent_required",
                        "error_description": "AADSTS65001: The user or administrator has not "
                        "consented to use the application.",
                    },
                    status=400,
                )
            self.refresh_tokens.discard(old)  # Microsoft rotates refresh tokens
        elif self.redeem_code(form) is None:
            return Response.json({"error": "invalid_grant"}, status=400)
        access, refresh = self.issue_tokens()
        return Response.json({"token_type": "Bearer", "scope": "Mail.Read Mail.Send User.Read",
                              "expires_in": 3599, "ext_expires_in": 3599,
                              "access_token": access, "refresh_token": refresh})  # fmt: skip

    def _json(self, message: StoredMessage) -> dict[str, object]:
        parsed = message_from_bytes(message.raw, policy=policy.compat32)

        def people(name: str) -> list[dict[str, object]]:
            found = getaddresses([str(v) for v in parsed.get_all(name, [])])
            return [{"emailAddress": {"name": n, "address": a}} for n, a in found]

        sender = people("From")
        return {
            "id": message.id, "internetMessageId": str(parsed.get("Message-ID", "")),
            "subject": str(parsed.get("Subject", "")), "from": sender[0] if sender else None,
            "toRecipients": people("To"), "ccRecipients": people("Cc"),
            "receivedDateTime": message.received.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "sentDateTime": message.received.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "conversationId": "AAQkConv" + str(parsed.get("Subject", "")).removeprefix("Re: "),
            "isRead": False, "parentFolderId": FOLDERS[message.folder][0],
            "internetMessageHeaders": [{"name": k, "value": v} for k, v in message.headers],
        }  # fmt: skip

    def delta(self, request: Request, folder: str) -> Response:
        query = request.query
        if "$deltatoken" in query and int(query["$deltatoken"]) < self.oldest_delta:
            return graph_error(410, "SyncStateNotFound", "The sync state is not found or expired.")
        since_change = int(query.get("$deltatoken") or query.get("since") or 0)
        since = query.get("$filter", "").removeprefix("receivedDateTime ge ")
        skip = int(query.get("$skiptoken") or 0)
        size = 10
        prefer = request.headers.get("prefer", "")
        if "odata.maxpagesize=" in prefer:
            size = int(prefer.split("odata.maxpagesize=")[1].split(",")[0])
        found = sorted(
            (m for m in self.messages.values()
             if m.folder == folder and m.change > since_change
             and (not since or m.received.strftime("%Y-%m-%dT%H:%M:%SZ") >= since)),
            key=lambda m: m.change,
        )  # fmt: skip
        page = found[skip : skip + size]
        base = f"{self.base}/v1.0/me/mailFolders/{folder}/messages/delta"
        body: dict[str, object] = {"value": [self._json(m) for m in page]}
        if skip + size < len(found):
            rest = {"$skiptoken": str(skip + size), "since": str(since_change)}
            if since:
                rest["$filter"] = f"receivedDateTime ge {since}"
            body["@odata.nextLink"] = f"{base}?{urlencode(rest, quote_via=quote)}"
        else:
            body["@odata.deltaLink"] = f"{base}?$deltatoken={self.change}"
        return Response.json(body)

    def list_messages(self, request: Request, folder: str) -> Response:
        """A folder's messages, newest first; of $filter only `internetMessageId eq '...'`
        (an OData string literal: a quote inside is doubled), which Graph supports."""
        found = sorted((m for m in self.messages.values() if m.folder == folder),
                       key=lambda m: m.received, reverse=True)  # fmt: skip
        clause = request.query.get("$filter")
        if clause is not None:
            by_id = re.fullmatch(r"internetMessageId eq '((?:[^']|'')*)'", clause.strip())
            by_date = re.fullmatch(r"receivedDateTime ge (\S+)", clause.strip())
            if by_id is not None:
                wanted = by_id.group(1).replace("''", "'")
                found = [m for m in found if self._json(m)["internetMessageId"] == wanted]
            elif by_date is not None:
                since = by_date.group(1)  # ISO 8601 in UTC compares as text
                found = [m for m in found if self._json(m)["receivedDateTime"] >= since]
            else:
                invalid = "The query filter contains one or more invalid nodes."
                return graph_error(400, "ErrorInvalidUrlQueryFilter", invalid)
        page = found[: int(request.query.get("$top") or 10)]
        values = [self._json(m) for m in page]
        if "$select" in request.query:
            keep = {"id", *request.query["$select"].split(",")}
            values = [{k: v for k, v in value.items() if k in keep} for value in values]
        body: dict[str, object] = {"value": values}
        if request.query.get("$count") == "true":
            body["@odata.count"] = len(found)  # all that match, not only the page
        return Response.json(body)

    def send_mail(self, request: Request) -> Response:
        if not request.headers.get("content-type", "").startswith("text/plain"):
            return graph_error(400, "ErrorMimeContentInvalid", "Send MIME as base64 text/plain.")
        raw = base64.b64decode(request.body)
        stored = self.add_message(raw, folder="sentitems", when=time.time())
        self.sent.append(stored)
        return Response(202)

    def recipients_of(self, message: StoredMessage) -> list[str]:
        parsed = message_from_bytes(message.raw, policy=policy.compat32)
        fields = [str(v) for k in ("To", "Cc", "Bcc") for v in parsed.get_all(k, [])]
        return [address.lower() for _name, address in getaddresses(fields)]
