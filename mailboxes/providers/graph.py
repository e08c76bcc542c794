"""Microsoft 365 provider (O365 over Microsoft Graph): OAuth tokens, delta queries.

Folders are the well-known Inbox and SentItems. The first reading of a folder is a delta
query filtered to the last N days, page after page (`@odata.nextLink`); its final
`@odata.deltaLink` is the checkpoint the next reading follows. An expired delta token (410)
rereads the folder cleanly. Headers come from the messages' `internetMessageHeaders` through
the same parser as IMAP's; whole messages (`$value`, MIME) only for tracked threads (L3).
Sending posts our MIME to `sendMail`, which files it in Sent Items itself (L6).

O365 makes the requests (its Connection: session, retries off, 401 -> token refresh). The
refresh itself is done here against `config.oauth["token_uri"]`, through O365's documented
`should_refresh_token` hook, so no token store but the mailbox's encrypted one is involved;
Microsoft rotates refresh tokens, and each new one is handed back to be saved.
"""

from __future__ import annotations

import base64
import contextlib
import json
import secrets
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any, NamedTuple
from urllib.parse import quote

import requests
from O365 import Account, MSGraphProtocol
from O365.utils.token import MemoryTokenBackend

from ..parsing import parse_header_list, with_bcc_header
from .base import (
    AccessRevoked,
    Batch,
    Capabilities,
    FolderInfo,
    MailboxMoved,
    MessageMeta,
    ProviderConfig,
    ProviderError,
    PushRefused,
    ServerUnavailable,
    Throttled,
)

SCOPES = ["offline_access", "User.Read", "Mail.Read", "Mail.Send"]
SELECT = ("id,internetMessageId,subject,from,toRecipients,ccRecipients,sentDateTime,"
          "receivedDateTime,conversationId,isRead,internetMessageHeaders")  # fmt: skip
REFRESH_AHEAD = timedelta(minutes=5)
# Graph keeps a subscription to Outlook messages at most 10,080 minutes (7 days); renew it
# this long before it expires.
SUBSCRIPTION_LIFETIME = timedelta(minutes=10_000)
RENEW_AHEAD = timedelta(days=1)
MOVED_CODES = {"MailboxNotEnabledForRESTAPI", "ErrorMailboxMoved", "ErrorMailboxMoveInProgress"}


class _Tokens(MemoryTokenBackend):
    """The mailbox's tokens for O365's Connection, refreshed here when Graph says 401."""

    def __init__(self, config: ProviderConfig) -> None:
        super().__init__()
        credentials, self.oauth = config.credentials, config.oauth
        self.timeout = config.timeout
        self.access = credentials.get("access_token") or ""
        self.refresh = credentials.get("refresh_token") or ""
        expires = credentials.get("expires_at")
        self.expires_at = datetime.fromisoformat(expires) if expires else datetime.now(UTC)
        self.changed = False

    @property
    def has_data(self) -> bool:
        return bool(self.access)

    def get_access_token(self, *, username: str | None = None) -> dict[str, Any] | None:
        return {"secret": self.access} if self.access else None

    def get_refresh_token(self, *, username: str | None = None) -> dict[str, Any] | None:
        return {"secret": self.refresh} if self.refresh else None

    def token_is_long_lived(self, *, username: str | None = None) -> bool:
        return bool(self.refresh)

    def token_is_expired(self, *, username: str | None = None) -> bool:
        # Graph answered 401: whatever the clock says, the access token is no longer good.
        return True

    def should_refresh_token(self, con: Any = None, *, username: str | None = None) -> None:
        try:
            answer = requests.post(
                self.oauth["token_uri"],
                data={"grant_type": "refresh_token", "refresh_token": self.refresh,
                      "client_id": self.oauth.get("client_id"),
                      "client_secret": self.oauth.get("client_secret"),
                      "scope": " ".join(SCOPES)},
                timeout=self.timeout,
            )  # fmt: skip
        except requests.RequestException as exc:
            raise ServerUnavailable(
                f"Microsoft's sign-in service could not be reached ({type(exc).__name__})."
            ) from None
        data = answer.json() if answer.content else {}
        if answer.status_code != 200:
            if data.get("error") in {"invalid_grant", "interaction_required", "consent_required"}:
                raise AccessRevoked(
                    "Microsoft refused Threadline's access to this mailbox (consent was revoked "
                    "or the password changed). Connect it again to grant access."
                )
            raise ServerUnavailable(f"Microsoft's sign-in service answered {answer.status_code}.")
        self.access = data["access_token"]
        self.refresh = data.get("refresh_token") or self.refresh  # rotated: keep the newest
        self.expires_at = datetime.now(UTC) + timedelta(seconds=int(data.get("expires_in", 3600)))
        self.changed = True
        if con is not None and con.session is not None:
            con.update_session_auth_header(access_token=self.access)  # else read when created
        return None  # O365: "the backend refreshed the token itself"


def _protocol(api_root: str) -> MSGraphProtocol:
    local = type("ThreadlineGraphProtocol", (MSGraphProtocol,), {"_protocol_url": api_root})
    return local(default_resource="me")


class GraphProvider:
    def __init__(self, config: ProviderConfig) -> None:
        self.config = config
        oauth = config.oauth
        self._tokens = _Tokens(config)
        api_root = oauth.get("api_root", "https://graph.microsoft.com/").rstrip("/") + "/"
        self.account = Account(
            (oauth.get("client_id"), oauth.get("client_secret")),
            protocol=_protocol(api_root), token_backend=self._tokens,
            request_retries=0, requests_delay=0, timeout=config.timeout,
        )  # fmt: skip
        self.con = self.account.con
        self.service = self.account.protocol.service_url.rstrip("/")  # .../v1.0

    def __enter__(self) -> GraphProvider:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.con.session is not None:
            self.con.session.close()

    def _call(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        try:
            if self._tokens.expires_at <= datetime.now(UTC) + REFRESH_AHEAD:
                # Refresh before it expires rather than after a 401.
                self._tokens.should_refresh_token(self.con)
            return self.con.oauth_request(url, method, **kwargs)
        except ProviderError:
            raise
        except requests.HTTPError as exc:
            raise _error(exc.response) from None
        except requests.RequestException as exc:
            raise ServerUnavailable(
                f"Microsoft Graph could not be reached ({type(exc).__name__})."
            ) from None

    def _get(self, path_or_url: str, **kwargs: Any) -> dict[str, Any]:
        url = path_or_url if "://" in path_or_url else f"{self.service}{path_or_url}"
        return self._call("get", url, **kwargs).json()

    # -- connect ----------------------------------------------------------------------
    def count_since(self, folder: str, since: date) -> int | None:
        """The folder's messages received from `since` on, counted by Graph ($count with the
        same filter as the delta query; one id listed)."""
        found = self._get(
            f"/me/mailFolders/{folder}/messages",
            params={
                "$filter": f"receivedDateTime ge {since.isoformat()}T00:00:00Z",
                "$count": "true",
                "$select": "id",
                "$top": 1,
            },
        )
        count = found.get("@odata.count")
        return int(count) if count is not None else None

    def check(self) -> Capabilities:
        self._get("/me")
        folders = self.account.mailbox().get_folders()  # O365's folder listing
        return Capabilities(
            server=("graph",),
            folders=tuple(FolderInfo(name=f.name) for f in folders),
            inbox="Inbox",
            sent_folder="SentItems",
        )

    def updated_credentials(self) -> dict[str, Any] | None:
        if not self._tokens.changed:
            return None
        self._tokens.changed = False
        return {
            "access_token": self._tokens.access,
            "refresh_token": self._tokens.refresh,
            "expires_at": self._tokens.expires_at.isoformat(),
        }

    # -- sync -------------------------------------------------------------------------
    def changes(self, folder: str, cursor: str | None, limit: int, since: date) -> Batch:
        state = json.loads(cursor) if cursor else {}
        link = state.get("next") or state.get("delta")
        if not link:
            start = f"{since.isoformat()}T00:00:00Z"
            total = int(self._get(f"/me/mailFolders/{folder}").get("totalItemCount", 0))
            state = {"total": total, "seen": 0}
            link = (f"{self.service}/me/mailFolders/{folder}/messages/delta?$select={SELECT}"
                    f"&$filter={quote(f'receivedDateTime ge {start}')}")  # fmt: skip
        headers = {"Prefer": f"odata.maxpagesize={limit}"}
        try:
            page = self._get(link, headers=headers)
        except DeltaExpired:
            return Batch(messages=[], cursor=json.dumps({}), done=False, reset=True)
        items = [m for m in page.get("value", []) if "@removed" not in m]
        metas = [meta_from_graph(folder, item) for item in items]
        seen = state.get("seen", 0) + len(metas)
        if page.get("@odata.nextLink"):
            next_state = {"next": page["@odata.nextLink"], "total": state.get("total", 0),
                          "seen": seen}  # fmt: skip
            remaining = max(state.get("total", 0) - seen, 1)
            return Batch(messages=metas, cursor=json.dumps(next_state), done=False,
                         remaining=remaining)  # fmt: skip
        return Batch(messages=metas, cursor=json.dumps({"delta": page["@odata.deltaLink"]}),
                     done=True)  # fmt: skip

    def fetch_many(self, folder: str, refs: list[str]) -> dict[str, bytes]:
        found = {}
        for ref in refs:
            with contextlib.suppress(NotFound):  # gone from the mailbox meanwhile
                found[ref] = self._call("get", f"{self.service}/me/messages/{ref}/$value").content
        return found

    # -- sending ----------------------------------------------------------------------
    def send(
        self,
        raw: bytes,
        sender: str,
        recipients: list[str],
        on_accepted: Callable[[], None] | None = None,
    ) -> None:
        """sendMail with our MIME (base64); Bcc recipients go in a Bcc header, which
        Exchange removes from what the others receive."""
        raw = with_bcc_header(raw, recipients)
        self._call("post", f"{self.service}/me/sendMail", data=base64.b64encode(raw),
                   headers={"Content-type": "text/plain"})  # fmt: skip
        if on_accepted is not None:
            on_accepted()

    def wait_for_change(
        self, folder: str, seconds: float, stopping: Callable[[], bool]
    ) -> bool | None:
        return None  # Graph announces through change notifications (watch_changes)

    def folder_mark(self, folder: str) -> str | None:
        return None  # Graph notifies, or is polled

    def watch_changes(self, current: dict[str, Any] | None) -> dict[str, Any] | None:
        """A change-notification subscription to the mailbox's new messages (every folder),
        posted to our webhook with a clientState secret of its own; renewed (PATCH) a day
        before it expires, or when Graph asked for reauthorization, and made again when
        Graph no longer has it. Graph checks both URLs with a validation token when the
        subscription is made."""
        push = self.config.push
        if not push.get("notification_url"):
            return None
        if current and not current.get("renew") and not _expires_soon(current):
            return current
        expires = (datetime.now(UTC) + SUBSCRIPTION_LIFETIME).isoformat().replace("+00:00", "Z")
        if current:
            try:
                renewed = self._call("patch", f"{self.service}/subscriptions/{current['id']}",
                                     json={"expirationDateTime": expires}).json()  # fmt: skip
            except NotFound:
                pass  # Graph removed it: make a new one
            else:
                return {"id": current["id"], "secret": current["secret"],
                        "expires_at": _iso(renewed["expirationDateTime"])}  # fmt: skip
        secret = secrets.token_urlsafe(32)
        made = self._call(
            "post", f"{self.service}/subscriptions",
            json={"changeType": "created", "resource": "me/messages",
                  "notificationUrl": push["notification_url"],
                  "lifecycleNotificationUrl": push["lifecycle_url"],
                  "expirationDateTime": expires, "clientState": secret},
        ).json()  # fmt: skip
        return {"id": made["id"], "secret": secret, "expires_at": _iso(made["expirationDateTime"])}

    def file_in_sent(self, folder: str, raw: bytes, message_id: str) -> bool:
        return False  # sendMail saves to Sent Items itself

    def find_sent(self, folder: str, message_id: str) -> bool:
        """The folder's messages filtered on `internetMessageId` (which Graph gives with its
        angle brackets), one id asked for: sendMail saves what it accepts to Sent Items."""
        literal = f"<{message_id}>".replace("'", "''")  # an OData string literal
        found = self._get(
            f"/me/mailFolders/{folder}/messages",
            params={"$filter": f"internetMessageId eq '{literal}'", "$select": "id", "$top": 1},
        )
        return bool(found.get("value"))


def _iso(text: str) -> str:
    """Graph's times ("...Z", up to 7 decimals) as Python reads them."""
    whole, _, fraction = text.rstrip("Z").partition(".")
    return f"{whole}.{fraction[:6]:0<6}+00:00" if fraction else f"{whole}+00:00"


def _expires_soon(state: dict[str, Any]) -> bool:
    return datetime.fromisoformat(state["expires_at"]) - datetime.now(UTC) < RENEW_AHEAD


class Notification(NamedTuple):
    """One item of a change or lifecycle notification."""

    subscription_id: str
    client_state: str
    # A change ("created") or a lifecycle event ("reauthorizationRequired",
    # "subscriptionRemoved", "missed").
    event: str


def read_notifications(body: bytes) -> list[Notification]:
    """The items of a notification request's JSON body ({"value": [...]}); PushRefused when
    it is not one."""
    try:
        items = json.loads(body)["value"]
        return [
            Notification(
                subscription_id=str(item["subscriptionId"]),
                client_state=str(item.get("clientState") or ""),
                event=str(item.get("lifecycleEvent") or item.get("changeType") or ""),
            )
            for item in items
        ]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise PushRefused(f"not a Graph notification ({type(exc).__name__})") from None


class DeltaExpired(ProviderError):
    """A delta link Graph no longer accepts (410): read the folder again from the start."""


class NotFound(ServerUnavailable):
    """Graph answered 404: the message or subscription is gone."""


def _error(response: requests.Response) -> ProviderError:
    status = response.status_code
    try:
        code = response.json().get("error", {}).get("code", "")
    except ValueError:
        code = ""
    if status == 410:
        return DeltaExpired("The folder's delta token expired.")
    if code in MOVED_CODES:
        return MailboxMoved(
            "Microsoft 365 says this mailbox moved (migrated or no longer hosted online). "
            "Connect it again once the move is complete."
        )
    if status in (401, 403):
        return AccessRevoked(
            "Microsoft no longer accepts Threadline's access to this mailbox. Connect it again."
        )
    if status == 429 or (status == 503 and response.headers.get("Retry-After")):
        retry_after = float(response.headers.get("Retry-After") or 60)
        return Throttled(f"Microsoft Graph asks to slow down (HTTP {status}).",
                         retry_after=retry_after)  # fmt: skip
    if status == 404:
        return NotFound(f"Microsoft Graph answered 404 ({code or 'not found'}).")
    return ServerUnavailable(f"Microsoft Graph answered HTTP {status} ({code}).")


def _address(person: dict[str, Any] | None) -> str:
    email = (person or {}).get("emailAddress") or {}
    name, address = email.get("name", ""), email.get("address", "")
    return f'"{name}" <{address}>' if name else address


def meta_from_graph(folder: str, item: dict[str, Any]) -> MessageMeta:
    """MessageMeta from a Graph message: its Internet headers when Graph gives them (the
    same header parser as IMAP), else the structured fields."""
    headers = [(h["name"], h["value"]) for h in item.get("internetMessageHeaders") or []]
    if not headers:
        headers = [("From", _address(item.get("from"))),
                   ("To", ", ".join(_address(p) for p in item.get("toRecipients", []))),
                   ("Cc", ", ".join(_address(p) for p in item.get("ccRecipients", []))),
                   ("Subject", item.get("subject") or ""),
                   ("Message-ID", item.get("internetMessageId") or "")]  # fmt: skip
    fields = parse_header_list(headers)
    received = item.get("receivedDateTime")
    return MessageMeta(
        folder=folder, ref=item["id"], message_id=fields.message_id,
        in_reply_to=fields.in_reply_to, references=fields.references,
        from_name=fields.from_name, from_address=fields.from_address, to=fields.to, cc=fields.cc,
        subject=fields.subject, sent_at=fields.sent_at,
        received_at=datetime.fromisoformat(received.replace("Z", "+00:00")) if received else None,
        size=0, flags=() if not item.get("isRead") else ("\\Seen",),
        problems=tuple(fields.problems), thread_hint=item.get("conversationId", ""),
    )  # fmt: skip
