"""Mailbox watchers at 10,000 mailboxes: a killed watcher's taken over, an added one shares.

  bash bench/run_watchers_sim.sh [--mailboxes 10000] [--watchers 10]

On a throw-away PostgreSQL, --mailboxes Microsoft 365 mailboxes are connected in one team to a
provider that answers at once: the Graph wire-format fake (tests/servers/fake_microsoft.py),
served from this process (it uses a few % of a core), one message in its inbox. The first
mailbox is connected through connect_mailbox; the others are copies of its row and folders
(credentials encrypted again through the model's field), all on the fake's one account with a
token it issued.

--watchers `manage.py watch_mailboxes` processes, DEBUG off as deployed, start together with
the settings of the environment (CRM_WATCH_TICK_SECONDS, CRM_WATCH_TTL_SECONDS,
CRM_WATCH_SYNCS), polling each mailbox only every CRM_WATCH_POLL_SECONDS=3600 unless set: what
is measured is holding and sharing (each mailbox's thread still runs one sync when it starts).
The MailboxWatch rows are read every 0.5 s on one connection of this process, and these are
timed:

  hold      start -> every mailbox held by a running watcher, each within 10% of its fair
            share (ceil(mailboxes / running watchers)); the first syncs are then given up
            to 8 minutes before the kill
  takeover  one watcher SIGKILLed -> every mailbox held again, none by it (target 60 s)
  add       a watcher started (back to --watchers) -> nobody over 10% above its fair share,
            every mailbox held (target 120 s)

At every read: never more rows than mailboxes, no watcher exited, and (while the others take
over, when nobody gives anything back) no more mailbox threads in the watchers than
mailboxes. At the end: every mailbox held, one thread per mailbox, each mailbox that changed
hands synced again by its new holder, the inbox message stored once per synced mailbox and
never twice, no mailbox failing; SIGTERM stops the watchers, which give every row back, and
no process is left behind. Printed: the times, the mailboxes unheld meanwhile, each watcher's
rounds, peak RSS, CPU seconds and threads, the syncs run (the fake's inbox delta requests),
the peak of PostgreSQL connections and the errors the watchers logged. Exits 1 if a target
or a check was missed, or a part stalled (then with what it saw).
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from phases import ROOT, parse_args, run_phase, setup_django  # noqa: E402
from watchers import process_figures  # noqa: E402

if TYPE_CHECKING:
    from tests.servers.fakehttp import FakeHTTPServer

TAKEOVER_TARGET = 60  # seconds
REBALANCE_TARGET = 120  # seconds
OVER_SHARE = 1.10  # nobody above its fair share by more than 10%
POLL = 0.5  # seconds between two reads of the MailboxWatch rows
HOLD_TIMEOUT = 300  # seconds for the watchers to hold and share every mailbox
# Seconds then given to the first syncs before the kill (not a target): 10,000 take about
# 7 minutes on 2 cores, and the takeover is clearer measured without them.
SYNC_WAIT = 480
END_WAIT = 120  # seconds at the end for one thread per mailbox, each mailbox synced once
STOP_TIMEOUT = 120  # seconds for SIGTERM to stop every watcher (then SIGKILL)
ENV = {"CRM_ALLOW_PLAINTEXT_LOOPBACK": "true", "CRM_ALLOW_PRIVATE_MAIL_HOSTS": "true"}
MESSAGE_ID = "sim-1@example.com"


def phase_setup(cfg: dict) -> dict:
    """One team; its first mailbox connected through connect_mailbox against the fake, the
    others copies of that row and its folders (as connect_mailbox would leave them)."""
    setup_django(**cfg["env"])
    from django.contrib.auth import get_user_model
    from django.db import transaction

    from mailboxes.models import Folder, Mailbox
    from mailboxes.services import connect_mailbox
    from teams.services import create_team

    owner = get_user_model().objects.create_user(username="bench", email="owner@example.com")
    team = create_team(name="Bench", owner=owner)
    connected = connect_mailbox(
        team=team, owner=owner, kind="graph", email_address=cfg["email"], provider_settings={},
        credentials=cfg["tokens"],
    )  # fmt: skip
    first = Mailbox.objects.get(pk=connected.pk)
    copied = [f.attname for f in Mailbox._meta.concrete_fields
              if not f.primary_key and f.attname != "email_address"]  # fmt: skip
    local, domain = first.email_address.split("@")
    folders = list(first.folders.all())
    with transaction.atomic():
        # bulk_create saves through the field: each copy's credentials encrypted on their own.
        same = {name: getattr(first, name) for name in copied}
        copies = Mailbox.objects.bulk_create(
            [Mailbox(email_address=f"{local}+{n}@{domain}", **same)
             for n in range(1, cfg["mailboxes"])],
            batch_size=1000,
        )  # fmt: skip
        Folder.objects.bulk_create(
            [Folder(team=team, mailbox=mailbox, name=f.name, role=f.role)
             for mailbox in copies for f in folders],
            batch_size=2000,
        )  # fmt: skip
    return {
        "mailboxes": Mailbox.objects.connected().count(),
        "folders": sorted(f"{f.name}:{f.role}" for f in folders),
    }


PHASES = {"setup": phase_setup}


@dataclass
class Snapshot:
    """One read of the MailboxWatch rows (and of the watcher processes), `at` seconds from
    the start of a part of the run."""

    at: float
    rows: int  # one per mailbox at most (its primary key): more would be a mailbox twice
    shares: dict[str, int]  # watcher -> mailboxes it holds (rows not expired)
    held: int  # mailboxes held by a running watcher
    of_gone: int  # rows, expired or not, of watchers that are not running
    gone_unexpired: int  # rows of watchers that are not running, not expired yet
    threads: int  # mailbox threads in the running watchers
    synced: int  # mailboxes synced at least once
    connections: int  # to PostgreSQL, this process's included


@dataclass
class Period:
    """What the reads of one part of the run saw."""

    name: str
    reads: int = 0
    most_rows: int = 0
    most_unheld: int = 0
    most_threads: int = 0
    most_connections: int = 0
    all_held_at: float | None = None
    problems: set[str] = field(default_factory=set)

    def see(self, snap: Snapshot, total: int) -> None:
        self.reads += 1
        self.most_rows = max(self.most_rows, snap.rows)
        self.most_unheld = max(self.most_unheld, total - snap.held)
        self.most_threads = max(self.most_threads, snap.threads)
        self.most_connections = max(self.most_connections, snap.connections)
        if self.all_held_at is None and snap.held == total:
            self.all_held_at = snap.at
        if snap.rows > total:
            self.problems.add(f"{snap.rows} watch rows for {total} mailboxes")


class Watchers:
    """The `watch_mailboxes` processes of this run, each in a session of its own, all with
    the run's mark in their environment (tests/processes.py finds what is left behind)."""

    def __init__(self, env: dict[str, str], logs: Path, syncs: int) -> None:
        self.env = env
        self.logs = logs
        self.syncs = syncs  # sync threads in each (CRM_WATCH_SYNCS)
        self.started: list[subprocess.Popen] = []
        self.killed: list[subprocess.Popen] = []

    def start(self) -> subprocess.Popen:
        from tests.processes import start_command

        log = (self.logs / f"watcher-{len(self.started)}.log").open("w")
        process = start_command("watch_mailboxes", env=self.env, output=log)
        self.started.append(process)
        return process

    @property
    def live(self) -> list[subprocess.Popen]:
        return [p for p in self.started if p not in self.killed]

    def kill(self, process: subprocess.Popen) -> None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        self.killed.append(process)

    def stop_all(self, timeout: float) -> tuple[float, int]:
        """SIGTERM to every running watcher at once: the seconds until all exited, and how
        many were SIGKILLed past `timeout`."""
        began = time.monotonic()
        killed = 0
        for process in self.live:
            os.killpg(process.pid, signal.SIGTERM)
        for process in self.live:
            try:
                process.wait(timeout=max(1.0, began + timeout - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                killed += 1
        return time.monotonic() - began, killed

    def kill_all(self) -> None:
        from tests.processes import kill_command

        for process in self.started:
            kill_command(process)

    def exited(self) -> list[str]:
        """Watchers that should be running and are not."""
        return [f"watcher pid {p.pid} exited ({p.returncode})"
                for p in self.live if p.poll() is not None]  # fmt: skip

    def mailbox_threads(self) -> int:
        """Threads of the running watchers but their main and sync threads (1 +
        CRM_WATCH_SYNCS each): one per mailbox watched (and, a moment after a mailbox was
        given back, its thread finishing)."""
        others = 1 + self.syncs
        return sum(max(0, f["threads"] - others) for f in map(figures, self.live) if f)

    def figures(self) -> dict[int, dict]:
        return {p.pid: figures(p) for p in self.live}


def figures(process: subprocess.Popen) -> dict:
    """A running watcher's peak RSS, CPU seconds and threads; {} once it has exited."""
    if process.poll() is not None:
        return {}
    try:
        return process_figures(process.pid)
    except (OSError, KeyError):  # exiting meanwhile: its /proc entry is going
        return {}


def pid_of(watcher: str) -> int:
    """The process id in a watcher's name (host:pid:random, sync/watcher.py)."""
    return int(watcher.rsplit(":", 2)[1])


class Observer:
    """Reads the watch rows, on one long-lived connection of this process."""

    def __init__(self, total: int, watchers: Watchers) -> None:
        self.total = total
        self.watchers = watchers
        self.started = time.monotonic()  # when the watchers were started
        self.all_synced_at: float | None = None  # seconds from then

    def snapshot(self, began: float) -> Snapshot:
        from django.db import connection
        from django.db.models import Count, Q
        from django.utils import timezone

        from sync.models import MailboxWatch

        now = timezone.now()
        live = {p.pid for p in self.watchers.live}
        per_watcher = (
            MailboxWatch.objects.values_list("watcher")
            .annotate(rows=Count("pk"), held=Count("pk", filter=Q(expires_at__gt=now)))
            .order_by()
        )
        rows, shares, held, of_gone, gone_unexpired = 0, {}, 0, 0, 0
        for watcher, watcher_rows, watcher_held in per_watcher:
            rows += watcher_rows
            if watcher_held:
                shares[watcher] = watcher_held
            if pid_of(watcher) in live:
                held += watcher_held
            else:
                of_gone += watcher_rows
                gone_unexpired += watcher_held
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            )
            (connections,) = cursor.fetchone()
        synced = self.synced()
        if synced == self.total and self.all_synced_at is None:
            self.all_synced_at = time.monotonic() - self.started
        return Snapshot(
            at=time.monotonic() - began, rows=rows, shares=shares, held=held, of_gone=of_gone,
            gone_unexpired=gone_unexpired, threads=self.watchers.mailbox_threads(),
            synced=synced, connections=connections,
        )  # fmt: skip

    def wait_for(
        self, period: Period, done: Callable[[Snapshot], bool], timeout: float
    ) -> tuple[float | None, Snapshot]:
        """Read every POLL seconds until `done(snapshot)`: the seconds it took (None past
        `timeout`, or when a watcher exited) and the last read."""
        began = time.monotonic()
        reads = 0
        while True:
            snap = self.snapshot(began)
            period.see(snap, self.total)
            exited = self.watchers.exited()
            period.problems.update(exited)
            if done(snap):
                return snap.at, snap
            if snap.at > timeout or exited:
                return None, snap
            reads += 1
            time.sleep(max(0.0, began + reads * POLL - time.monotonic()))

    def balanced(self, snap: Snapshot) -> bool:
        """Every mailbox held by a running watcher, each running watcher holding some and
        none more than 10% above its fair share."""
        live = {p.pid for p in self.watchers.live}
        fair = math.ceil(self.total / len(live))
        return (
            snap.held == self.total
            and snap.of_gone == 0
            and {pid_of(name) for name in snap.shares} == live
            and max(snap.shares.values()) <= fair * OVER_SHARE
        )

    def synced(self) -> int:
        from mailboxes.models import Mailbox

        return Mailbox.objects.filter(last_synced_at__isnull=False).count()

    def held_by(self, pid: int) -> list[int]:
        from sync.models import MailboxWatch

        rows = MailboxWatch.objects.values_list("mailbox_id", "watcher")
        return [mailbox_id for mailbox_id, name in rows if pid_of(name) == pid]

    def synced_since(self, ids: list[int], since: datetime) -> tuple[int, float | None]:
        """How many of these mailboxes were synced after `since`, and the seconds from then
        to the last of them (None unless all were)."""
        from django.db.models import Count, Max

        from mailboxes.models import Mailbox

        found = Mailbox.objects.filter(pk__in=ids, last_synced_at__gt=since).aggregate(
            n=Count("pk"), last=Max("last_synced_at")
        )
        if found["n"] < len(ids) or found["last"] is None:
            return found["n"], None
        return found["n"], (found["last"] - since).total_seconds()

    def failing(self) -> int:
        from mailboxes.models import Mailbox

        return Mailbox.objects.exclude(state=Mailbox.State.CONNECTED, last_error="").count()

    def max_connections(self) -> int:
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("SHOW max_connections")
            return int(cursor.fetchone()[0])

    def inbox_copies(self) -> Counter:
        """How many inboxes hold the fake's one message 0, 1, 2... times, by whether their
        mailbox was synced: (synced, copies) -> inboxes."""
        from django.db.models import Count, Q

        from mailboxes.models import Folder

        inboxes = Folder.objects.filter(role=Folder.Role.INBOX).annotate(
            n=Count("messages", filter=Q(messages__message_id__contains=MESSAGE_ID))
        )
        rows = inboxes.values_list("mailbox__last_synced_at", "n")
        return Counter((synced_at is not None, n) for synced_at, n in rows)

    def leftover_rows(self) -> tuple[int, int]:
        from sync.models import MailboxWatch, Watcher

        return MailboxWatch.objects.count(), Watcher.objects.count()


class FakeLoad:
    """The fake's requests, and the CPU of this process (which serves the fake), since
    `mark()`."""

    def __init__(self, fake: FakeHTTPServer) -> None:
        self.fake = fake
        self.mark()

    def mark(self) -> None:
        with self.fake.lock:
            self.requests = len(self.fake.log)
        self.cpu = _own_cpu()
        self.wall = time.monotonic()

    def since(self) -> dict:
        with self.fake.lock:
            log = self.fake.log[self.requests :]
        wall = time.monotonic() - self.wall
        # A sync reads each folder's delta once (one page: the inbox holds one message).
        syncs = sum(1 for _method, path in log
                    if path.lower().endswith("/mailfolders/inbox/messages/delta"))  # fmt: skip
        return {"requests": len(log), "syncs": syncs, "per_s": round(len(log) / wall),
                "cpu_share": round((_own_cpu() - self.cpu) / wall, 2)}  # fmt: skip


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def errors_logged(logs: Path) -> dict[str, int]:
    """What went wrong in the watchers, by their logs."""
    found: Counter = Counter()
    for log in sorted(logs.glob("watcher-*.log")):
        text = log.read_text(errors="replace")
        found["tracebacks"] += text.count("Traceback (most recent call last)")
        found["too many clients"] += text.count("too many clients")
        found["sync failed"] += text.count("failed")
    return dict(found)


def rounds_logged(logs: Path) -> dict[int, int]:
    """Rounds each watcher reported ("watching N of share S"), by its number."""
    return {
        int(log.stem.split("-")[1]): log.read_text(errors="replace").count(": watching ")
        for log in logs.glob("watcher-*.log")
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mailboxes", type=int, default=10_000)
    parser.add_argument("--watchers", type=int, default=10)
    args = parse_args(parser, PHASES)
    if args is None:
        return
    sys.path.insert(0, str(ROOT))
    from tests.processes import left_behind
    from tests.servers.fake_microsoft import FakeMicrosoft

    total = args.mailboxes
    logs = Path(os.environ.get("BENCH_LOGS", "/tmp/threadline-bench-watchers-sim"))
    logs.mkdir(parents=True, exist_ok=True)
    for old in logs.glob("watcher-*.log"):
        old.unlink()
    mark = f"watchers-sim-{os.getpid()}"
    with FakeMicrosoft() as fake:
        # Watchers killed in the middle of a request reset their connections: expected here,
        # not worth a traceback each.
        fake._httpd.handle_error = lambda request, client_address: None
        fake.add_message(message())
        access, refresh = fake.issue_tokens()
        # Valid for the whole run: the mailboxes share one refresh token, and Microsoft rotates
        # it, so one mailbox refreshing would leave the others with a refused token.
        fake.access_tokens[access] = time.time() + 24 * 3600
        expires = datetime.fromtimestamp(time.time() + 24 * 3600, UTC).isoformat()
        env = {
            **ENV, "MICROSOFT_CLIENT_ID": fake.client_id,
            "MICROSOFT_CLIENT_SECRET": fake.client_secret, "MICROSOFT_LOGIN_URL": fake.base,
            "MICROSOFT_GRAPH_URL": fake.base,
            "CRM_WATCH_POLL_SECONDS": os.environ.get("CRM_WATCH_POLL_SECONDS", "3600"),
        }  # fmt: skip
        started = time.perf_counter()
        setup = run_phase(__file__, "setup", {
            "env": env, "email": fake.email, "mailboxes": total,
            "tokens": {"access_token": access, "refresh_token": refresh, "expires_at": expires},
        })  # fmt: skip
        print(f"connected {setup['mailboxes']:,} mailboxes in {time.perf_counter() - started:.1f}"
              f" s (folders {', '.join(setup['folders'])})")  # fmt: skip
        if setup["mailboxes"] != total:
            raise SystemExit(f"expected {total} connected mailboxes")

        setup_django(**env)
        from django.conf import settings

        config = (f"tick {settings.CRM_WATCH_TICK_SECONDS} s, TTL "
                  f"{settings.CRM_WATCH_TTL_SECONDS} s, poll {settings.CRM_WATCH_POLL_SECONDS} s,"
                  f" {settings.CRM_WATCH_SYNCS} syncs at once per watcher")  # fmt: skip
        # Watchers as deployed, DEBUG off (bench/watchers.py: with it on, Django keeps each
        # thread's last 9,000 queries).
        watch_env = {**os.environ, "DEBUG": "false", "THREADLINE_KILL_MARK": mark}
        watchers = Watchers(watch_env, logs, settings.CRM_WATCH_SYNCS)
        observer = Observer(total, watchers)
        max_connections = observer.max_connections()
        print(f"{config}; PostgreSQL max_connections {max_connections}")
        try:
            run = simulate(args, observer, watchers, FakeLoad(fake), settings)
        finally:
            if any(p.poll() is None for p in watchers.started):
                watchers.kill_all()
        behind = left_behind(mark)

    failures = report(args, run, config, max_connections, logs, behind)
    if failures:
        raise SystemExit(f"missed: {'; '.join(failures)}")


def simulate(args: argparse.Namespace, observer: Observer, watchers: Watchers, load: FakeLoad,
             settings: Any) -> dict:  # fmt: skip
    """Start, kill one, add one; every figure of the run. Stops early (with what it has)
    when a part stalls."""
    run: dict = {"periods": {}, "figures": {}}
    try:
        _simulate(args, observer, watchers, load, settings, run)
    finally:
        run["started"] = [(p.pid, p in watchers.killed) for p in watchers.started]
    return run


def _simulate(args: argparse.Namespace, observer: Observer, watchers: Watchers, load: FakeLoad,
              settings: Any, run: dict) -> None:  # fmt: skip
    total = args.mailboxes

    # -- hold: every watcher started together -------------------------------------------
    run["periods"]["hold"] = hold = Period("hold")
    observer.started = time.monotonic()
    for _ in range(args.watchers):
        watchers.start()
    run["held_after"], snap = observer.wait_for(hold, observer.balanced, HOLD_TIMEOUT)
    print(f"held and shared after {_secs(run['held_after'])} (all held after "
          f"{_secs(hold.all_held_at)}): {_shares(snap)}")  # fmt: skip
    if run["held_after"] is None:
        run["stalled"] = f"the watchers did not hold and share every mailbox in {HOLD_TIMEOUT} s"
        run["stalled_at"] = snap
        run["hold_load"] = load.since()
        run["figures"]["hold"] = watchers.figures()
        return
    observer.wait_for(hold, lambda snap: snap.synced == total, SYNC_WAIT)
    run["hold_load"] = load.since()
    run["figures"]["hold"] = watchers.figures()
    print(f"{observer.synced():,} of {total:,} synced once after "
          f"{time.monotonic() - observer.started:.1f} s; fake {run['hold_load']}")  # fmt: skip

    # -- takeover: one watcher SIGKILLed ------------------------------------------------
    run["periods"]["takeover"] = takeover = Period("takeover")
    snap = observer.snapshot(time.monotonic())
    victim = watchers.started[0]
    orphans = observer.held_by(victim.pid)
    run["orphans"] = len(orphans)
    load.mark()
    killed_at = datetime.now(UTC)
    watchers.kill(victim)
    expired: list[float] = []

    def taken_over(snap: Snapshot) -> bool:
        if not expired and snap.held + snap.gone_unexpired < total:
            expired.append(snap.at)  # the killed watcher's rows have begun to expire
        return snap.held == total

    run["takeover_after"], snap = observer.wait_for(takeover, taken_over, 300)
    run["expired_after"] = expired[0] if expired else None
    print(f"{run['orphans']:,} mailboxes of the killed watcher held again after "
          f"{_secs(run['takeover_after'])}: {_shares(snap)}")  # fmt: skip
    if run["takeover_after"] is None:
        run["stalled"] = "the killed watcher's mailboxes were never all held again"
        run["stalled_at"] = snap
        return
    run["settled_after"], snap = observer.wait_for(takeover, observer.balanced, 120)
    run["takeover_load"] = load.since()
    print(f"shared among {len(watchers.live)} after {_secs(run['settled_after'])}; "
          f"fake {run['takeover_load']}")  # fmt: skip

    # -- add: back to --watchers ----------------------------------------------------------
    run["periods"]["add"] = add = Period("add")
    load.mark()
    added_at = datetime.now(UTC)
    added = watchers.start()
    run["rebalance_after"], snap = observer.wait_for(add, observer.balanced, 300)
    run["add_load"] = load.since()
    print(f"rebalanced after {_secs(run['rebalance_after'])}: {_shares(snap)}; "
          f"fake {run['add_load']}")  # fmt: skip

    # -- the end: one thread per mailbox, each synced once ----------------------------------
    run["periods"]["end"] = end = Period("end")
    moved = observer.held_by(added.pid)

    def settled(snap: Snapshot) -> bool:
        # Nothing lost: each mailbox that changed hands synced again by its new holder.
        run["orphans_resynced"] = observer.synced_since(orphans, killed_at)
        run["moved_resynced"] = observer.synced_since(moved, added_at)
        return (
            snap.threads == snap.synced == total
            and run["orphans_resynced"][0] == len(orphans)
            and run["moved_resynced"][0] == len(moved)
        )

    run["settled"], run["final"] = observer.wait_for(end, settled, END_WAIT)
    run["moved"] = len(moved)
    run["figures"]["end"] = watchers.figures()
    run["inbox_copies"] = observer.inbox_copies()
    run["failing"] = observer.failing()
    run["stopped_after"], run["stop_killed"] = watchers.stop_all(timeout=STOP_TIMEOUT)
    run["leftover"] = observer.leftover_rows()
    run["all_synced_after"] = observer.all_synced_at


def report(args: argparse.Namespace, run: dict, config: str, max_connections: int, logs: Path,
           behind: list[int]) -> list[str]:  # fmt: skip
    """Print the figures; what was missed."""
    total = args.mailboxes
    periods: dict[str, Period] = run["periods"]
    print(f"\nWatchers simulation: {total:,} Microsoft 365 mailboxes (a fake answering at once), "
          f"{args.watchers} watchers; {config}")  # fmt: skip
    if "hold_load" in run:
        load, hold = run["hold_load"], periods["hold"]
        print(f"  hold:     all held after {_secs(hold.all_held_at)}, and shared within 10% "
              f"after {_secs(run['held_after'])} (at most {hold.most_threads:,} mailbox "
              f"threads); first syncs meanwhile {_syncs(load)}")  # fmt: skip
    if "takeover_load" in run:
        takeover = periods["takeover"]
        print(f"  takeover: {run['orphans']:,} mailboxes of the SIGKILLed watcher held again "
              f"after {_secs(run['takeover_after'])} (their rows began to expire after "
              f"{_secs(run['expired_after'])}; at most {takeover.most_unheld:,} unheld, at "
              f"most {takeover.most_threads:,} mailbox threads); shared within 10% among "
              f"{args.watchers - 1} after {_secs(run['settled_after'])}; syncs meanwhile "
              f"{_syncs(run['takeover_load'])}")  # fmt: skip
        if "orphans_resynced" in run:
            n, last = run["orphans_resynced"]
            print(f"            synced again by their new holders: {n:,} of {run['orphans']:,}, "
                  f"the last {_secs(last)} after the kill")  # fmt: skip
    if "add_load" in run:
        add = periods["add"]
        print(f"  add:      nobody over {OVER_SHARE - 1:.0%} above the fair share "
              f"{math.ceil(total / args.watchers):,} after {_secs(run['rebalance_after'])} "
              f"(at most {add.most_unheld:,} unheld meanwhile, at most "
              f"{add.most_threads:,} mailbox threads); syncs meanwhile "
              f"{_syncs(run['add_load'])}")  # fmt: skip
        if "moved_resynced" in run:
            n, last = run["moved_resynced"]
            print(f"            the added watcher's {run['moved']:,} mailboxes synced by it: "
                  f"{n:,}, the last {_secs(last)} after it started")  # fmt: skip
    final: Snapshot | None = run.get("final")
    if final is not None:
        print(f"  the end:  {_shares(final)}; {final.threads:,} mailbox threads, and every "
              f"mailbox that changed hands synced again, {_secs(run['settled'])} after the "
              f"rebalancing; every mailbox synced once "
              f"{_secs(run['all_synced_after'])} after the start; inboxes by (synced, copies "
              f"of the message) {dict(run['inbox_copies'])}; SIGTERM stopped the watchers in "
              f"{run['stopped_after']:.1f} s ({run['stop_killed']} SIGKILLed after "
              f"{STOP_TIMEOUT} s)")  # fmt: skip
    stalled: Snapshot | None = run.get("stalled_at")
    if stalled is not None:
        print(f"  STALLED:  {run['stalled']}; at the last read {_shares(stalled)}, "
              f"{total - stalled.held:,} not held by a running watcher, "
              f"{stalled.threads:,} mailbox threads, {stalled.synced:,} mailboxes synced; "
              f"the fake {_syncs(run.get('hold_load', {}))}")  # fmt: skip
    peak = max((p.most_connections for p in periods.values()), default=0)
    print(
        f"  PostgreSQL connections: at most {peak} seen (a read every {POLL} s) of "
        f"max_connections {max_connections}; the watchers' logs: {errors_logged(logs)}"
    )
    rounds = rounds_logged(logs)
    for n, (pid, killed) in enumerate(run.get("started", [])):
        after_hold = run["figures"].get("hold", {}).get(pid, "-")
        at_end = "SIGKILLed" if killed else run["figures"].get("end", {}).get(pid, "-")
        print(f"  watcher {n} (pid {pid}): {rounds.get(n, 0)} rounds; after hold "
              f"{after_hold}; at the end {at_end}")  # fmt: skip
    print(f"  logs: {logs}")

    checks: dict[str, bool] = {}
    for period in periods.values():
        name = f"{period.name}: at most one row per mailbox, no watcher exited"
        checks[name] = not period.problems
    if "takeover" in periods:
        # Nothing is given back while the others take over: more threads than mailboxes
        # would be mailboxes watched by two watchers at once.
        checks["takeover: no mailbox watched by two watchers (by their threads)"] = (
            periods["takeover"].most_threads <= total
        )
    if final is not None:
        copies = run["inbox_copies"]
        checks.update({
            "every mailbox held at the end": final.held == total and final.of_gone == 0,
            f"one thread per mailbox within {END_WAIT} s": final.threads == total,
            "the message never stored twice": max(n for _synced, n in copies) <= 1,
            "the message stored in every synced mailbox": not copies[True, 0],
            "every mailbox taken over synced again":
                run["orphans_resynced"][0] == run["orphans"],
            "every mailbox moved synced by its new holder":
                run["moved_resynced"][0] == run["moved"],
            "no mailbox failing or disconnected": run["failing"] == 0,
            "every watch row given back on SIGTERM": run["leftover"] == (0, 0),
        })  # fmt: skip
    checks["no process left behind"] = behind == []
    takeover_after, rebalance_after = run.get("takeover_after"), run.get("rebalance_after")
    checks[f"takeover <= {TAKEOVER_TARGET} s"] = (
        takeover_after is not None and takeover_after <= TAKEOVER_TARGET
    )
    checks[f"rebalance <= {REBALANCE_TARGET} s"] = (
        rebalance_after is not None and rebalance_after <= REBALANCE_TARGET
    )
    missed = [f"stalled: {run['stalled']}"] if "stalled" in run else []
    for period in periods.values():
        missed.extend(f"{period.name}: {problem}" for problem in sorted(period.problems))
    for name, ok in checks.items():
        print(f"  [{'ok' if ok else 'MISSED'}] {name}")
        if not ok:
            missed.append(name)
    return missed


def _syncs(load: dict) -> str:
    if not load:
        return "-"
    return (f"{load['syncs']:,} (the fake: {load['requests']:,} requests, {load['per_s']}/s, "
            f"its process {load['cpu_share']:.0%} of a core)")  # fmt: skip


def message() -> bytes:
    """The one message in the fake's inbox: every mailbox's first sync stores it."""
    date = datetime.now(UTC).strftime("%a, %d %b %Y %H:%M:%S +0000")
    return (
        f"From: Ada <ada@example.com>\r\nTo: grace.owner@contoso.example\r\n"
        f"Subject: Hello\r\nDate: {date}\r\nMessage-ID: <{MESSAGE_ID}>\r\n\r\nHello.\r\n"
    ).encode()


def _shares(snap: Snapshot) -> str:
    values = sorted(snap.shares.values())
    if not values:
        return "nobody holds anything"
    return f"{len(values)} watchers hold {values[0]:,}..{values[-1]:,}, {snap.held:,} in all"


def _secs(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f} s"


if __name__ == "__main__":
    main()
