"""Mailbox watchers at scale: how soon a reply reaches the timeline, and what it costs.

  bash bench/run_watchers.sh [--mailboxes 1000] [--watchers 2] [--replies 2000] [--rate 20]
                             [--baseline-replies 120] [--security ssl]

One Dovecot holds --mailboxes mailboxes, all connected to one team that tracks a thread with
the contact Ada, on a throw-away PostgreSQL; the mailboxes log in over --security (ssl, as
every deployment does: plain is allowed on loopback only). --watchers `manage.py
watch_mailboxes` processes, DEBUG off as deployed, share them. Replies from Ada to the tracked
thread are then delivered at a steady --rate per second, each into a random mailbox, the way a
delivery agent does (a file into the Maildir's new/). Two latencies from each delivery, both
p50/p95/p99: to its engagement row (the row's created_at, same clock), and to Ada's open
contact page, which `runserver` serves to a logged-in user while the page's script
(static/js/timeline_live.js) is played: the timeline's version asked for 4 s after the last
answer, and the page read again when it changed. Then the watchers stop and the baseline runs:
a qcluster with the sync schedule at its shortest (every minute; the default is every 5) gets
--baseline-replies replies at the same rate (none: no baseline).

Printed: the latencies, the time the watchers took to hold every mailbox, each watcher's
peak RSS and CPU seconds, and the IMAP connections held.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from phases import ROOT, parse_args, run_phase, setup_django  # noqa: E402

TRACKED = "tracked@threadline.test"
SENDER = "ada@example.com"
# Dovecot runs one imap process per logged-in user, and its default limit is 100 of them:
# a watcher holds one IDLE connection per mailbox, and each sync opens another.
DOVECOT_LIMITS = """
default_process_limit = 3000
default_client_limit = 6000
service imap {
  process_limit = 3000
}
"""
ENV = {"CRM_ALLOW_PLAINTEXT_LOOPBACK": "true", "CRM_ALLOW_PRIVATE_MAIL_HOSTS": "true"}


def phase_setup(cfg: dict) -> dict:
    """One team with a thread tracked on the contact Ada, and every mailbox connected
    (checked for real)."""
    setup_django(**ENV, CRM_MAIL_CA_FILE=cfg["ca_file"])
    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from contacts.models import Contact, ContactEmail
    from engagements.services import Address, EmailData, log_email
    from mailboxes.services import connect_mailbox
    from teams.services import create_team

    owner = get_user_model().objects.create_user(username="bench", email="owner@example.com")
    team = create_team(name="Bench", owner=owner)
    ada = Contact.objects.create(team=team, first_name="Ada", owner=owner)
    ContactEmail.objects.create(team=team, contact=ada, email=SENDER, is_primary=True)
    log_email(
        team=team,
        email=EmailData(message_id=TRACKED, sender=Address("owner@example.com"),
                        to=(Address(SENDER),), subject="Tracked", sent_at=timezone.now()),
        direction="out", source="crm", contacts=[ada],
    )  # fmt: skip
    ids = []
    for user, password in cfg["users"]:
        mailbox = connect_mailbox(
            team=team, owner=owner, kind="imap", email_address=f"{user}@example.com",
            provider_settings={
                "imap_host": cfg["host"], "imap_port": cfg["port"],
                "imap_security": cfg["security"],
                "smtp_host": cfg["smtp_host"], "smtp_port": cfg["smtp_port"],
                "smtp_security": "plain", "username": user,
            },
            credentials={"password": password},
        )  # fmt: skip
        ids.append(mailbox.pk)
    return {"mailbox_ids": ids, "contact_id": ada.pk}


def phase_login(cfg: dict) -> dict:
    """A session cookie of the bench user, made as a login makes it."""
    setup_django(**ENV)
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.test import Client

    client = Client()
    client.force_login(get_user_model().objects.get(username="bench"))
    name = settings.SESSION_COOKIE_NAME
    return {"cookie": f"{name}={client.cookies[name].value}"}


def phase_state(cfg: dict) -> dict:
    """How many mailboxes are watched (by each watcher), and synced at least once."""
    setup_django(**ENV)
    from django.db import models
    from django.utils import timezone

    from mailboxes.models import Mailbox
    from sync.models import MailboxWatch

    watches = MailboxWatch.objects.filter(expires_at__gt=timezone.now())
    per_watcher = list(
        watches.values("watcher").annotate(n=models.Count("pk")).values_list("n", flat=True)
    )
    return {
        "watched": watches.count(),
        "shares": sorted(per_watcher),
        "synced": Mailbox.objects.filter(last_synced_at__isnull=False).count(),
    }


def phase_arrivals(cfg: dict) -> dict:
    """When each of these replies was logged (epoch seconds), for those logged so far."""
    setup_django(**ENV)
    from engagements.models import EmailEngagement

    rows = EmailEngagement.objects.filter(message_id__in=cfg["message_ids"])
    return {"logged": {m: at.timestamp() for m, at in rows.values_list("message_id", "created_at")}}


def phase_schedule(cfg: dict) -> dict:
    """The sync schedule every minute, and the mailboxes synced recently (as a polling
    deployment would have them)."""
    setup_django(**ENV, CRM_SYNC_INTERVAL_MINUTES="1")
    from sync.schedules import setup_schedules

    return {"schedules": setup_schedules()}


PHASES = {
    "setup": phase_setup,
    "login": phase_login,
    "state": phase_state,
    "arrivals": phase_arrivals,
    "schedule": phase_schedule,
}


def deliver(server, user: str, message_id: str) -> float:
    """A reply to the tracked thread, written into the user's Maildir as a delivery agent
    does (tmp/, then renamed into new/); the delivery time (epoch seconds)."""
    raw = (
        f"From: Ada <{SENDER}>\r\nTo: {user}@example.com\r\nSubject: Re: Tracked\r\n"
        f"Date: {format_datetime(datetime.now(UTC))}\r\nMessage-ID: <{message_id}>\r\n"
        f"In-Reply-To: <{TRACKED}>\r\nReferences: <{TRACKED}>\r\n\r\nYes.\r\n"
    ).encode()
    maildir = server.dir / "mail" / user / "Maildir"
    name = f"{time.time():.6f}.{message_id.split('@')[0]}.bench"
    tmp = maildir / "tmp" / name
    tmp.write_bytes(raw)
    if server.is_root:
        os.chown(tmp, server.mail_uid, server.mail_gid)
    delivered = time.time()
    tmp.rename(maildir / "new" / name)
    return delivered


def send_replies(server, users: list[str], count: int, rate: float, label: str) -> dict[str, float]:
    rng = random.Random(7)
    sent: dict[str, float] = {}
    start = time.monotonic()
    for n in range(count):
        time.sleep(max(0.0, start + n / rate - time.monotonic()))
        message_id = f"{label}-{n}@example.com"
        sent[message_id] = deliver(server, rng.choice(users), message_id)
    return sent


def wait_logged(sent: dict[str, float], timeout: float) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    logged: dict[str, float] = {}
    while time.monotonic() < deadline:
        logged = run_phase(__file__, "arrivals", {"message_ids": list(sent)})["logged"]
        if len(logged) == len(sent):
            break
        time.sleep(2)
    return logged


def latencies(sent: dict[str, float], arrived: dict[str, float]) -> dict:
    values = sorted(arrived[m] - sent[m] for m in sent if m in arrived)
    if not values:
        return {"logged": 0, "of": len(sent)}

    def pct(p: float) -> float:
        return round(values[min(len(values) - 1, int(p * len(values)))], 3)

    return {"logged": len(values), "of": len(sent), "p50": pct(0.5), "p95": pct(0.95),
            "p99": pct(0.99), "max": round(values[-1], 3),
            "mean": round(statistics.fmean(values), 3)}  # fmt: skip


def rows_shown(version: str) -> int:
    """The rows a timeline shows, from its version ("newest.shown.pending.failed",
    engagements.timeline.timeline_version)."""
    return int(version.split(".")[1])


class OpenPage(threading.Thread):
    """A contact page open in a browser: what its script (static/js/timeline_live.js) does,
    over HTTP with the user's session cookie. It asks for the timeline's version 4 s after
    its last answer, and reads the page again when the version changed."""

    POLL_SECONDS = 4.0

    def __init__(self, base: str, contact_id: int, cookie: str) -> None:
        super().__init__(name="open page", daemon=True)
        self.page_url = f"{base}/contacts/{contact_id}/"
        self.version_url = f"{base}/contacts/{contact_id}/timeline/version/"
        self.cookie = cookie
        self.stopping = threading.Event()
        self.version = self.opened = self._version()
        self.answers: list[tuple[float, str]] = []  # (epoch seconds, version)

    def _get(self, url: str) -> bytes:
        request = urllib.request.Request(url, headers={"Cookie": self.cookie})
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.read()

    def _version(self) -> str:
        return json.loads(self._get(self.version_url))["version"]

    def run(self) -> None:
        while not self.stopping.wait(self.POLL_SECONDS):
            version = self._version()
            self.answers.append((time.time(), version))
            if version != self.version:
                self._get(self.page_url)
                self.version = version

    def shown(self, logged: dict[str, float]) -> dict[str, float]:
        """When the page learnt of each of the `logged` replies and read itself again
        (epoch seconds): the first answer, after the reply's row exists, whose version differs
        from the one before. The version counts the rows shown: taking them in the order
        they were created, the k-th is in the first answer that counts k rows more than the
        page opened with."""
        counts = [(at, rows_shown(version)) for at, version in self.answers]
        before = rows_shown(self.opened)
        shown = {}
        for k, message_id in enumerate(sorted(logged, key=logged.__getitem__), start=1):
            at = next((at for at, rows in counts if rows >= before + k), None)
            if at is None:
                break
            shown[message_id] = at
        return shown


def process_figures(pid: int) -> dict:
    """A live process's peak RSS, CPU seconds so far and threads (from /proc)."""
    status = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return {
        "peak_rss_mb": round(int(status["VmHWM"].split()[0]) / 1024, 1),
        "cpu_s": round(cpu, 1),
        "threads": int(status["Threads"]),
    }


def connections_to(port: int) -> int:
    """Established TCP connections to this local port (IPv4)."""
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        parts = line.split()
        if parts[3] == "01" and int(parts[1].split(":")[1], 16) == port:
            count += 1
    return count


INOTIFY_INSTANCES = Path("/proc/sys/fs/inotify/max_user_instances")


@contextmanager
def inotify_instances(needed: int) -> Iterator[None]:
    """Dovecot hears of new mail in a Maildir through inotify, one instance per imap process,
    all under one user; past the kernel's limit (128 by default) it falls back to looking
    every 30 seconds, which a mail server tuned for thousands of IDLE users does not. Raised
    for the run when this runs as root, and put back after; otherwise said."""
    current = int(INOTIFY_INSTANCES.read_text())
    if current >= needed:
        yield
        return
    if os.geteuid() != 0:
        print(
            f"fs.inotify.max_user_instances is {current}: Dovecot will look for new mail only "
            f"every 30 s in all but {current} mailboxes (raise it to {needed})."
        )
        yield
        return
    INOTIFY_INSTANCES.write_text(str(needed))
    print(f"fs.inotify.max_user_instances raised from {current} to {needed} for this run")
    try:
        yield
    finally:
        INOTIFY_INSTANCES.write_text(str(current))


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, start_new_session=True,
        stdout=log.open("w"), stderr=subprocess.STDOUT,
    )  # fmt: skip


def wait_answering(url: str, timeout: float) -> None:
    """Wait until a web server answers at `url`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def stop(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mailboxes", type=int, default=1000)
    parser.add_argument("--watchers", type=int, default=2)
    parser.add_argument("--replies", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=20, help="replies delivered per second")
    parser.add_argument("--baseline-replies", type=int, default=120)
    parser.add_argument("--security", choices=("ssl", "plain"), default="ssl",
                        help="how the mailboxes log in to IMAP")  # fmt: skip
    args = parse_args(parser, PHASES)
    if args is None:
        return
    sys.path.insert(0, str(ROOT))
    from tests.servers.dovecot import DovecotServer, free_port
    from tests.servers.smtp import SmtpServer

    # aiosmtpd warns of a deprecated attribute at every login: a thousand lines.
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    logs = Path(os.environ.get("BENCH_LOGS", "/tmp/threadline-bench-watchers"))
    logs.mkdir(parents=True, exist_ok=True)
    with (
        inotify_instances(args.mailboxes * 2 + 100),
        DovecotServer(users=args.mailboxes, extra_config=DOVECOT_LIMITS) as server,
        SmtpServer(check_login=lambda u, p: server.users.get(u) == p) as smtp,
    ):
        users = [server.add_user() for _ in range(args.mailboxes)]
        imap_port = server.tls_port if args.security == "ssl" else server.port
        ca_file = str(server.dir / "tls" / "cert.pem")
        env = {**os.environ, **ENV, "CRM_MAIL_CA_FILE": ca_file}
        started = time.perf_counter()
        setup = run_phase(__file__, "setup", {
            "host": server.host, "port": imap_port, "security": args.security,
            "ca_file": ca_file, "smtp_host": smtp.host, "smtp_port": smtp.port, "users": users,
        })  # fmt: skip
        print(f"connected {args.mailboxes} mailboxes ({args.security}) in "
              f"{time.perf_counter() - started:.1f} s")  # fmt: skip

        began = time.perf_counter()
        # Watchers as deployed, DEBUG off: with it on, Django keeps each thread's last 9,000
        # queries (connection.queries), 47 MB more after four minutes of 1,000 threads.
        watcher_env = {**env, "DEBUG": "false"}
        watchers = [start(["watch_mailboxes"], watcher_env, logs / f"watcher-{n}.log")
                    for n in range(args.watchers)]  # fmt: skip
        while True:
            state = run_phase(__file__, "state", {})
            balanced = len(state["shares"]) == args.watchers and (
                state["shares"][-1] - state["shares"][0] <= 1
            )
            if balanced and state["watched"] == state["synced"] == args.mailboxes:
                break
            if time.perf_counter() - began > 600:
                raise SystemExit(f"watchers never held and synced everything: {state}")
            time.sleep(1)
        held_after = time.perf_counter() - began
        idle_connections = connections_to(imap_port)
        print(f"{args.watchers} watchers hold and synced all in {held_after:.1f} s; "
              f"{idle_connections} IMAP connections")  # fmt: skip

        base = f"http://127.0.0.1:{free_port()}"
        web = start(["runserver", "--noreload", base.removeprefix("http://")], env,
                    logs / "runserver.log")  # fmt: skip
        try:
            wait_answering(f"{base}/accounts/login/", 60)
            cookie = run_phase(__file__, "login", {})["cookie"]
            page = OpenPage(base, setup["contact_id"], cookie)
            page.start()
            names = [user for user, _password in users]
            sent = send_replies(server, names, args.replies, args.rate, "live")
            busy_connections = connections_to(imap_port)
            logged = wait_logged(sent, 120)
            live = latencies(sent, logged)
            per_watcher = [process_figures(w.pid) for w in watchers]
            # The page's last answers: the rows logged last, and one more round.
            time.sleep(2 * OpenPage.POLL_SECONDS + 1)
            page.stopping.set()
            page.join()
            opened = latencies(sent, page.shown(logged))
        finally:
            stop(web)
        for watcher in watchers:
            stop(watcher)

        baseline = None
        if args.baseline_replies:
            run_phase(__file__, "schedule", {})
            cluster = start(["qcluster"], {**env, "CRM_SYNC_INTERVAL_MINUTES": "1"},
                            logs / "qcluster.log")  # fmt: skip
            time.sleep(5)
            base_sent = send_replies(server, names, args.baseline_replies, min(args.rate, 2),
                                     "polled")  # fmt: skip
            base_logged = wait_logged(base_sent, 240)
            stop(cluster)
            baseline = latencies(base_sent, base_logged)

    print(f"\nWatchers: {args.mailboxes} mailboxes, {args.watchers} watcher processes, "
          f"{args.replies} replies at {args.rate:g}/s")  # fmt: skip
    print(f"  delivery -> timeline (s): {live}")
    print(f"  delivery -> open page (s): {opened}")
    print(f"  held and synced every mailbox after {held_after:.1f} s")
    print(f"  IMAP connections: {idle_connections} idle, {busy_connections} while delivering")
    for n, figures in enumerate(per_watcher):
        print(f"  watcher {n}: {figures}")
    if baseline is not None:
        print(f"Baseline: the schedule every minute (default 5), {args.baseline_replies} "
              "replies")  # fmt: skip
        print(f"  delivery -> timeline (s): {baseline}")
    print("targets: p50 <= 1 s, p95 <= 3 s, <= 256 MB per watcher for 1,000 mailboxes")


if __name__ == "__main__":
    main()
