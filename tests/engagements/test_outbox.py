"""The outbox reconciler (issue 13): a lost task or a dead worker never leaves an email unsent,
and nothing is sent twice. Against the real SMTP server and Dovecot, and the Gmail and Graph
fakes; tasks go to the ORM broker's queue and are run from it, as a worker does."""

import asyncio
import os
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from io import StringIO

import pytest
import time_machine
from django.core.management import call_command
from django.db import connection
from django.utils import timezone
from django.utils.module_loading import import_string
from django_q.conf import Conf
from django_q.models import OrmQ, Schedule

from engagements.models import EmailEngagement, OutgoingEmail
from engagements.sending import (
    Draft,
    SendError,
    lost_after,
    queue_email,
    reconcile_outbox,
    retry_email,
)
from engagements.services import Address
from engagements.tasks import reconcile_outbox_task
from mailboxes.models import Folder, Mailbox
from mailboxes.providers.imap import QUIT_WAIT
from mailboxes.services import open_provider, send_message
from tests.factories import ContactEmailFactory, ContactFactory
from tests.mailboxes.helpers import connect_imap
from tests.processes import (
    child_environment,
    kill_command,
    left_behind,
    needs_a_shared_database,
    start_command,
)
from tests.servers.dovecot import free_port
from tests.servers.smtp import SmtpServer

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def queued_for_real(monkeypatch):
    """Tasks go to the ORM broker's queue instead of running in the caller."""
    monkeypatch.setattr(Conf, "SYNC", False)


def send(mailbox, owner, team, subject="Hi", **fields):
    draft = Draft(to=[Address("ada@example.com", "Ada")], subject=subject, body="Hello", **fields)
    return queue_email(team=team, user=owner, mailbox=mailbox, draft=draft)


def lose_the_queue():
    """The broker loses every queued task (Redis, a worker killed holding them)."""
    OrmQ.objects.all().delete()


def run_the_queue() -> list[str]:
    """What a worker does with each queued task: run its function, by name, with its args."""
    results = []
    for queued in OrmQ.objects.order_by("pk"):
        task = queued.task
        queued.delete()
        results.append(import_string(task["func"])(*task["args"], **task["kwargs"]))
    return results


def die_while_sending(engagement):
    """What send_outgoing leaves when its worker dies after claiming the email: "sending",
    one attempt, taken over once no worker can still be on it."""
    now = timezone.now()
    EmailEngagement.objects.filter(pk=engagement.pk).update(status="sending")
    OutgoingEmail.objects.filter(engagement=engagement).update(
        attempts=1, last_attempt_at=now, reconcile_at=now + lost_after()
    )


def interrupted_send(mailbox, owner, team, **fields):
    """An email whose worker died while sending it, its task lost with it."""
    engagement = send(mailbox, owner, team, **fields)
    lose_the_queue()
    die_while_sending(engagement)
    return engagement


def send_for_real(mailbox, engagement):
    """The dead worker's send got through: the provider accepted it (and, for IMAP, the copy
    was filed in Sent) before the worker could record it."""
    outgoing = OutgoingEmail.objects.get(engagement=engagement)
    send_message(mailbox, bytes(outgoing.raw), sender=outgoing.sender,
                 recipients=outgoing.recipients, message_id=engagement.message_id)  # fmt: skip


def received(smtp_server, engagement) -> int:
    return sum(f"<{engagement.message_id}>".encode() in r.data for r in smtp_server.received)


def in_sent(user_mailbox, engagement, folder="Sent") -> int:
    user_mailbox.client.select_folder(folder, readonly=True)
    return len(user_mailbox.client.search(["HEADER", "Message-ID", engagement.message_id]))


def status(engagement) -> str:
    engagement.refresh_from_db()
    return engagement.status


def past_the_deadline(times=1):
    return time_machine.travel(timezone.now() + times * lost_after() + timedelta(seconds=1))


# -- a lost task --------------------------------------------------------------------------


def test_a_lost_task_is_not_taken_over_before_its_deadline(queued_for_real, connected, owner, team):
    engagement = send(connected, owner, team)
    lose_the_queue()

    with time_machine.travel(timezone.now() + lost_after() - timedelta(seconds=5)):
        result = reconcile_outbox()

    assert result.requeued == 0
    assert not OrmQ.objects.exists()
    assert status(engagement) == "queued"


def test_an_email_whose_task_was_lost_is_sent_once_after_its_deadline(
    queued_for_real, connected, owner, team, smtp_server, account
):
    engagement = send(connected, owner, team)
    lose_the_queue()

    with past_the_deadline():
        summary = reconcile_outbox_task()
        run_the_queue()

    assert summary.startswith("outbox: 1 queued again, 0 found in sent, 0 sent again")
    assert status(engagement) == "sent"
    assert OutgoingEmail.objects.get(engagement=engagement).reconcile_at is None
    assert received(smtp_server, engagement) == 1
    assert in_sent(account[2], engagement) == 1


def test_a_retried_email_whose_task_was_lost_is_sent_once(
    queued_for_real, connected, owner, team, smtp_server
):
    smtp_server.refuse.add("ada@example.com")
    try:
        engagement = send(connected, owner, team)
        run_the_queue()
    finally:
        smtp_server.refuse.discard("ada@example.com")
    assert status(engagement) == "failed"
    retry_email(engagement)
    lose_the_queue()

    with past_the_deadline():
        result = reconcile_outbox()
        run_the_queue()

    assert result.requeued == 1
    assert status(engagement) == "sent"
    assert received(smtp_server, engagement) == 1


def test_a_late_task_and_the_reconcilers_copy_of_it_send_once(
    queued_for_real, connected, owner, team, smtp_server
):
    engagement = send(connected, owner, team)  # its task is slow to start, not lost

    with past_the_deadline():
        reconcile_outbox()
        results = run_the_queue()

    assert results == ["sent", "sent"]  # the second found it sent
    assert status(engagement) == "sent"
    assert received(smtp_server, engagement) == 1


def test_an_email_queued_again_shows_waiting_to_send(
    queued_for_real, connected, owner, team, client_for
):
    contact = ContactFactory(team=team)
    ContactEmailFactory(contact=contact, email="ada@example.com")
    engagement = interrupted_send(connected, owner, team, contacts=[contact])

    with past_the_deadline():
        reconcile_outbox()
        page = client_for(owner).get(contact.get_absolute_url()).content.decode()

    assert status(engagement) == "queued"
    assert "Waiting to send" in page and "Sending…" not in page


# -- a worker that died while sending -----------------------------------------------------


def test_an_interrupted_send_found_in_sent_is_recorded_sent_without_sending_again(
    queued_for_real, connected, owner, team, smtp_server, account
):
    engagement = interrupted_send(connected, owner, team)
    send_for_real(connected, engagement)

    with past_the_deadline():
        result = reconcile_outbox()
        run_the_queue()

    assert result.found_sent == 1 and result.resent == 0
    assert not OrmQ.objects.exists()
    assert status(engagement) == "sent" and engagement.status_detail == ""
    outgoing = OutgoingEmail.objects.get(engagement=engagement)
    assert outgoing.filed_in_sent and bytes(outgoing.raw) == b"" and outgoing.reconcile_at is None
    assert received(smtp_server, engagement) == 1
    assert in_sent(account[2], engagement) == 1


def test_an_interrupted_send_the_server_accepted_is_recorded_sent_and_filed(
    queued_for_real, connected, owner, team, smtp_server, account
):
    engagement = interrupted_send(connected, owner, team)
    outgoing = OutgoingEmail.objects.get(engagement=engagement)

    def accepted():
        OutgoingEmail.objects.filter(pk=outgoing.pk).update(accepted_at=timezone.now())

    with open_provider(connected) as provider:  # the dead worker got the "250", filed nothing
        provider.send(bytes(outgoing.raw), outgoing.sender, outgoing.recipients, accepted)

    with past_the_deadline():
        result = reconcile_outbox()
        run_the_queue()

    assert (result.accepted, result.found_sent, result.resent) == (1, 0, 0)
    assert status(engagement) == "sent" and engagement.status_detail == ""
    assert received(smtp_server, engagement) == 1
    assert in_sent(account[2], engagement) == 1


def test_an_accepted_send_of_a_mailbox_disconnected_since_is_recorded_sent(
    queued_for_real, connected, owner, team, smtp_server, account
):
    engagement = interrupted_send(connected, owner, team)
    OutgoingEmail.objects.filter(engagement=engagement).update(accepted_at=timezone.now())
    Mailbox.objects.filter(pk=connected.pk).update(state=Mailbox.State.DISCONNECTED)

    with past_the_deadline():
        result = reconcile_outbox()

    assert result.accepted == 1
    assert status(engagement) == "sent"
    assert "disconnected" in engagement.status_detail
    assert received(smtp_server, engagement) == 0  # it went out before; nothing sent now
    assert in_sent(account[2], engagement) == 0
    assert bytes(OutgoingEmail.objects.get(engagement=engagement).raw) == b""


def test_an_interrupted_send_that_never_reached_the_server_is_sent_once(
    queued_for_real, connected, owner, team, smtp_server, account
):
    engagement = interrupted_send(connected, owner, team)

    with past_the_deadline():
        result = reconcile_outbox()
        run_the_queue()

    assert result.resent == 1
    assert status(engagement) == "sent"
    assert OutgoingEmail.objects.get(engagement=engagement).attempts == 2
    assert received(smtp_server, engagement) == 1
    assert in_sent(account[2], engagement) == 1


def test_an_interrupted_send_without_a_sent_folder_is_left_to_the_user(
    queued_for_real, connected, owner, team, smtp_server
):
    engagement = interrupted_send(connected, owner, team)
    connected.folders.filter(role=Folder.Role.SENT).delete()

    with past_the_deadline():
        result = reconcile_outbox()

    assert result.undecided == 1
    assert status(engagement) == "failed"
    assert "cannot tell whether it went out" in engagement.status_detail
    assert not OrmQ.objects.exists() and received(smtp_server, engagement) == 0
    retry_email(engagement)  # the user decides: the same message goes out
    assert run_the_queue() == ["sent"]


def test_a_mailbox_that_cannot_be_asked_is_asked_again_after_the_next_deadline(
    queued_for_real, connected, owner, team, smtp_server, dovecot
):
    engagement = interrupted_send(connected, owner, team)
    Mailbox.objects.filter(pk=connected.pk).update(
        settings={**connected.settings, "imap_port": free_port()}
    )

    with past_the_deadline():
        failed = reconcile_outbox()
        again_at_once = reconcile_outbox()
    Mailbox.objects.filter(pk=connected.pk).update(settings=connected.settings)
    with past_the_deadline(times=2):
        later = reconcile_outbox()
        run_the_queue()

    assert failed.unreachable == 1 and again_at_once.unreachable == 0
    assert later.resent == 1
    assert status(engagement) == "sent"
    assert received(smtp_server, engagement) == 1


# -- what the reconciler leaves alone, and how much it takes -------------------------------


def test_a_disconnected_mailboxs_email_waits_until_it_is_reconnected(
    queued_for_real, connected, owner, team, smtp_server, dovecot, account
):
    engagement = send(connected, owner, team)
    lose_the_queue()
    Mailbox.objects.filter(pk=connected.pk).update(state="disconnected", last_error="Bad password")

    with past_the_deadline():
        while_disconnected = reconcile_outbox()
        user, password, _ = account
        connect_imap(dovecot, smtp_server, user, password, team, owner)
        reconnected = reconcile_outbox()
        run_the_queue()

    assert while_disconnected.requeued == 0
    assert reconnected.requeued == 1
    assert status(engagement) == "sent"
    assert received(smtp_server, engagement) == 1


def test_a_run_takes_at_most_its_limit_longest_due_first(queued_for_real, connected, owner, team):
    now = timezone.now()
    emails = []
    for n in range(3):
        with time_machine.travel(now + timedelta(seconds=n)):
            emails.append(send(connected, owner, team, subject=f"email {n}"))
    lose_the_queue()

    with time_machine.travel(now + lost_after() + timedelta(seconds=10)):
        one = reconcile_outbox(limit=2)
        queued_first = [task.args()[0] for task in OrmQ.objects.order_by("pk")]
        rest = reconcile_outbox(limit=2)

    assert (one.requeued, one.more) == (2, True)
    assert queued_first == [emails[0].outgoing.pk, emails[1].outgoing.pk]
    assert (rest.requeued, rest.more) == (1, False)
    assert OrmQ.objects.order_by("-pk").first().args()[0] == emails[2].outgoing.pk


# -- several reconcilers --------------------------------------------------------------------


def _lost_found_and_interrupted(mailbox, owner, team):
    """One email of each kind: its task lost; sent and filed by a dead worker; claimed by a
    dead worker that never reached the server."""
    lost = send(mailbox, owner, team, subject="lost")
    found = send(mailbox, owner, team, subject="found")
    interrupted = send(mailbox, owner, team, subject="interrupted")
    lose_the_queue()
    die_while_sending(found)
    send_for_real(mailbox, found)
    die_while_sending(interrupted)
    return [lost, found, interrupted]


def test_two_reconcilers_back_to_back_send_nothing_twice(
    queued_for_real, connected, owner, team, smtp_server
):
    emails = _lost_found_and_interrupted(connected, owner, team)

    with past_the_deadline():
        first = reconcile_outbox()
        second = reconcile_outbox()
        queued = OrmQ.objects.count()
        run_the_queue()
    with past_the_deadline(times=3):
        third = reconcile_outbox()

    assert (first.requeued, first.found_sent, first.resent) == (1, 1, 1)
    assert (second.requeued, second.found_sent, second.resent) == (0, 0, 0)
    assert queued == 2
    assert (third.requeued, third.found_sent, third.resent) == (0, 0, 0)
    assert [status(e) for e in emails] == ["sent", "sent", "sent"]
    assert [received(smtp_server, e) for e in emails] == [1, 1, 1]


@pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="the in-memory SQLite test database (shared cache) refuses a second writer instead "
    "of waiting; concurrency is checked on PostgreSQL",
)
def test_reconcilers_running_at_once_send_nothing_twice(
    queued_for_real, connected, owner, team, smtp_server
):
    emails = _lost_found_and_interrupted(connected, owner, team)
    emails += [send(connected, owner, team, subject=f"lost {n}") for n in range(5)]
    lose_the_queue()
    start = threading.Barrier(3)
    results, errors = [], []

    def run():
        try:
            start.wait()
            results.append(reconcile_outbox())
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)
        finally:
            connection.close()

    with past_the_deadline():
        threads = [threading.Thread(target=run) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        queued = OrmQ.objects.count()
        run_the_queue()

    assert errors == []
    assert sum(r.requeued for r in results) == 6
    assert sum(r.found_sent for r in results) == 1 and sum(r.resent for r in results) == 1
    assert queued == 7
    assert all(status(e) == "sent" for e in emails)
    assert [received(smtp_server, e) for e in emails] == [1] * len(emails)


# -- Gmail and Microsoft 365 ---------------------------------------------------------------


@pytest.fixture(params=["gmail", "outlook"])
def oauth_mailbox(request):
    """A Gmail or a Microsoft 365 mailbox on its fake, and the fake."""
    fake = request.getfixturevalue({"gmail": "google", "outlook": "microsoft"}[request.param])
    return request.getfixturevalue(request.param), fake


def test_an_interrupted_send_the_service_filed_is_recorded_sent_once(
    queued_for_real, oauth_mailbox, owner, team
):
    mailbox, fake = oauth_mailbox
    engagement = interrupted_send(mailbox, owner, team)
    send_for_real(mailbox, engagement)

    with past_the_deadline():
        result = reconcile_outbox()
        run_the_queue()

    assert result.found_sent == 1
    assert status(engagement) == "sent"
    assert len(fake.sent) == 1


def test_an_interrupted_send_the_service_never_got_is_sent_once(
    queued_for_real, oauth_mailbox, owner, team
):
    mailbox, fake = oauth_mailbox
    other = send(mailbox, owner, team, subject="another, sent")
    run_the_queue()  # something else is in the sent folder
    engagement = interrupted_send(mailbox, owner, team)

    with past_the_deadline():
        result = reconcile_outbox()
        run_the_queue()

    assert result.resent == 1
    assert status(engagement) == "sent" and status(other) == "sent"
    assert [f"<{engagement.message_id}>".encode() in m.raw for m in fake.sent] == [False, True]


# -- the schedule ---------------------------------------------------------------------------


def test_migrate_creates_the_reconciler_schedule():
    Schedule.objects.all().delete()

    call_command("migrate", verbosity=0)

    schedule = Schedule.objects.get(name="reconcile-outbox")
    assert (schedule.func, schedule.minutes) == ("engagements.tasks.reconcile_outbox_task", 5)


def test_the_command_takes_over_a_lost_task_like_the_schedule(
    queued_for_real, connected, owner, team, smtp_server
):
    engagement = send(connected, owner, team)
    lose_the_queue()
    out = StringIO()

    with past_the_deadline():
        call_command("reconcile_outbox", stdout=out)
        run_the_queue()

    assert out.getvalue().startswith("outbox: 1 queued again")
    assert received(smtp_server, engagement) == 1


def test_an_email_left_sending_is_not_retried_blindly(queued_for_real, connected, owner, team):
    engagement = send(connected, owner, team)
    EmailEngagement.objects.filter(pk=engagement.pk).update(status=EmailEngagement.Status.SENDING)
    engagement.refresh_from_db()

    with time_machine.travel(timezone.now() + timedelta(hours=1)), pytest.raises(SendError):
        retry_email(engagement)

    assert status(engagement) == "sending"  # the reconciler's: it looks in Sent first


# -- a real worker killed while it sends (PostgreSQL: the cluster shares the database) -----


@dataclass
class HoldingSmtp(SmtpServer):
    """The SMTP server, holding the connection when the client sends `hold_at` (DATA: the
    message is in, its "250" not yet given; QUIT: the client has the "250") until the test
    has killed the client. A message whose "250" was never given is not delivered: aiosmtpd
    cancels the handler when the connection drops."""

    hold_at: str = ""
    reached: threading.Event = field(default_factory=threading.Event)

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd hook name
        await self._hold("DATA")
        return await super().handle_DATA(server, session, envelope)

    async def handle_QUIT(self, server, session, envelope):  # noqa: N802 - aiosmtpd hook name
        await self._hold("QUIT")
        return "221 Bye"

    async def _hold(self, command: str) -> None:
        if self.hold_at == command:
            self.reached.set()
            await asyncio.sleep(120)


def test_a_server_that_accepts_then_hangs_at_quit_still_counts_as_sent(
    mail_settings, dovecot, account, team, owner
):
    user, password, own_mailbox = account
    mail_settings.CRM_MAIL_TIMEOUT = 60
    with HoldingSmtp(check_login=lambda u, p: dovecot.users.get(u) == p) as smtp:
        mailbox = connect_imap(dovecot, smtp, user, password, team, owner)
        smtp.hold_at = "QUIT"
        started = time.monotonic()
        engagement = send(mailbox, owner, team)  # sent here: tasks run inline
        took = time.monotonic() - started

        assert status(engagement) == "sent", engagement.status_detail
        assert received(smtp, engagement) == 1 and in_sent(own_mailbox, engagement) == 1
        assert smtp.reached.is_set() and took < QUIT_WAIT + 10  # not the 60 s timeout


@needs_a_shared_database
@pytest.mark.parametrize("killed_at", ["DATA", "QUIT"])
def test_a_worker_killed_while_sending_leaves_the_email_sent_once(
    killed_at, mail_settings, dovecot, account, team, owner, monkeypatch
):
    user, password, own_mailbox = account
    with HoldingSmtp(check_login=lambda u, p: dovecot.users.get(u) == p) as smtp:
        mailbox = connect_imap(dovecot, smtp, user, password, team, owner)
        Schedule.objects.all().delete()  # the cluster runs this send and nothing else
        monkeypatch.setattr(Conf, "SYNC", False)
        engagement = send(mailbox, owner, team)
        smtp.hold_at = killed_at
        mark = f"send-kill-{os.getpid()}-{killed_at}"
        cluster = start_command("qcluster", env=child_environment(mark))
        try:
            reached = smtp.reached.wait(60)
        finally:
            kill_command(cluster)
        assert reached, "the cluster's worker never reached the SMTP server"
        assert left_behind(mark) == [], "the killed cluster left a process behind"
        assert status(engagement) == "sending"
        lose_the_queue()  # the dead worker's task died with it
        smtp.hold_at = ""
        monkeypatch.setattr(Conf, "SYNC", True)  # what the reconciler queues runs here

        with past_the_deadline():
            result = reconcile_outbox()

        assert status(engagement) == "sent", engagement.status_detail
        assert received(smtp, engagement) == 1
        assert in_sent(own_mailbox, engagement) == 1
    if killed_at == "QUIT":  # after the server's "250": recorded as sent, its copy filed
        assert (result.accepted, result.resent) == (1, 0)
    else:  # before it: never sent, so sent now
        assert (result.accepted, result.resent) == (0, 1)
