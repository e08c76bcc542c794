"""A message that cannot be logged is set aside with its reason; the rest of its batch is
logged, the sync goes on, and the message is tried again a bounded number of times.

The failure is a real one: a database trigger refuses to store an email whose text says
"poison", as a constraint or a storage failure would."""

import pytest
from django.db import connection
from django.urls import reverse
from django.utils.html import escape

from engagements.models import EmailEngagement
from mailboxes.models import QuarantinedMessage
from tests.mailboxes.helpers import SENT_ID, reply, sync

pytestmark = pytest.mark.django_db(transaction=True)

TABLE = EmailEngagement._meta.db_table


def _refuse_poison():
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "CREATE FUNCTION refuse_poison() RETURNS trigger AS $$ BEGIN "
                "IF NEW.body_text LIKE '%poison%' THEN RAISE EXCEPTION 'poisoned row refused'; "
                "END IF; RETURN NEW; END $$ LANGUAGE plpgsql"
            )
            cursor.execute(
                f"CREATE TRIGGER refuse_poison BEFORE INSERT ON {TABLE} "
                "FOR EACH ROW EXECUTE FUNCTION refuse_poison()"
            )
        else:
            cursor.execute(
                f"CREATE TRIGGER refuse_poison BEFORE INSERT ON {TABLE} "
                "WHEN NEW.body_text LIKE '%poison%' "
                "BEGIN SELECT RAISE(ABORT, 'poisoned row refused'); END"
            )


def _cure():
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"DROP TRIGGER IF EXISTS refuse_poison ON {TABLE}")
            cursor.execute("DROP FUNCTION IF EXISTS refuse_poison()")
        else:
            cursor.execute("DROP TRIGGER IF EXISTS refuse_poison")


@pytest.fixture
def poisoned(db):
    _refuse_poison()
    yield
    _cure()


def logged_replies():
    return set(
        EmailEngagement.objects.exclude(message_id=SENT_ID).values_list("message_id", flat=True)
    )


def test_one_unloggable_reply_is_quarantined_and_the_rest_of_its_batch_logged(
    poisoned, connected, tracked, account
):
    account[2].deliver(reply(1))
    account[2].deliver(reply(2, text="poison"))
    account[2].deliver(reply(3))

    result = sync(connected)

    assert result.error == "" and result.new_messages == 3
    assert logged_replies() == {"reply-1@example.com", "reply-3@example.com"}
    (held,) = QuarantinedMessage.objects.all()
    assert held.message_id == "reply-2@example.com"
    assert held.reason and held.attempts == 1  # what the database said, with its class
    assert connected.last_error == ""


def test_a_quarantined_reply_is_logged_once_the_cause_is_gone(
    poisoned, connected, tracked, account
):
    account[2].deliver(reply(2, text="poison"))
    sync(connected)
    _cure()

    sync(connected)

    assert logged_replies() == {"reply-2@example.com"}
    assert not QuarantinedMessage.objects.exists()


def test_a_reply_that_keeps_failing_is_tried_a_bounded_number_of_times(
    poisoned, connected, tracked, account
):
    account[2].deliver(reply(2, text="poison"))

    for _ in range(QuarantinedMessage.MAX_ATTEMPTS + 2):
        result = sync(connected)

    held = QuarantinedMessage.objects.get()
    assert held.attempts == QuarantinedMessage.MAX_ATTEMPTS and not held.is_retried
    assert result.error == ""


def test_the_mailbox_page_lists_quarantined_messages_with_their_reason(
    poisoned, connected, tracked, account, client_for, owner, outsider
):
    account[2].deliver(reply(2, text="poison"))
    sync(connected)

    page = client_for(owner).get(reverse("mailboxes:mailbox_detail", args=[connected.pk]))
    other = client_for(outsider).get(reverse("mailboxes:mailbox_detail", args=[connected.pk]))

    body = page.content.decode()
    assert "Messages that could not be logged" in body
    assert escape(QuarantinedMessage.objects.get().reason) in body
    assert "Re: Proposal" in body and "ada@example.com" in body
    assert other.status_code == 404


def test_a_reply_in_quarantine_whose_metadata_was_purged_leaves_it(
    poisoned, connected, tracked, account
):
    account[2].deliver(reply(2, text="poison"))
    sync(connected)
    connected.messages.all().delete()  # the R4 purge erased the headers meanwhile

    sync(connected)

    assert not QuarantinedMessage.objects.exists()
