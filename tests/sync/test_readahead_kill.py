"""A sync killed while its read-ahead child runs leaves no process behind (issue 13).

Each round starts a real Python process that syncs a folder the way services._batches does
(the first batch read here, the rest by a readahead.ReadAhead child while this one "writes"),
SIGKILLs it at a seeded moment, and looks in /proc for any process left of it.
"""

import dataclasses
import json
import os
import random
import select
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.mailboxes.maildir import load_inbox
from tests.mailboxes.test_imap_provider import SINCE, config

ROOT = Path(__file__).resolve().parents[2]
MESSAGES, LIMIT = 1000, 20  # 50 batches: each round is killed long before the last
MARKER = "THREADLINE_KILLED_SYNC"

# The sync: imports no Django (the child must not need the database), prints the read-ahead
# child's pid once it is started, then writes each batch (sleeps) as the sync would.
SYNC = """
import json, sys, time
from datetime import date
from sync import readahead
from mailboxes.providers import get_provider
from mailboxes.providers.base import ProviderConfig

job = json.loads(sys.argv[1])
if not job["death_signal"]:
    readahead._kill_me_with_parent = lambda: None  # leaves the portable watch alone at work
cfg, since = ProviderConfig(**job["config"]), date.fromisoformat(job["since"])

def prepare(batch, provider, busy):
    time.sleep(job["prepare_seconds"])  # the child's CPU work on a batch

with get_provider("imap", cfg) as provider:
    first = provider.changes("INBOX", None, job["limit"], since)
    with readahead.ReadAhead(
        "imap", cfg, "INBOX", first.cursor, job["limit"], since, prepare=prepare
    ) as rest:
        print(rest.child.pid, flush=True)
        for batch, _ in rest:
            time.sleep(job["write_seconds"])
print("done", flush=True)
"""


def processes_marked(marker: str) -> list[int]:
    """Live processes (not zombies) whose environment carries `marker`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            marked = marker.encode() in (entry / "environ").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rpartition(")")[2].split()[0]
        except OSError:  # gone meanwhile
            continue
        if marked and state != "Z":  # a zombie holds no connection and no file
            found.append(int(entry.name))
    return found


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])


def read_line(stream, timeout: float) -> str:
    ready, _, _ = select.select([stream], [], [], timeout)
    assert ready, f"nothing printed in {timeout} s"
    return stream.readline().strip()


def seeded_rounds(seed: int = 13, count: int = 4):
    """(death_signal, write_seconds, prepare_seconds, kill_after) for each round: kills while
    the child connects (the first, at once), reads, prepares, or waits on the full queue,
    with and without Linux's death signal."""
    rng = random.Random(seed)
    for n in range(count):
        # The slower side takes >= 0.1 s a batch: 50 batches outlast every kill.
        write, prepare = rng.choice([(0.1, 0.0), (0.0, 0.1), (0.1, 0.1)])
        yield n % 2 == 0, write, prepare, 0.0 if n == 0 else rng.uniform(0.05, 1.5)


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux's /proc")
def test_a_killed_sync_leaves_no_read_ahead_child(dovecot, smtp_server, account):
    user, password, _ = account
    load_inbox(dovecot, user, MESSAGES)
    cfg = dataclasses.asdict(config(dovecot, smtp_server, user, password))
    leftovers = {}

    for death_signal, write, prepare, kill_after in seeded_rounds():
        token = uuid.uuid4().hex
        marker = f"{MARKER}={token}"  # as it appears in /proc/<pid>/environ
        job = {
            "config": cfg, "since": SINCE.isoformat(), "limit": LIMIT,
            "death_signal": death_signal, "write_seconds": write, "prepare_seconds": prepare,
        }  # fmt: skip
        sync = subprocess.Popen(
            [sys.executable, "-c", SYNC, json.dumps(job)],
            cwd=ROOT,
            env={**os.environ, MARKER: token},
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            child = int(read_line(sync.stdout, timeout=20))
            assert parent_of(child) == sync.pid
            assert child in processes_marked(marker)
            time.sleep(kill_after)
            assert sync.poll() is None, "the sync ended before it was killed"

            sync.send_signal(signal.SIGKILL)
            sync.wait()
            deadline = time.monotonic() + 5
            while processes_marked(marker) and time.monotonic() < deadline:
                time.sleep(0.05)
            left = processes_marked(marker)
        finally:
            for pid in processes_marked(marker):  # a failed round must not leak either
                os.kill(pid, signal.SIGKILL)
            sync.kill()
            sync.wait()
            sync.stdout.close()

        if left:
            leftovers[(death_signal, write, prepare, round(kill_after, 2))] = left
    assert leftovers == {}
