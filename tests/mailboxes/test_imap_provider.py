"""The IMAP provider against a real Dovecot and a real SMTP server."""

import json
import random
import socket
import threading
import time
from datetime import UTC, timedelta
from itertools import pairwise

import pytest
from django.utils import timezone

from mailboxes.providers import get_provider
from mailboxes.providers.base import (
    AuthFailed,
    FolderInfo,
    ProviderConfig,
    ProviderError,
    ServerUnavailable,
    TlsFailed,
    WrongProtocol,
)
from mailboxes.providers.imap import (
    HEADER_FIELDS,
    MAX_COMMAND_BYTES,
    META_ITEMS_TEXT,
    RAW_ITEMS_TEXT,
    TAG_BYTES,
    UNANSWERED_FOR,
    find_sent_folder,
    uid_sets,
)
from tests.mailboxes.helpers import build_email
from tests.mailboxes.test_parsing import CORPUS, _email_package_fields

SINCE = timezone.now().date() - timedelta(days=60)


def check(cfg):
    with get_provider("imap", cfg) as provider:
        return provider.check()


def check_smtp(cfg):
    with get_provider("imap", cfg) as provider:
        provider.check_smtp()


def config(server, smtp, user, password, *, ca_file="", allow_plain=True, **settings):
    base = {
        "imap_host": server.host,
        "imap_port": server.port,
        "imap_security": "plain",
        "smtp_host": smtp.host,
        "smtp_port": smtp.port,
        "smtp_security": "plain",
        "username": user,
    }
    return ProviderConfig(
        email_address=f"{user}@example.com",
        settings={**base, **settings},
        credentials={"password": password},
        ca_file=ca_file,
        allow_plaintext_loopback=allow_plain,
        allow_private_hosts=True,  # the test servers listen on loopback
        timeout=5,
    )


def test_check_reads_capabilities_and_the_special_use_sent_folder(dovecot, smtp_server, account):
    user, password, _ = account

    with get_provider("imap", config(dovecot, smtp_server, user, password)) as provider:
        found = provider.check()

    assert {"CONDSTORE", "SPECIAL-USE"} <= set(found.server)
    assert found.sent_folder == "Sent"
    assert "INBOX" in {f.name for f in found.folders}


def test_check_finds_sent_items_by_name_without_special_use(dovecot_plain, smtp_server):
    user, password = dovecot_plain.add_user()

    with get_provider("imap", config(dovecot_plain, smtp_server, user, password)) as provider:
        found = provider.check()

    assert "SPECIAL-USE" not in found.server or not any(
        "\\Sent" in f.attributes for f in found.folders
    )
    assert found.sent_folder == "Sent Items"


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (["INBOX", "Posta inviata", "Bozze"], "Posta inviata"),
        (["INBOX", "INBOX/Gesendet"], "INBOX/Gesendet"),
        (["INBOX", "Envoyés"], "Envoyés"),
        (["INBOX", "Archive", "Sent Mail", "Sent"], "Sent Mail"),
        (["INBOX", "Drafts"], None),
    ],
)
def test_sent_folder_falls_back_to_names(names, expected):
    assert find_sent_folder(tuple(FolderInfo(n) for n in names)) == expected


def test_wrong_password_is_reported_in_plain_words(dovecot, smtp_server, account):
    user, _password, _ = account

    with pytest.raises(AuthFailed, match="refused the username or password"):
        check(config(dovecot, smtp_server, user, "wrong"))


def test_wrong_smtp_login_is_reported(dovecot, smtp_server, account):
    _user, password, _ = account
    unknown_to_smtp = config(dovecot, smtp_server, "nobody-here", password)

    with pytest.raises(AuthFailed, match="SMTP server refused"):
        check_smtp(unknown_to_smtp)


def test_unknown_host_is_named(dovecot, smtp_server, account):
    user, password, _ = account
    cfg = config(dovecot, smtp_server, user, password, imap_host="no-such-host.invalid",
                 imap_security="ssl")  # fmt: skip

    with pytest.raises(ServerUnavailable, match="no-such-host.invalid was not found"):
        check(cfg)


def test_closed_port_is_named(dovecot, smtp_server, account):
    user, password, _ = account
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    cfg = config(dovecot, smtp_server, user, password, imap_port=closed)

    with pytest.raises(ServerUnavailable, match="refused the connection"):
        check(cfg)


def test_untrusted_certificate_is_a_clear_tls_error(dovecot, smtp_server, account):
    user, password, _ = account
    cfg = config(dovecot, smtp_server, user, password, imap_port=dovecot.tls_port,
                 imap_security="ssl")  # fmt: skip

    with pytest.raises(TlsFailed, match="certificate"):
        check(cfg)


@pytest.mark.parametrize("security", ["ssl", "starttls"])
def test_tls_works_with_the_servers_ca(dovecot, smtp_server, account, security):
    user, password, _ = account
    port = dovecot.tls_port if security == "ssl" else dovecot.port
    cfg = config(dovecot, smtp_server, user, password, imap_port=port, imap_security=security,
                 ca_file=str(dovecot.dir / "tls/cert.pem"), imap_host="localhost")  # fmt: skip

    with get_provider("imap", cfg) as provider:
        assert provider.check().sent_folder == "Sent"


def test_plaintext_is_refused_unless_allowed_for_loopback(dovecot, smtp_server, account):
    user, password, _ = account
    cfg = config(dovecot, smtp_server, user, password, allow_plain=False)

    with pytest.raises(TlsFailed, match="Unencrypted"):
        check(cfg)


def test_pop3_server_is_recognised_by_its_greeting(dovecot, smtp_server, account):
    user, password, _ = account
    listener = socket.create_server(("127.0.0.1", 0))

    def pop3():
        for _ in range(2):
            connection, _ = listener.accept()
            connection.sendall(b"+OK POP3 server ready\r\n")
            connection.close()

    threading.Thread(target=pop3, daemon=True).start()
    cfg = config(dovecot, smtp_server, user, password, imap_port=listener.getsockname()[1])

    with pytest.raises(WrongProtocol, match="POP3 moves mail off the server"):
        check(cfg)
    listener.close()


def test_changes_come_in_batches_then_incrementally(dovecot, smtp_server, account):
    user, password, mailbox = account
    for n in range(5):
        mailbox.deliver(build_email(subject=f"m{n}", message_id=f"m{n}@example.com"))

    with get_provider("imap", config(dovecot, smtp_server, user, password)) as provider:
        first = provider.changes("INBOX", None, 2, SINCE)
        second = provider.changes("INBOX", first.cursor, 2, SINCE)
        third = provider.changes("INBOX", second.cursor, 2, SINCE)
        idle = provider.changes("INBOX", third.cursor, 2, SINCE)
        mailbox.deliver(build_email(subject="late", message_id="late@example.com"))
        mailbox.client.select_folder("INBOX")
        mailbox.client.add_flags([1], [b"\\Flagged"])
        later = provider.changes("INBOX", idle.cursor, 2, SINCE)

    assert [m.subject for m in first.messages] == ["m0", "m1"]
    assert (first.done, first.remaining) == (False, 3)
    assert [m.subject for m in second.messages + third.messages] == ["m2", "m3", "m4"]
    assert third.done
    assert (idle.messages, idle.done, idle.flag_updates) == ([], True, {})
    assert [m.message_id for m in later.messages] == ["late@example.com"]
    assert "\\Flagged" in later.flag_updates["1"]
    assert set(later.flag_updates) == {"1"}  # the new message came with its flags


def test_old_mail_is_outside_the_first_reading(dovecot, smtp_server, account):
    user, password, mailbox = account
    mailbox.client.append("INBOX", build_email(subject="old"), msg_time=None)
    mailbox.client.append(
        "INBOX",
        build_email(subject="ancient"),
        msg_time=__import__("datetime").datetime(2020, 1, 1, tzinfo=__import__("datetime").UTC),
    )

    with get_provider("imap", config(dovecot, smtp_server, user, password)) as provider:
        batch = provider.changes("INBOX", None, 10, SINCE)

    assert [m.subject for m in batch.messages] == ["old"]


def test_uidvalidity_change_resets_the_folder(dovecot, smtp_server, account):
    user, password, mailbox = account
    mailbox.deliver(build_email(subject="before"), folder="Sent")
    with get_provider("imap", config(dovecot, smtp_server, user, password)) as provider:
        first = provider.changes("Sent", None, 10, SINCE)
    mailbox.client.delete_folder("Sent")
    mailbox.client.create_folder("Sent")
    mailbox.deliver(build_email(subject="after"), folder="Sent")

    with get_provider("imap", config(dovecot, smtp_server, user, password)) as provider:
        again = provider.changes("Sent", first.cursor, 10, SINCE)

    assert again.reset
    assert [m.subject for m in again.messages] == ["after"]


def test_reading_never_changes_flags_or_uids(dovecot, smtp_server, account):
    user, password, mailbox = account
    mailbox.deliver(build_email(subject="unread"))
    mailbox.deliver(build_email(subject="read"), flags=[b"\\Seen"])
    before = mailbox.state()

    with get_provider("imap", config(dovecot, smtp_server, user, password)) as provider:
        batch = provider.changes("INBOX", None, 10, SINCE)
        ref = batch.messages[0].ref
        raw = provider.fetch_many("INBOX", [ref])[ref]

    assert b"Subject: unread" in raw
    assert mailbox.state() == before


@pytest.mark.skipif(not CORPUS.is_dir(), reason="../shared/corpus is not present beside the repo")
def test_fast_metadata_fetch_equals_imapclient_and_the_email_package_on_the_corpus(
    dovecot, smtp_server, account
):
    user, password, mailbox = account
    files = sorted(p for p in CORPUS.rglob("*") if p.is_file())
    mailbox.client.multiappend("INBOX", [p.read_bytes() for p in files])
    mailbox.client.select_folder("INBOX", readonly=True)
    uids = mailbox.client.search(["ALL"])
    items = [
        "UID",
        "FLAGS",
        "INTERNALDATE",
        "RFC822.SIZE",
        f"BODY.PEEK[HEADER.FIELDS ({HEADER_FIELDS})]",
    ]
    slow = {}
    for uid, data in mailbox.client.fetch(uids, items).items():
        header = next(v for k, v in data.items() if k.startswith(b"BODY[HEADER"))
        received = data[b"INTERNALDATE"]
        slow[uid] = _email_package_fields(bytes(header or b""))
        slow[uid].extra = (
            data[b"RFC822.SIZE"],
            tuple(sorted(f.decode() for f in data[b"FLAGS"] if f != b"\\Recent")),
            received.astimezone(UTC) if received.tzinfo is None else received,
        )

    with get_provider("imap", config(dovecot, smtp_server, user, password)) as provider:
        provider._select("INBOX")
        fast = provider._fetch_meta("INBOX", uids)

    assert len(fast) == len(uids) == len(files)
    for meta in fast:
        reference = slow[int(meta.ref)]
        assert (meta.message_id, meta.in_reply_to, meta.references, meta.from_address,
                meta.from_name, meta.to, meta.cc, meta.subject, meta.sent_at,
                list(meta.problems)) == (
            reference.message_id, reference.in_reply_to, reference.references,
            reference.from_address, reference.from_name, reference.to, reference.cc,
            reference.subject, reference.sent_at, reference.problems,
        ), meta.ref  # fmt: skip
        assert (meta.size, meta.flags, meta.received_at) == reference.extra, meta.ref


def test_idle_check_needs_no_select_and_still_sees_flag_changes(dovecot, smtp_server, account):
    user, password, mailbox = account
    mailbox.deliver(build_email(subject="one"))
    cfg = config(dovecot, smtp_server, user, password)
    with get_provider("imap", cfg) as provider:
        cursor = provider.changes("INBOX", None, 10, SINCE).cursor

    with get_provider("imap", cfg) as provider:
        idle = provider.changes("INBOX", cursor, 10, SINCE)
        selected = provider._selected
    mailbox.client.select_folder("INBOX")
    mailbox.client.add_flags([1], [b"\\Answered"])
    with get_provider("imap", cfg) as provider:
        flagged = provider.changes("INBOX", cursor, 10, SINCE)

    assert (idle.messages, idle.done, idle.cursor) == ([], True, cursor)
    assert selected is None
    assert "\\Answered" in flagged.flag_updates["1"]


def scripted_server(responses):
    """A one-connection IMAP server: greets, answers CAPABILITY, and answers the next
    command with `responses` (bytes with TAG where that command's tag goes)."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve():
        connection, _ = listener.accept()
        with connection, connection.makefile("rb") as commands:
            connection.sendall(b"* OK ready\r\n")
            for line in commands:
                tag, command = line.split()[:2]
                if command == b"CAPABILITY":
                    connection.sendall(b"* CAPABILITY IMAP4rev1\r\n%s OK done\r\n" % tag)
                else:
                    connection.sendall(responses.replace(b"TAG", tag))
                    return

    threading.Thread(target=serve, daemon=True).start()
    return listener


def test_bulk_fetch_reader_takes_literals_quoted_headers_and_interleaved_responses():
    import imaplib

    from mailboxes.providers.imap import _fetch_responses

    header = b"Subject: {5}\r\nFrom: a@example.com\r\n\r\n"  # literal syntax inside the data
    listener = scripted_server(
        b"* 1 FETCH (UID 7 FLAGS (\\Seen) BODY[HEADER.FIELDS (SUBJECT)] {%d}\r\n%s)\r\n"
        b"* 3 EXISTS\r\n"
        b'* 2 FETCH (FLAGS () BODY[HEADER.FIELDS (SUBJECT)] "" UID 8)\r\n'
        b"* 3 FETCH (BODY[HEADER.FIELDS (SUBJECT)] {2}\r\n\r\n UID 9 RFC822.SIZE 40)\r\n"
        b"TAG OK done\r\n" % (len(header), header)
    )
    with listener:
        imap = imaplib.IMAP4("127.0.0.1", listener.getsockname()[1])
        responses = _fetch_responses(imap, "7:9")
        imap.shutdown()

    assert [header for _items, header in responses] == [header, b"", b"\r\n"]
    items = [items for items, _header in responses]
    assert items[0].startswith(b"* 1 FETCH (UID 7") and b"{" not in items[0]
    assert b"UID 8" in items[1]
    assert items[2].endswith(b" UID 9 RFC822.SIZE 40)\r\n")


def test_bulk_fetch_reader_raises_a_refused_fetch():
    import imaplib

    from mailboxes.providers.imap import _fetch_responses

    listener = scripted_server(b"TAG NO [SERVERBUG] Internal error\r\n")
    with listener:
        imap = imaplib.IMAP4("127.0.0.1", listener.getsockname()[1])
        with pytest.raises(imaplib.IMAP4.error, match="SERVERBUG"):
            _fetch_responses(imap, "1:2")
        imap.shutdown()


def test_uid_sets_compact_ranges_and_split_where_the_line_would_be_too_long():
    dense = [*range(1, 501), 502, *range(510, 901)]

    assert uid_sets(reversed(dense), RAW_ITEMS_TEXT) == ["1:500,502,510:900"]
    assert uid_sets([], RAW_ITEMS_TEXT) == []
    assert len(uid_sets(range(1, 20_001, 3), RAW_ITEMS_TEXT)) == 5  # 6,667 UIDs


def random_uids(rng):
    """Dense runs, lone UIDs and repeats, up to the largest UID (2**32 - 1), shuffled."""
    uids = []
    for _ in range(rng.randint(0, 60)):
        start = rng.choice([rng.randint(1, 99), rng.randint(1, 10**6), rng.randint(1, 2**32 - 1)])
        length = rng.choice([1, 1, 2, rng.randint(1, 3000)])
        uids += [
            uid for uid in range(start, start + length, rng.choice([1, 1, 2, 3])) if uid < 2**32
        ]
    uids += rng.sample(uids, min(len(uids), rng.randint(0, 50)))
    rng.shuffle(uids)
    return uids


def expand(uid_set):
    runs = []
    for part in uid_set.split(","):
        first, _, last = part.partition(":")
        assert str(int(first)) == first and (not last or int(last) > int(first)), part
        runs.append((int(first), int(last or first)))
    return runs


@pytest.mark.parametrize("items", [META_ITEMS_TEXT, RAW_ITEMS_TEXT])
@pytest.mark.parametrize("seed", range(40))
def test_uid_sets_fit_the_line_cover_every_uid_once_and_compact_every_run(seed, items):
    rng = random.Random(seed)
    uids = random_uids(rng)
    tag = "T" * (TAG_BYTES - 1)  # the longest tag the bound allows for

    sets = uid_sets(uids, items)

    lines = [f"{tag} UID FETCH {uid_set} {items}\r\n" for uid_set in sets]
    assert all(len(line) <= MAX_COMMAND_BYTES for line in lines)
    runs = [run for uid_set in sets for run in expand(uid_set)]
    assert [uid for first, last in runs for uid in range(first, last + 1)] == sorted(set(uids))
    # Ascending, and no two runs that could be one (none split between two sets either).
    assert all(earlier[1] + 1 < later[0] for earlier, later in pairwise(runs))
    # Split only where the next run would not fit: not by count.
    room = MAX_COMMAND_BYTES - len(f"{tag} UID FETCH  {items}\r\n")
    for uid_set, following in pairwise(sets):
        assert len(uid_set) + len(",") + len(following.split(",")[0]) > room


def test_mail_listed_before_it_could_be_served_is_asked_for_again(dovecot, smtp_server, account):
    """A reading that found UID 2 listed but unanswered (a server announcing mail before it
    can serve it) left it in the cursor; the next readings ask for it until it answers, and
    a UID that never does is let go after UNANSWERED_FOR."""
    user, password, own = account
    for n in range(3):
        own.deliver(build_email(subject=f"m{n}", message_id=f"m{n}@example.com"))
    with get_provider("imap", config(dovecot, smtp_server, user, password)) as provider:
        first = provider.changes("INBOX", None, 10, SINCE)
    cursor = json.loads(first.cursor)
    assert [m.ref for m in first.messages] == ["1", "2", "3"] and cursor["unanswered"] == {}
    # As a reading that got no answer for UID 2 (and for 99, which never comes) left it.
    cursor["unanswered"] = {"2": time.time() - 60, "99": time.time() - 60}
    unchanged_since = json.dumps(cursor)
    with get_provider("imap", config(dovecot, smtp_server, user, password)) as provider:
        again = provider.changes("INBOX", unchanged_since, 10, SINCE)
        left = json.loads(again.cursor)["unanswered"]
        later = provider.changes("INBOX", again.cursor, 10, SINCE)
        old = UNANSWERED_FOR.total_seconds() + 60
        gone = json.loads(again.cursor)
        gone["unanswered"] = {"99": time.time() - old}
        given_up = provider.changes("INBOX", json.dumps(gone), 10, SINCE)

    # Nothing new on the server, yet the waiting UID is asked for (no STATUS shortcut).
    assert [m.subject for m in again.messages] == ["m1"] and list(left) == ["99"]
    assert later.messages == [] and list(json.loads(later.cursor)["unanswered"]) == ["99"]
    assert given_up.messages == [] and json.loads(given_up.cursor)["unanswered"] == {}


# -- waiting for a change (IDLE, for the watchers) -----------------------------------------


def test_idle_wakes_on_new_mail_and_times_out_without(dovecot, smtp_server, account):
    user, password, own = account
    with get_provider("imap", config(dovecot, smtp_server, user, password)) as provider:
        started = time.monotonic()
        quiet = provider.wait_for_change("INBOX", 1.5, lambda: False)
        waited = time.monotonic() - started

        threading.Timer(0.5, own.deliver, args=[build_email(subject="new")]).start()
        started = time.monotonic()
        woke = provider.wait_for_change("INBOX", 20, lambda: False)
        woke_after = time.monotonic() - started
        # The connection is still usable after IDLE ends: the new message is listed.
        batch = provider.changes("INBOX", None, 10, SINCE)

    assert quiet is False and 1.4 <= waited < 5
    assert woke is True and woke_after < 10
    assert [meta.subject for meta in batch.messages] == ["new"]


def test_the_sent_folder_mark_moves_only_when_mail_is_filed_there(dovecot, smtp_server, account):
    user, password, own = account
    with get_provider("imap", config(dovecot, smtp_server, user, password)) as provider:
        provider.wait_for_change("INBOX", 0, lambda: False)  # the inbox selected, as watched
        before = provider.folder_mark("Sent")
        own.deliver(build_email(subject="elsewhere"))  # the inbox: not the sent folder
        unmoved = provider.folder_mark("Sent")
        own.deliver(build_email(subject="sent from my phone"), folder="Sent")
        moved = provider.folder_mark("Sent")
        announced = provider.wait_for_change("INBOX", 0, lambda: False)  # still usable

    assert before == unmoved != moved
    assert announced is True  # the inbox's new mail, seen by NOOP


def test_idle_ends_when_asked_to_stop(dovecot, smtp_server, account):
    user, password, _own = account
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    with get_provider("imap", config(dovecot, smtp_server, user, password)) as provider:
        started = time.monotonic()
        changed = provider.wait_for_change("INBOX", 60, stop.is_set)

    assert changed is False and time.monotonic() - started < 5


def test_a_connection_dropped_during_idle_is_a_server_error(dovecot, smtp_server, account):
    user, password, _own = account
    with get_provider("imap", config(dovecot, smtp_server, user, password)) as provider:
        provider.wait_for_change("INBOX", 0.1, lambda: False)  # connected, IDLE supported
        provider.client.socket().shutdown(socket.SHUT_RDWR)  # the network drops it

        with pytest.raises(ServerUnavailable):
            provider.wait_for_change("INBOX", 5, lambda: False)


def test_mail_that_arrived_between_two_waits_is_announced_by_the_next(
    dovecot, smtp_server, account
):
    user, password, own = account
    with get_provider("imap", config(dovecot, smtp_server, user, password)) as provider:
        assert provider.wait_for_change("INBOX", 0, lambda: False) is False  # selected
        own.deliver(build_email(subject="while the watcher synced"))
        started = time.monotonic()

        assert provider.wait_for_change("INBOX", 20, lambda: False) is True
        assert time.monotonic() - started < 2  # at once, not at the server's next check


def test_mail_that_arrived_while_the_caller_synced_is_announced_by_the_next_wait(
    dovecot, smtp_server, account
):
    user, password, own = account
    with get_provider("imap", config(dovecot, smtp_server, user, password)) as provider:
        provider.wait_for_change("INBOX", 0, lambda: False)
        threading.Timer(0.3, own.deliver, args=[build_email(subject="first")]).start()
        assert provider.wait_for_change("INBOX", 20, lambda: False) is True
        own.deliver(build_email(subject="during the sync"))  # the caller syncs meanwhile
        started = time.monotonic()

        assert provider.wait_for_change("INBOX", 20, lambda: False) is True
        assert time.monotonic() - started < 2


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (
            b"TAG NO [UNAVAILABLE] Temporary authentication failure. [host:2026]\r\n",
            ServerUnavailable,
        ),
        (b"TAG NO [SERVERBUG] Internal error occurred.\r\n", ServerUnavailable),
        (b"TAG NO [AUTHENTICATIONFAILED] Authentication failed.\r\n", AuthFailed),
        (b"TAG NO LOGIN failed.\r\n", AuthFailed),
    ],
)
def test_a_login_the_server_could_not_check_does_not_pass_for_a_wrong_password(answer, expected):
    listener = scripted_server(answer)
    cfg = ProviderConfig(
        email_address="a@example.com",
        settings={"imap_host": "127.0.0.1", "imap_port": listener.getsockname()[1],
                  "imap_security": "plain", "smtp_host": "127.0.0.1", "smtp_port": 1,
                  "smtp_security": "plain", "username": "a"},
        credentials={"password": "secret"},
        allow_plaintext_loopback=True, allow_private_hosts=True, timeout=5,
    )  # fmt: skip
    with listener, get_provider("imap", cfg) as provider, pytest.raises(ProviderError) as caught:
        provider.client  # noqa: B018 - connecting and logging in

    assert type(caught.value) is expected
    assert caught.value.disconnects is (expected is AuthFailed)  # a busy server never does
