"""Running project commands as real child processes against the test database (the kill
tests). They need a database they can share with the test: PostgreSQL (the SQLite test
database lives in this process's memory)."""

from __future__ import annotations

import os
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
