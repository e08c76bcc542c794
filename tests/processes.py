"""Running project commands as real child processes against the test database (the kill
tests). They need a database they can share with the test: PostgreSQL (the SQLite test
database lives in this process's memory)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent

needs_a_shared_database = pytest.mark.skipif(
    not os.environ.get("DATABASE_URL", "").startswith("postgres"),
    reason="other processes cannot reach the in-memory SQLite test database; "
    "the PostgreSQL pass runs this",
)


def child_environment(mark: str) -> dict[str, str]:
    """The environment of a child command: the test database, local test servers allowed,
    and `mark`, by which `marked` finds the processes it started."""
    db = connection.settings_dict
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "PYTEST"))},
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "CRM_ALLOW_PLAINTEXT_LOOPBACK": "true",
        "CRM_ALLOW_PRIVATE_MAIL_HOSTS": "true",
        "THREADLINE_KILL_MARK": mark,
    }


def marked(mark: str) -> list[int]:
    """Live processes that carry `mark` in their environment: a command and its children."""
    needle = f"THREADLINE_KILL_MARK={mark}".encode()
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            if needle not in Path(f"/proc/{entry}/environ").read_bytes().split(b"\0"):
                continue
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            found.append(int(entry))
    return found


def start_command(*args: str, env: dict[str, str], output=subprocess.DEVNULL) -> subprocess.Popen:
    """`manage.py ARGS` in a session of its own, so that a signal to its process group
    reaches it and every process it starts; stdout and stderr go to `output`."""
    return subprocess.Popen(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, start_new_session=True,
        stdout=output, stderr=subprocess.STDOUT,
    )  # fmt: skip


def kill_command(process: subprocess.Popen) -> None:
    """SIGKILL a command started by start_command and all its processes (stopped or not)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGCONT)
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


def left_behind(mark: str, seconds: float = 10) -> list[int]:
    """The processes carrying `mark` still alive after up to `seconds` (the kernel reaps a
    killed process's children a moment later)."""
    deadline = time.monotonic() + seconds
    while marked(mark) and time.monotonic() < deadline:
        time.sleep(0.1)
    return marked(mark)


def wait_until(check, timeout: float, what: str):
    """`check()`'s first true result, asked every 0.1 s; the test fails after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.1)
    pytest.fail(f"not within {timeout} s: {what}")
