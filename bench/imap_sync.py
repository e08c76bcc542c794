"""IMAP sync benchmark: our initial and incremental sync against raw fetches of the same data.

Loads N messages (default 100,000, dates within 60 days, 1% replies to tracked Message-IDs)
into two identical throw-away Dovecot INBOXes, then measures, each phase in its own process
(so each peak RSS is its own):

  (a)  floor: raw `UID FETCH` of the same items with the standard library's imaplib, no parsing
  (a') the same fetch through imapclient (its generic response parser)
  (b0) our initial sync for a team that tracks no thread (what every message costs)
  (b)  our initial sync (provider + metadata rows + matcher) into the configured database
  (c)  an incremental sync with nothing new
  (d)  an incremental sync after 100 new messages

The server's state matters as much as the client: the first fetch of these header fields
makes Dovecot read all N files and fill its cache, later ones read the cache. So (a) and (b)
are each measured cold (as the first fetch: the floor on one mailbox, our sync on its twin,
each time after removing Dovecot's cache file) and warm (again), and each is compared with
the floor in the same state; (a'), (b0), (c) and (d) run warm. This machine's speed varies
from run to run, so (a) and (b) run --rounds times each (alternating), and their medians
are compared.

Run with `bash bench/run_imap_sync.sh [--messages N] [--rounds R] [--profile DIR]` (a temporary
PostgreSQL; --profile writes cProfile stats of the warm (b0) and (b), read them with
`python -m pstats`).
"""

from __future__ import annotations

import argparse
import cProfile
import imaplib
import os
import random
import resource
import sys
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from importlib import import_module
from pathlib import Path

from phases import ROOT, parse_args, run_phase, setup_django  # noqa: E402

sys.path.insert(0, str(ROOT))

ITEMS = (
    "(UID FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[HEADER.FIELDS "
    "(FROM TO CC SUBJECT DATE MESSAGE-ID IN-REPLY-TO REFERENCES)])"
)
CHUNK = 5000
TRACKED = [f"tracked-{n}@threadline.test" for n in range(50)]
NAMES = ["Ada Lovelace", "Grace Hopper", "Renée Dupont", "Jürgen Weiß", "Tim Okafor", "Li Wei"]


def generate(n: int, rng: random.Random, now: datetime) -> tuple[bytes, datetime]:
    """One realistic message: headers like a mail server's, a short body."""
    when = now - timedelta(seconds=rng.randint(60, 59 * 86400))
    name = rng.choice(NAMES)
    sender = (
        f"{name} <{name.split()[0].lower()}{rng.randint(1, 300)}@example{rng.randint(1, 90)}.com>"
    )
    headers = [
        f"Received: from mx{rng.randint(1, 9)}.example.net by mail.example.com; "
        f"{format_datetime(when)}",
        f"From: {sender}",
        "To: Owner <owner@example.com>",
        f"Subject: Message {n} about order {rng.randint(1000, 9999)}",
        f"Date: {format_datetime(when)}",
        f"Message-ID: <bench-{n}@example.com>",
    ]
    if rng.random() < 0.01:
        parent = rng.choice(TRACKED)
        headers += [f"In-Reply-To: <{parent}>", f"References: <{parent}>"]
    elif rng.random() < 0.4 and n > 1:
        refs = " ".join(
            f"<bench-{rng.randint(0, n - 1)}@example.com>" for _ in range(rng.randint(1, 6))
        )
        headers += [f"In-Reply-To: <bench-{n - 1}@example.com>", f"References: {refs}"]
    headers += ["MIME-Version: 1.0", "Content-Type: text/plain; charset=utf-8"]
    body = "\r\n".join(f"Line {i} of message {n}." for i in range(rng.randint(3, 40)))
    return ("\r\n".join(headers) + "\r\n\r\n" + body + "\r\n").encode(), when


def load_maildir(server, user: str, count: int, seed: int = 1) -> None:
    """Write the messages as Maildir files (thousands a second), then let Dovecot index them."""
    maildir = server.dir / "mail" / user / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    now = datetime.now(UTC)
    for n in range(count):
        raw, when = generate(n, rng, now)
        path = maildir / "cur" / f"{int(when.timestamp())}.M{n}P1.bench,S={len(raw)}:2,S"
        path.write_bytes(raw)
        os.utime(path, (when.timestamp(), when.timestamp()))
    if server.is_root:
        for dirpath, _dirs, files in os.walk(server.dir / "mail" / user):
            os.chown(dirpath, server.mail_uid, server.mail_gid)
            for name in files:
                os.chown(os.path.join(dirpath, name), server.mail_uid, server.mail_gid)
    client = imaplib.IMAP4(server.host, server.port)
    client.login(user, server.users[user])
    client.select("INBOX", readonly=True)
    client.logout()


def machine_busy_seconds() -> float:
    """CPU seconds spent by every process on the machine so far (/proc/stat, Linux)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    ticks = [int(f) for f in fields]
    idle = ticks[3] + ticks[4]  # idle + iowait
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")


# -- phases (each runs in a child process) ---------------------------------------------------


def phase_raw_imaplib(cfg: dict) -> dict:
    client = imaplib.IMAP4(cfg["host"], cfg["port"])
    client.login(cfg["user"], cfg["password"])
    started = time.perf_counter()
    client.select("INBOX", readonly=True)
    _typ, data = client.uid("SEARCH", "ALL")
    uids = [int(u) for u in data[0].split()]
    payload = 0
    for i in range(0, len(uids), CHUNK):
        chunk = uids[i : i + CHUNK]
        _typ, rows = client.uid("FETCH", f"{chunk[0]}:{chunk[-1]}", ITEMS)
        payload += sum(len(r[1]) for r in rows if isinstance(r, tuple))
    wall = time.perf_counter() - started
    client.logout()
    return {"wall": wall, "messages": len(uids), "payload_mb": payload / 1e6}


def phase_imapclient(cfg: dict) -> dict:
    from imapclient import IMAPClient

    client = IMAPClient(cfg["host"], cfg["port"], ssl=False)
    client.login(cfg["user"], cfg["password"])
    started = time.perf_counter()
    client.select_folder("INBOX", readonly=True)
    uids = client.search(["ALL"])
    items = [
        "UID",
        "FLAGS",
        "INTERNALDATE",
        "RFC822.SIZE",
        "BODY.PEEK[HEADER.FIELDS " + ITEMS.split("FIELDS ", 1)[1][:-1],
    ]
    count = 0
    for i in range(0, len(uids), CHUNK):
        count += len(client.fetch(uids[i : i + CHUNK], items))  # lists: see imapclient 4.1 note
    wall = time.perf_counter() - started
    client.logout()
    return {"wall": wall, "messages": count}


def phase_setup(cfg: dict) -> dict:
    """Create a team with tracked threads and its connected mailbox, and another team that
    tracks nothing with the same mailbox connected (for (b0)), not timed."""
    setup_django(CRM_ALLOW_PLAINTEXT_LOOPBACK="true", CRM_ALLOW_PRIVATE_MAIL_HOSTS="true")
    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from engagements.services import Address, EmailData, log_email
    from mailboxes.services import connect_mailbox
    from teams.services import create_team

    def connect(team, owner):  # type: ignore[no-untyped-def]
        mailbox = connect_mailbox(
            team=team, owner=owner, kind="imap", email_address="owner@example.com",
            provider_settings={
                "imap_host": cfg["host"], "imap_port": cfg["port"], "imap_security": "plain",
                "smtp_host": cfg["smtp_host"], "smtp_port": cfg["smtp_port"],
                "smtp_security": "plain", "username": cfg["user"],
            },
            credentials={"password": cfg["password"]},
        )  # fmt: skip
        mailbox.folders.exclude(role="inbox").delete()  # the floor reads INBOX only
        return mailbox.pk

    users = get_user_model().objects
    owner = users.create_user(username="bench", email="owner@example.com")
    team = create_team(name="Bench", owner=owner)
    for message_id in TRACKED:
        log_email(
            team=team,
            email=EmailData(
                message_id=message_id,
                sender=Address("owner@example.com"),
                subject="Tracked",
                sent_at=timezone.now(),
            ),  # fmt: skip
            direction="out",
            source="crm",
        )
    untracked = users.create_user(username="bench-untracked", email="other@example.com")
    return {
        "mailbox_id": connect(team, owner),
        "untracked_mailbox_id": connect(create_team(name="Untracked", owner=untracked), untracked),
    }


def phase_sync(cfg: dict) -> dict:
    setup_django(CRM_ALLOW_PLAINTEXT_LOOPBACK="true", CRM_ALLOW_PRIVATE_MAIL_HOSTS="true")
    from django.db import connection, reset_queries

    from engagements.models import EmailEngagement
    from mailboxes.models import MessageMeta
    from mailboxes.providers import REGISTRY
    from sync.services import sync_mailbox

    # A worker imports the provider's module at its first sync, not at every one.
    import_module(REGISTRY["imap"].rpartition(".")[0])
    reset_queries()
    profiler = cProfile.Profile() if cfg.get("profile") else None
    if profiler:  # profile this process only: a forked read-ahead child would inherit it
        os.register_at_fork(after_in_child=lambda: sys.setprofile(None))
    busy_before = machine_busy_seconds()
    own_before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    with connection.execute_wrapper(_count_queries):
        if profiler:
            profiler.enable()
        result = sync_mailbox(cfg["mailbox_id"])
        if profiler:
            profiler.disable()
            profiler.dump_stats(cfg["profile"])
    wall = time.perf_counter() - started
    own = resource.getrusage(resource.RUSAGE_SELF)
    child = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "wall": wall,
        # CPU seconds: this process, its read-ahead child, and the whole machine (with the
        # database and mail servers): near 2 x wall on two cores means CPU-bound.
        "cpu": round(own.ru_utime + own.ru_stime - own_before.ru_utime - own_before.ru_stime, 2),
        "cpu_child": round(child.ru_utime + child.ru_stime, 2),
        "cpu_machine": round(machine_busy_seconds() - busy_before, 2),
        "new": result.new_messages,
        "error": result.error,
        "queries": _count_queries.count,
        "metadata_rows": MessageMeta.objects.count(),
        "logged": EmailEngagement.objects.filter(source="sync").count(),
    }


def _count_queries(execute, sql, params, many, context):  # type: ignore[no-untyped-def]
    _count_queries.count += 1
    return execute(sql, params, many, context)


_count_queries.count = 0


def phase_reset(cfg: dict) -> dict:
    """Back to before the first sync: forget the metadata (as `manage.py resync` does) and
    the replies the sync logged, then vacuum as autovacuum soon would, so the next sync does
    the same work as a first one, into tables without 100,000 dead rows."""
    setup_django(CRM_ALLOW_PLAINTEXT_LOOPBACK="true", CRM_ALLOW_PRIVATE_MAIL_HOSTS="true")
    from django.db import connection

    from engagements.models import EmailEngagement, TrackedMessageId
    from mailboxes.models import Mailbox, MessageMeta
    from mailboxes.services import reset_sync_state

    reset_sync_state(Mailbox.objects.get(pk=cfg["mailbox_id"]))
    logged = EmailEngagement.objects.filter(source="sync")
    TrackedMessageId.objects.filter(engagement__in=logged).delete()
    logged.delete()
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            for model in (MessageMeta, EmailEngagement, TrackedMessageId):
                cursor.execute(f"VACUUM ANALYZE {model._meta.db_table}")
    return {}


def phase_append(cfg: dict) -> dict:
    client = imaplib.IMAP4(cfg["host"], cfg["port"])
    client.login(cfg["user"], cfg["password"])
    rng = random.Random(99)
    now = datetime.now(UTC)
    for n in range(cfg["new"]):
        raw, _when = generate(10_000_000 + n, rng, now)
        client.append("INBOX", None, None, raw)
    client.logout()
    return {"appended": cfg["new"]}


PHASES = {
    "raw": phase_raw_imaplib,
    "imapclient": phase_imapclient,
    "setup": phase_setup,
    "sync": phase_sync,
    "append": phase_append,
    "reset": phase_reset,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3, help="runs of each (a) and (b)")
    parser.add_argument(
        "--profile", metavar="DIR", help="write cProfile stats of (b0) and (b) into DIR"
    )
    args = parse_args(parser, PHASES)
    if args is None:
        return

    from tests.servers.dovecot import DovecotServer
    from tests.servers.smtp import SmtpServer

    with DovecotServer() as server:
        user, password = server.add_user()  # the floors read this mailbox
        twin, twin_password = server.add_user()  # our sync reads this identical one
        with SmtpServer(check_login=lambda u, p: server.users.get(u) == p) as smtp:
            started = time.perf_counter()
            load_maildir(server, user, args.messages)
            load_maildir(server, twin, args.messages)
            os.sync()  # the kernel writes the new files out now, not during the first phases
            print(f"loaded 2 x {args.messages} messages in {time.perf_counter() - started:.1f} s")
            cfg = {"host": server.host, "port": server.port, "user": user, "password": password,
                   "smtp_host": smtp.host, "smtp_port": smtp.port}  # fmt: skip
            ours = {**cfg, "user": twin, "password": twin_password}
            ours.update(run_phase(__file__, "setup", ours))

            def cold(who: str) -> None:
                """Dovecot forgets the header fields it cached: the next fetch reads files."""
                (server.dir / "mail" / who / "Maildir" / "dovecot.index.cache").unlink(
                    missing_ok=True
                )

            runs: dict[str, list[dict]] = {"a cold": [], "b cold": [], "a": [], "b": []}
            for number in range(args.rounds):
                if number:  # the first round is the first fetch of each mailbox
                    cold(user)
                    run_phase(__file__, "reset", ours)
                    cold(twin)
                runs["a cold"].append(run_phase(__file__, "raw", cfg))
                runs["b cold"].append(run_phase(__file__, "sync", ours))
            profile = {}
            if args.profile:
                Path(args.profile).mkdir(parents=True, exist_ok=True)
                profile = {k: f"{args.profile}/{k}.pstats" for k in ("b0", "b")}
            for number in range(args.rounds):
                runs["a"].append(run_phase(__file__, "raw", cfg))
                run_phase(__file__, "reset", ours)
                last = number == args.rounds - 1
                runs["b"].append(
                    run_phase(__file__, "sync", {**ours, "profile": last and profile.get("b")})
                )
            results = {key: median_run(rows) for key, rows in runs.items()}
            results["a'"] = run_phase(__file__, "imapclient", cfg)
            run_phase(__file__, "reset", ours)
            untracked = {**ours, "mailbox_id": ours["untracked_mailbox_id"]}
            results["b0"] = run_phase(__file__, "sync", {**untracked, "profile": profile.get("b0")})
            run_phase(__file__, "reset", untracked)
            run_phase(__file__, "sync", ours)
            results["c"] = run_phase(__file__, "sync", ours)
            run_phase(__file__, "append", {**ours, "new": 100})
            results["d"] = run_phase(__file__, "sync", ours)
    report(args.messages, results)


def median_run(rows: list[dict]) -> dict:
    """The run with the median wall time, noting every run's."""
    ordered = sorted(rows, key=lambda row: row["wall"])
    return {**ordered[(len(ordered) - 1) // 2], "runs": [round(row["wall"], 2) for row in rows]}


def report(count: int, r: dict) -> None:
    labels = {
        "a cold": "(a)  floor, cold: imaplib raw UID FETCH, no parsing",
        "b cold": "(b)  our initial sync, cold",
        "a": "(a)  floor, warm",
        "a'": "(a') imapclient fetch (generic parser), warm",
        "b0": "(b0) initial sync, no thread tracked, warm",
        "b": "(b)  our initial sync, warm",
        "c": "(c)  incremental sync, nothing new",
        "d": "(d)  incremental sync, 100 new messages",
    }
    print(f"\nIMAP sync benchmark, {count} messages in INBOX (Dovecot on loopback)")
    print(f"{'phase':54} {'wall':>10} {'peak RSS':>10}  notes")
    for key, label in labels.items():
        row = r[key]
        wall = f"{row['wall'] * 1000:.1f} ms" if row["wall"] < 1 else f"{row['wall']:.2f} s"
        notes = {k: v for k, v in row.items() if k not in {"wall", "peak_rss_mb"}}
        print(f"{label:54} {wall:>10} {row['peak_rss_mb']:>7.1f} MB  {notes}")
    print("\ntarget: (b) <= 3x (a), stretch 2x; each against the floor in the same server state")
    print(f"cold: (b)/(a)  = {r['b cold']['wall'] / r['a cold']['wall']:.2f}x   (first fetch)")
    print(f"warm: (b)/(a)  = {r['b']['wall'] / r['a']['wall']:.2f}x")
    print(f"warm: (b0)/(a) = {r['b0']['wall'] / r['a']['wall']:.2f}x   (no thread tracked)")
    parsed_floor = r["a'"]["wall"]
    print(f"warm: (b)/(a') = {r['b']['wall'] / parsed_floor:.2f}x")
    rss = max(r["b"]["peak_rss_mb"], r["b cold"]["peak_rss_mb"])
    print(f"(c) = {r['c']['wall'] * 1000:.1f} ms (target < 50 ms); "
          f"(b) peak RSS {rss:.0f} MB (target < 200 MB)")  # fmt: skip


if __name__ == "__main__":
    main()
