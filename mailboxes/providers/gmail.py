"""Gmail provider (google-api-python-client, google-auth): OAuth tokens, the Gmail API v1.

Folders are the system labels INBOX and SENT. The first reading of a label lists the last N
days (`q=newer_than:Nd`, paged), reads them oldest first, and remembers the mailbox's
historyId from before it began;
later readings ask `users.history.list` for what was added since. A historyId Gmail no longer
keeps (404) restarts the label cleanly. Headers come in batches of `format=metadata` gets;
whole messages (`format=raw`) only when asked (tracked threads, SPEC L3). Gmail files sent
mail itself, so nothing is ever appended (L6).

The endpoints come from `config.oauth` (`api_root`, `token_uri`): Google's by default, a local
fake in tests. The discovery document ships with the library (no request to fetch it); its
root URL is rewritten, which also redirects the batch endpoint.
"""

from __future__ import annotations

import base64
import json
import re
import socket
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import google_auth_httplib2
import httplib2
from google.auth import jwt as google_jwt
from google.auth.exceptions import GoogleAuthError, RefreshError, TransportError
from google.oauth2.credentials import Credentials
from googleapiclient.discovery import build_from_document
from googleapiclient.discovery_cache import get_static_doc
from googleapiclient.errors import HttpError
from googleapiclient.http import BatchHttpRequest

from ..parsing import parse_header_list, parse_headers, with_bcc_header
from .base import (
    AccessRevoked,
    Batch,
    Capabilities,
    FolderInfo,
    MessageMeta,
    ProviderConfig,
    ProviderError,
    PushRefused,
    ServerUnavailable,
    Throttled,
)

SCOPES = [
    "https://www.googleapis.com/auth/gmail.readonly",
    "https://www.googleapis.com/auth/gmail.send",
]
METADATA_HEADERS = ["From", "To", "Cc", "Subject", "Date", "Message-ID", "In-Reply-To",
                    "References"]  # fmt: skip
# Renew a push watch this long before it expires (Gmail keeps one 7 days).
RENEW_AHEAD = timedelta(days=1)
GOOGLE_ISSUERS = ("accounts.google.com", "https://accounts.google.com")
BATCH_LIMIT = 100  # Gmail takes at most 100 calls per batch request
LIST_PAGE = 500  # messages.list's largest page


def _cursor(text: str | None) -> dict[str, Any]:
    return json.loads(text) if text else {}


class GmailProvider:
    def __init__(self, config: ProviderConfig) -> None:
        self.config = config
        oauth = config.oauth
        self._api_root = oauth.get("api_root", "https://gmail.googleapis.com/").rstrip("/") + "/"
        credentials = config.credentials
        expires_at = credentials.get("expires_at")
        self._credentials = Credentials(
            token=credentials.get("access_token"),
            refresh_token=credentials.get("refresh_token"),
            token_uri=oauth.get("token_uri", "https://oauth2.googleapis.com/token"),
            client_id=oauth.get("client_id"),
            client_secret=oauth.get("client_secret"),
            scopes=SCOPES,
            # google-auth compares naive UTC datetimes
            expiry=datetime.fromisoformat(expires_at).astimezone(UTC).replace(tzinfo=None)
            if expires_at
            else None,
        )
        self._token_at_start = self._credentials.token
        self._service: Any = None
        self._pending: dict[str, list[str]] = {}  # ids still to read, per label

    def __enter__(self) -> GmailProvider:
        return self

    def __exit__(self, *exc: object) -> None:
        self._service = None

    @property
    def service(self) -> Any:
        if self._service is None:
            document = json.loads(get_static_doc("gmail", "v1"))
            document["rootUrl"] = document["baseUrl"] = self._api_root
            document.pop("mtlsRootUrl", None)
            http = google_auth_httplib2.AuthorizedHttp(
                self._credentials, http=httplib2.Http(timeout=self.config.timeout)
            )
            self._service = build_from_document(document, http=http)
        return self._service

    def _execute(self, request: Any) -> Any:
        try:
            if isinstance(request, BatchHttpRequest):
                return request.execute()
            return request.execute(num_retries=0)
        except (HttpError, RefreshError, TransportError, OSError, httplib2.HttpLib2Error) as exc:
            raise _error(exc) from None

    # -- connect ----------------------------------------------------------------------
    def count_since(self, folder: str, since: date) -> int | None:
        """The label's messages of the window, listed as the first reading lists them (pages
        of 500 ids: the drift check runs hourly). Gmail's resultSizeEstimate is only an
        estimate, and the label's total is not of the window."""
        return len(self._list_ids(folder, since))

    def check(self) -> Capabilities:
        users = self.service.users()
        self._execute(users.getProfile(userId="me"))
        labels = self._execute(users.labels().list(userId="me")).get("labels", [])
        return Capabilities(
            server=("gmail",),
            folders=tuple(
                FolderInfo(name=label["id"], attributes=(label.get("type", ""),))
                for label in labels
            ),  # fmt: skip
            inbox="INBOX",
            sent_folder="SENT",
        )

    def updated_credentials(self) -> dict[str, Any] | None:
        if self._credentials.token == self._token_at_start:
            return None
        self._token_at_start = self._credentials.token  # reported: the next call says None
        expiry = self._credentials.expiry
        return {
            "access_token": self._credentials.token,
            "refresh_token": self._credentials.refresh_token,
            "expires_at": expiry.replace(tzinfo=UTC).isoformat() if expiry else None,
        }

    # -- sync -------------------------------------------------------------------------
    def changes(self, folder: str, cursor: str | None, limit: int, since: date) -> Batch:
        state = _cursor(cursor)
        if "history_id" in state:
            return self._history(folder, state, limit)
        return self._listing(folder, state, limit, since)

    def _listing(self, folder: str, state: dict[str, Any], limit: int, since: date) -> Batch:
        """The first reading of a label: the ids of the last N days, then their metadata
        oldest first, `limit` at a time (a reply's parent is read before the reply, as with
        IMAP's UIDs; Gmail lists newest first). The cursor keeps the last id read, so an
        interrupted reading resumes after it."""
        users = self.service.users()
        if "start" not in state:
            # Changes after this point are caught by the history that follows the listing.
            state["start"] = int(self._execute(users.getProfile(userId="me"))["historyId"])
        pending = self._pending.get(folder)
        if pending is None:
            pending = self._list_ids(folder, since)
            after = state.get("after")
            if after is not None:
                if after not in pending:  # gone from Gmail meanwhile: read the label again
                    return Batch(messages=[], cursor=json.dumps({}), done=False, reset=True)
                pending = pending[pending.index(after) + 1 :]
        chunk, rest = pending[:limit], pending[limit:]
        if rest:
            self._pending[folder] = rest
            next_cursor: dict[str, Any] = {"start": state["start"], "after": chunk[-1]}
        else:
            self._pending.pop(folder, None)
            next_cursor = {"history_id": state["start"]}
        return Batch(
            messages=self._metadata(folder, chunk), cursor=json.dumps(next_cursor),
            done=not rest, remaining=len(rest),
        )  # fmt: skip

    def _list_ids(self, folder: str, since: date) -> list[str]:
        """Ids of the label's messages of the last N days, oldest first (pages of 500 ids)."""
        messages = self.service.users().messages()
        days = max((datetime.now(UTC).date() - since).days, 1)
        ids: list[str] = []
        page = None
        while True:
            listing = self._execute(
                messages.list(userId="me", labelIds=[folder], q=f"newer_than:{days}d",
                              maxResults=LIST_PAGE, pageToken=page)
            )  # fmt: skip
            ids += [m["id"] for m in listing.get("messages", [])]
            page = listing.get("nextPageToken")
            if not page:
                return ids[::-1]

    def _history(self, folder: str, state: dict[str, Any], limit: int) -> Batch:
        users = self.service.users()
        ids: list[str] = []
        page = None
        newest = state["history_id"]
        try:
            while True:
                answer = self._execute(
                    users.history().list(
                        userId="me", startHistoryId=str(state["history_id"]), labelId=folder,
                        historyTypes=["messageAdded"], pageToken=page,
                        maxResults=min(limit, LIST_PAGE),
                    )
                )  # fmt: skip
                for record in answer.get("history", []):
                    for added in record.get("messagesAdded", []):
                        message = added["message"]
                        if folder in message.get("labelIds", [folder]) and message["id"] not in ids:
                            ids.append(message["id"])
                newest = int(answer.get("historyId", newest))
                page = answer.get("nextPageToken")
                if not page:
                    break
        except HistoryExpired:
            # Gmail no longer has history that old: read the label again from the start.
            return Batch(messages=[], cursor=json.dumps({}), done=False, reset=True)
        return Batch(
            messages=self._metadata(folder, ids), cursor=json.dumps({"history_id": newest}),
            done=True,
        )  # fmt: skip

    def _batch_get(self, ids: list[str], **params: Any) -> dict[str, dict[str, Any]]:
        """messages.get for many ids, 100 per batch request; ids gone from Gmail are missing."""
        found: dict[str, dict[str, Any]] = {}
        failures: list[BaseException] = []

        def collect(request_id: str, response: Any, exception: BaseException | None) -> None:
            if exception is None:
                found[response["id"]] = response
            elif not (isinstance(exception, HttpError) and exception.status_code == 404):
                failures.append(exception)

        messages = self.service.users().messages()
        for start in range(0, len(ids), BATCH_LIMIT):
            batch = BatchHttpRequest(callback=collect, batch_uri=f"{self._api_root}batch")
            for mid in ids[start : start + BATCH_LIMIT]:
                batch.add(messages.get(userId="me", id=mid, **params))
            self._execute(batch)
            if failures:
                raise _error(failures[0])
        return found

    def _metadata(self, folder: str, ids: list[str]) -> list[MessageMeta]:
        if not ids:
            return []
        found = self._batch_get(ids, format="metadata", metadataHeaders=METADATA_HEADERS)
        return [meta_from_gmail(folder, found[mid]) for mid in ids if mid in found]

    def fetch_many(self, folder: str, refs: list[str]) -> dict[str, bytes]:
        found = self._batch_get(list(refs), format="raw")
        return {mid: _unb64url(found[mid]["raw"]) for mid in refs if mid in found}

    # -- sending ----------------------------------------------------------------------
    def send(
        self,
        raw: bytes,
        sender: str,
        recipients: list[str],
        on_accepted: Callable[[], None] | None = None,
    ) -> None:
        """messages.send with our MIME; Bcc recipients go in a Bcc header, which Gmail removes
        from what the others receive. A reply carries its Gmail thread."""
        body: dict[str, Any] = {"raw": _b64url(with_bcc_header(raw, recipients))}
        parent = parse_headers(raw).in_reply_to
        if parent:
            listing = self._execute(
                self.service.users().messages().list(userId="me", q=f"rfc822msgid:{parent}")
            )
            if listing.get("messages"):
                body["threadId"] = listing["messages"][0]["threadId"]
        self._execute(self.service.users().messages().send(userId="me", body=body))
        if on_accepted is not None:
            on_accepted()

    def wait_for_change(
        self, folder: str, seconds: float, stopping: Callable[[], bool]
    ) -> bool | None:
        return None  # Gmail announces through Pub/Sub (watch_changes), not on a connection

    def folder_mark(self, folder: str) -> str | None:
        return None  # Gmail pushes, or is polled

    def watch_changes(self, current: dict[str, Any] | None) -> dict[str, Any] | None:
        """users.watch on INBOX and SENT, publishing to the configured Pub/Sub topic; renewed
        a day before its expiry (Gmail keeps a watch 7 days). 100 quota units a call."""
        topic = self.config.push.get("topic")
        if not topic:
            return None
        if current and not _expires_soon(current):
            return current
        answer = self._execute(
            self.service.users().watch(
                userId="me",
                body={"topicName": topic, "labelIds": ["INBOX", "SENT"],
                      "labelFilterBehavior": "include"},
            )
        )  # fmt: skip
        expires = datetime.fromtimestamp(int(answer["expiration"]) / 1000, tz=UTC)
        return {"expires_at": expires.isoformat(), "history_id": str(answer.get("historyId", ""))}

    def file_in_sent(self, folder: str, raw: bytes, message_id: str) -> bool:
        return False  # Gmail puts what it sends in SENT itself

    def find_sent(self, folder: str, message_id: str) -> bool:
        """messages.list on the SENT label with `q=rfc822msgid:<id>`: Gmail labels what
        messages.send accepted SENT in the same step, so "not found" means "not sent"."""
        listing = self._execute(
            self.service.users()
            .messages()
            .list(userId="me", labelIds=[folder], q=f"rfc822msgid:{message_id}", maxResults=1)
        )
        return bool(listing.get("messages"))


def _expires_soon(state: dict[str, Any]) -> bool:
    return datetime.fromisoformat(state["expires_at"]) - datetime.now(UTC) < RENEW_AHEAD


# -- push (Pub/Sub) ---------------------------------------------------------------------
def fetch_push_certs(certs_uri: str, timeout: float) -> tuple[dict[str, str], int]:
    """Google's current token-signing certificates ({key id: PEM}) and for how many seconds
    they may be kept (the answer's Cache-Control max-age)."""
    try:
        response, content = httplib2.Http(timeout=timeout).request(certs_uri, "GET")
    except (OSError, httplib2.HttpLib2Error) as exc:
        raise ServerUnavailable(f"Google's certificates could not be read ({exc}).") from None
    if response.status != 200:
        raise ServerUnavailable(f"Google's certificates: HTTP {response.status}.")
    age = re.search(r"max-age=(\d+)", response.get("cache-control", ""))
    return json.loads(content), int(age.group(1)) if age else 3600


def read_push(
    authorization: str,
    body: bytes,
    *,
    certs: dict[str, str],
    audience: str,
    service_account: str,
) -> tuple[str, str]:
    """The address and historyId that a Pub/Sub push request from Gmail announces, once its
    OIDC token is verified: signed with one of Google's `certs`, for our `audience`, issued
    to the push subscription's `service_account` and not expired. Raises PushRefused."""
    if not authorization.startswith("Bearer "):
        raise PushRefused("no bearer token")
    try:
        claims = google_jwt.decode(
            authorization[7:], certs=certs, audience=audience, clock_skew_in_seconds=10
        )
    except (ValueError, GoogleAuthError) as exc:
        raise PushRefused(f"token refused: {exc}") from None
    if claims.get("iss") not in GOOGLE_ISSUERS:
        raise PushRefused("token not issued by Google")
    if claims.get("email") != service_account or not claims.get("email_verified"):
        raise PushRefused("token not issued to the push subscription's service account")
    try:
        data = json.loads(base64.b64decode(json.loads(body)["message"]["data"], validate=True))
        address, history_id = data["emailAddress"], data["historyId"]
    except (ValueError, KeyError, TypeError) as exc:
        raise PushRefused(f"not a Gmail notification ({type(exc).__name__})") from None
    if not isinstance(address, str) or not isinstance(history_id, int | str):
        raise PushRefused("not a Gmail notification (wrong types)")
    return address, str(history_id)


class HistoryExpired(ProviderError):
    """history.list answered 404: the start historyId is older than Gmail keeps."""


def _error(exc: BaseException) -> ProviderError:
    """Map the client libraries' failures to the provider errors (SPEC D1)."""
    if isinstance(exc, RefreshError):
        detail = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], dict) else {}
        if detail.get("error") == "invalid_grant" or not getattr(exc, "retryable", True):
            return AccessRevoked(
                "Google refused Threadline's access to this mailbox (access was revoked or "
                "expired). Connect it again to grant access."
            )
        return ServerUnavailable(
            f"Google's sign-in service failed: {exc.args[0] if exc.args else exc}"
        )
    if isinstance(exc, HttpError):
        status = exc.status_code
        if status == 401:
            return AccessRevoked(
                "Google no longer accepts Threadline's access to this mailbox. Connect it again."
            )
        if status == 404 and "/history" in (exc.uri or ""):
            return HistoryExpired("Gmail's history for this mailbox expired.")
        if status == 429 or (status == 403 and "ateLimitExceeded" in str(exc.content)):
            retry_after = float(exc.resp.get("retry-after", 60) or 60)
            return Throttled(f"Gmail asks to slow down (HTTP {status}).", retry_after=retry_after)
        return ServerUnavailable(f"Gmail answered HTTP {status}: {exc.reason}")
    if isinstance(exc, socket.timeout | TimeoutError):
        return ServerUnavailable("Gmail did not answer in time.")
    return ServerUnavailable(f"Gmail could not be reached ({type(exc).__name__}).")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode()


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def meta_from_gmail(folder: str, message: dict[str, Any]) -> MessageMeta:
    """MessageMeta from a `format=metadata` message: its header list goes through the same
    header parser as IMAP's, so both providers read headers the same way."""
    headers = message.get("payload", {}).get("headers", [])
    fields = parse_header_list((h["name"], h["value"]) for h in headers)
    received = datetime.fromtimestamp(int(message.get("internalDate", 0)) / 1000, tz=UTC)
    return MessageMeta(
        folder=folder, ref=message["id"], message_id=fields.message_id,
        in_reply_to=fields.in_reply_to, references=fields.references,
        from_name=fields.from_name, from_address=fields.from_address, to=fields.to, cc=fields.cc,
        subject=fields.subject, sent_at=fields.sent_at, received_at=received,
        size=int(message.get("sizeEstimate", 0)), flags=tuple(message.get("labelIds", [])),
        problems=tuple(fields.problems), thread_hint=message.get("threadId", ""),
    )  # fmt: skip
