"""Push from Gmail (users.watch, Pub/Sub push) and Microsoft 365 (Graph change notifications),
through the real client libraries against the wire-format fakes (tests/servers/), which call
our webhooks over HTTP on a live server (sync/push.py, sync/views.py; issue 14).

With no watcher holding the mailbox, a push queues its sync, which these tests run inline; the
watcher's side (a push wakes the thread that holds the mailbox) is `test_wake`, and the whole
loop with a real `watch_mailboxes` process is the last test (PostgreSQL only)."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from engagements.models import EmailEngagement
from mailboxes.crypto import Secret
from mailboxes.models import Mailbox
from mailboxes.providers.base import ServerUnavailable
from mailboxes.services import open_provider
from sync.models import MailboxWatch, PushSubscription
from sync.push import keep_push
from sync.watcher import MailboxThread, MailboxWatcher
from tests.mailboxes.helpers import reply, sync, track_proposal
from tests.processes import (
    child_environment,
    kill_command,
    left_behind,
    needs_a_shared_database,
    start_command,
    wait_until,
)
from tests.servers.fake_google import PUSH_SERVICE_ACCOUNT, PUSH_TOPIC, signing_key

pytestmark = pytest.mark.django_db(transaction=True)

ARRIVAL_TO_TIMELINE = 10  # seconds: the promise


@pytest.fixture
def gmail_push(settings, google, live_server):
    """Gmail push configured: our topic, and its push subscription delivering to us."""
    settings.CRM_SITE_URL = live_server.url
    settings.CRM_GMAIL_PUSH_TOPIC = PUSH_TOPIC
    settings.CRM_GMAIL_PUSH_SERVICE_ACCOUNT = PUSH_SERVICE_ACCOUNT
    google.push_to(live_server.url + reverse("sync:push_gmail"))
    return google


@pytest.fixture
def graph_push(settings, microsoft, live_server):
    settings.CRM_SITE_URL = live_server.url
    settings.CRM_GRAPH_PUSH = True
    return microsoft


def push_on(mailbox) -> dict:
    """The watcher's step for a mailbox it holds: push set up (or renewed); its state."""
    with open_provider(mailbox) as provider:
        assert keep_push(mailbox.pk, provider)
    return PushSubscription.objects.get(mailbox=mailbox).state.reveal()


def logged(message_id: str) -> bool:
    return EmailEngagement.objects.filter(message_id=message_id).exists()


def sync_requested(mailbox) -> bool:
    """Whether a push had the mailbox synced: marked for the watcher that holds it, or else
    synced by a worker (which tests run inline, at once)."""
    mailbox.refresh_from_db()
    marked = MailboxWatch.objects.filter(mailbox=mailbox, changed_at__isnull=False).exists()
    return marked or mailbox.last_synced_at is not None


def forget_syncs(mailbox) -> None:
    Mailbox.objects.filter(pk=mailbox.pk).update(last_synced_at=None)


# -- Gmail ------------------------------------------------------------------------------


def test_gmail_push_logs_a_reply_within_seconds(gmail_push, gmail, team):
    track_proposal(team, gmail)
    sync(gmail)
    state = push_on(gmail)

    watch = gmail_push.watch
    assert watch["topicName"] == PUSH_TOPIC and sorted(watch["labelIds"]) == ["INBOX", "SENT"]
    expires = PushSubscription.objects.get(mailbox=gmail).expires_at
    assert timedelta(days=6, hours=23) < expires - timezone.now() <= timedelta(days=7)
    assert state["history_id"]

    gmail_push.add_message(reply(1))

    wait_until(lambda: logged("reply-1@example.com"), ARRIVAL_TO_TIMELINE, "the reply logged")
    wait_until(lambda: gmail_push.push_statuses, 5, "the push answered")  # after the sync
    assert gmail_push.push_statuses == [204]
    # The first sync listed both labels; the pushed one read their history.
    assert gmail_push.requests_to("/gmail/v1/users/me/history") == 2


def test_gmail_watch_is_renewed_a_day_before_it_expires(gmail_push, gmail):
    push_on(gmail)
    push_on(gmail)
    assert gmail_push.watch_calls == 1  # valid for days yet: nothing asked

    row = PushSubscription.objects.get(mailbox=gmail)
    soon = timezone.now() + timedelta(hours=20)
    row.state = Secret({**row.state.reveal(), "expires_at": soon.isoformat()})
    row.save()
    push_on(gmail)

    assert gmail_push.watch_calls == 2
    row.refresh_from_db()
    assert row.expires_at - timezone.now() > timedelta(days=6)


@pytest.mark.parametrize(
    "forgery",
    [
        "no token",
        "signed by another key",
        "another audience",
        "another service account",
        "unverified email",
        "another issuer",
        "expired",
        "not a notification",
        "data not base64",
        "empty body",
    ],
)
def test_forged_gmail_pushes_are_refused_and_cost_nothing(gmail_push, gmail, forgery):
    fake = gmail_push
    body, token = fake.push_body(), fake.push_token()
    rogue, _cert = signing_key.__wrapped__()  # a key Google never published
    past = int(timezone.now().timestamp()) - 7200
    match forgery:
        case "no token":
            token = ""
        case "signed by another key":
            token = fake.push_token(key=rogue)
        case "another audience":
            token = fake.push_token(aud="https://elsewhere.example/push/gmail/")
        case "another service account":
            token = fake.push_token(email="someone@evil.example")
        case "unverified email":
            token = fake.push_token(email_verified=False)
        case "another issuer":
            token = fake.push_token(iss="https://evil.example")
        case "expired":
            token = fake.push_token(iat=past, exp=past + 3600)
        case "not a notification":
            body = b'{"message": {"data": "e30="}}'  # "{}": no address
        case "data not base64":
            body = b'{"message": {"data": "%%%"}}'
        case "empty body":
            body = b""

    status = fake.deliver_push(body, token)

    assert status == (400 if forgery == "empty body" else 403)
    assert not sync_requested(gmail)


def test_a_push_for_an_address_we_do_not_connect_is_acknowledged(gmail_push, gmail):
    body = gmail_push.push_body(email="stranger@gmail.example")

    assert gmail_push.deliver_push(body, gmail_push.push_token()) == 204  # or Pub/Sub retries
    assert not sync_requested(gmail)
    assert gmail_push.deliver_push(gmail_push.push_body(), gmail_push.push_token()) == 204
    assert sync_requested(gmail)  # the control: the same push for our address


def test_without_push_configured_gmail_is_polled(settings, google, gmail, live_server):
    settings.CRM_GMAIL_PUSH_TOPIC = ""
    with open_provider(gmail) as provider:
        assert keep_push(gmail.pk, provider) is False
    assert google.watch_calls == 0
    assert not PushSubscription.objects.exists()


def test_a_topic_gmail_may_not_publish_to_leaves_the_mailbox_polled(settings, gmail_push, gmail):
    settings.CRM_GMAIL_PUSH_TOPIC = "projects/threadline-test/topics/not-shared-with-gmail"
    watcher = MailboxWatcher(tick=1, ttl=5, poll=60)
    thread = MailboxThread(watcher, gmail.pk)

    with open_provider(gmail) as provider:
        with pytest.raises(ServerUnavailable):
            keep_push(gmail.pk, provider)
        thread.keep_push(provider)  # what the watcher's thread does: log, poll, retry later

    assert thread.push_again_at > 0
    gmail.refresh_from_db()
    assert gmail.state == Mailbox.State.CONNECTED and not PushSubscription.objects.exists()


# -- Microsoft 365 ----------------------------------------------------------------------


def test_graph_subscription_is_validated_and_its_notifications_log_replies(
    graph_push, outlook, team
):
    track_proposal(team, outlook)
    sync(outlook)
    state = push_on(outlook)

    subscription = graph_push.subscriptions[state["id"]]
    assert subscription["clientState"] == state["secret"] and len(state["secret"]) >= 40
    assert subscription["notificationUrl"].endswith(reverse("sync:push_graph"))
    assert subscription["lifecycleNotificationUrl"].endswith(reverse("sync:push_graph_lifecycle"))
    # Graph validated both URLs before it made the subscription (the fake checks the echo).
    stored = PushSubscription.objects.get(mailbox=outlook)
    assert stored.subscription_id == state["id"]
    with connection.cursor() as cursor:
        cursor.execute("SELECT state FROM sync_pushsubscription")
        assert state["secret"] not in cursor.fetchone()[0]  # encrypted at rest

    graph_push.add_message(reply(2))

    wait_until(lambda: logged("reply-2@example.com"), ARRIVAL_TO_TIMELINE, "the reply logged")
    wait_until(lambda: graph_push.notified, 5, "the notification answered")  # after the sync
    assert graph_push.notified == [(subscription["notificationUrl"], 202)]


def test_graph_notifications_without_our_client_state_are_ignored(graph_push, outlook, client):
    state = push_on(outlook)
    url = reverse("sync:push_graph")

    def notify(**item) -> int:
        body = {"value": [{"subscriptionId": state["id"], "changeType": "created", **item}]}
        return client.post(url, json.dumps(body), content_type="application/json").status_code

    assert notify(clientState="guessed") == 202  # acknowledged, so Graph does not retry it
    assert notify() == 202
    assert notify(subscriptionId="someone-else", clientState=state["secret"]) == 202
    assert not sync_requested(outlook)
    flood = json.dumps({"value": [{"subscriptionId": "x"}] * 1001}).encode()
    for junk in [b"", b"not json", b'{"value": 3}', b'{"value": [{"clientState": "x"}]}', flood]:
        response = client.post(url, junk, content_type="application/json")
        assert response.status_code == 400
    assert not sync_requested(outlook)

    assert notify(clientState=state["secret"]) == 202  # the control
    assert sync_requested(outlook)


def test_graph_url_validation_echoes_the_token_as_plain_text(graph_push, client):
    url = reverse("sync:push_graph_lifecycle")
    token = "Validation: <script>alert(1)</script>"

    response = client.post(f"{url}?validationToken={token}", content_type="text/plain")

    assert response.status_code == 200 and response.content.decode() == token
    assert response["Content-Type"].startswith("text/plain")
    assert response["X-Content-Type-Options"] == "nosniff"
    too_long = "x" * 5000
    assert client.post(f"{url}?validationToken={too_long}").status_code == 400


def test_graph_lifecycle_events_renew_replace_or_catch_up(graph_push, outlook):
    first = push_on(outlook)

    assert graph_push.lifecycle("reauthorizationRequired") == 202
    assert push_on(outlook)["id"] == first["id"]
    assert ("PATCH", f"/v1.0/subscriptions/{first['id']}") in graph_push.log
    assert "renew" not in PushSubscription.objects.get(mailbox=outlook).state.reveal()
    assert sync_requested(outlook)  # and mail of the meantime is read

    forget_syncs(outlook)
    assert graph_push.lifecycle("subscriptionRemoved") == 202
    assert not PushSubscription.objects.exists()
    second = push_on(outlook)
    assert second["id"] != first["id"] and list(graph_push.subscriptions) == [second["id"]]

    forget_syncs(outlook)
    assert graph_push.lifecycle("missed") == 202
    assert sync_requested(outlook)


def test_graph_subscription_is_renewed_before_expiry_or_made_again(graph_push, outlook):
    first = push_on(outlook)
    row = PushSubscription.objects.get(mailbox=outlook)
    soon = (timezone.now() + timedelta(hours=3)).isoformat()
    row.state = Secret({**first, "expires_at": soon})
    row.save()

    renewed = push_on(outlook)

    assert renewed["id"] == first["id"]
    assert timezone.datetime.fromisoformat(renewed["expires_at"]) > timezone.now() + timedelta(
        days=6
    )
    row.refresh_from_db()
    row.state = Secret({**renewed, "expires_at": soon})
    row.save()
    graph_push.subscriptions.clear()  # Graph lost it (it does, at times)

    again = push_on(outlook)

    assert again["id"] != first["id"] and list(graph_push.subscriptions) == [again["id"]]


def test_a_webhook_graph_cannot_validate_leaves_no_subscription(settings, graph_push, outlook):
    settings.CRM_SITE_URL = "http://127.0.0.1:9"  # nothing answers there

    with open_provider(outlook) as provider, pytest.raises(ServerUnavailable):
        keep_push(outlook.pk, provider)

    assert not PushSubscription.objects.exists() and not graph_push.subscriptions


# -- the watcher's side -----------------------------------------------------------------


def test_wake_wakes_only_the_threads_a_push_named(team, gmail, outlook, settings):
    watcher = MailboxWatcher(tick=1, ttl=30, poll=60)
    threads = {pk: MailboxThread(watcher, pk) for pk in (gmail.pk, outlook.pk)}
    watcher.threads = threads  # not started: only their wake-up events are looked at
    later = timezone.now() + timedelta(seconds=30)
    for pk in threads:
        MailboxWatch.objects.create(mailbox_id=pk, watcher=watcher.name, expires_at=later)
    MailboxWatch.objects.filter(mailbox=gmail).update(changed_at=timezone.now())

    watcher.wake_changed()

    assert threads[gmail.pk].nudged.is_set() and not threads[outlook.pk].nudged.is_set()
    assert not MailboxWatch.objects.filter(changed_at__isnull=False).exists()
    threads[outlook.pk].halt()
    assert threads[outlook.pk].nudged.is_set() and threads[outlook.pk].stopped()


@needs_a_shared_database
def test_a_watcher_process_syncs_pushed_mailboxes_within_seconds(
    settings, gmail_push, graph_push, team, owner, tmp_path
):
    from tests.mailboxes.helpers import connect_oauth

    gmail = connect_oauth(gmail_push, "gmail", team, owner)
    connect_oauth(graph_push, "graph", team, owner)
    track_proposal(team, gmail)
    env = {
        **child_environment("push-watcher"), **gmail_push.environment,
        **graph_push.environment, "CRM_SITE_URL": settings.CRM_SITE_URL,
        "CRM_GMAIL_PUSH_TOPIC": PUSH_TOPIC, "CRM_GMAIL_PUSH_SERVICE_ACCOUNT": PUSH_SERVICE_ACCOUNT,
        "CRM_GRAPH_PUSH": "true", "CRM_WATCH_TICK_SECONDS": "1",
        "CRM_WATCH_POLL_SECONDS": "600",  # no poll within the test: only a push can do it
    }  # fmt: skip
    log = (tmp_path / "watcher.log").open("w")
    watcher = start_command("watch_mailboxes", env=env, output=log)
    try:
        wait_until(lambda: PushSubscription.objects.count() == 2, 30, "both pushes set up")
        wait_until(
            lambda: Mailbox.objects.filter(last_synced_at__isnull=False).count() == 2,
            30, "both first syncs",
        )  # fmt: skip

        gmail_push.add_message(reply(11))
        graph_push.add_message(reply(12))

        for message_id in ("reply-11@example.com", "reply-12@example.com"):
            wait_until(lambda m=message_id: logged(m), ARRIVAL_TO_TIMELINE, f"{message_id}")
        wait_until(lambda: gmail_push.push_statuses and graph_push.notified, 5, "answers")
        assert gmail_push.push_statuses == [204] and [s for _, s in graph_push.notified] == [202]
    finally:
        kill_command(watcher)
        log.close()
    assert not left_behind("push-watcher")
