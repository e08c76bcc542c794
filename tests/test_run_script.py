"""The README's run command: it serves the demo, and Ctrl-C stops every process it started."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(
    os.environ.get("DATABASE_URL", "").startswith("postgres"),
    reason="the run command always uses its own SQLite; the SQLite pass covers it",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _marked(mark: str) -> list[int]:
    """The running processes whose environment carries `mark`: all the run command started,
    whenever they started and whatever session they are in."""
    needle = f"THREADLINE_RUN_MARK={mark}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                environ = Path(f"/proc/{entry}/environ").read_bytes()
            except OSError:
                continue
            if needle in environ.split(b"\0") and _running(int(entry)):
                found.append(int(entry))
    return found


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait_until_served(url: str, process: subprocess.Popen, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert process.poll() is None, "the run command exited before serving"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (OSError, urllib.error.URLError):
            time.sleep(0.5)
    pytest.fail(f"nothing served {url} within {seconds} s")


def test_ctrl_c_stops_every_process_of_the_run_command_even_when_pressed_twice(tmp_path):
    port, smtp_port = _free_port(), _free_port()
    mark = uuid.uuid4().hex
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "PYTEST"))},
        "PORT": str(port),
        "INBOUND_SMTP_PORT": str(smtp_port),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'run.sqlite3'}",
        "MEDIA_ROOT": str(tmp_path / "media"),
        "CRM_CACHE_DIR": str(tmp_path / "cache"),
        "THREADLINE_RUN_MARK": mark,
    }
    log = (tmp_path / "run.log").open("w")
    # A session of its own, as a terminal runs a foreground job: SIGINT goes to its group.
    process = subprocess.Popen(
        ["bash", "scripts/run.sh"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    try:
        _wait_until_served(f"http://127.0.0.1:{port}/", process, seconds=180)
        # About when the cluster's workers start: the old script hung here 3 times in 4.
        time.sleep(1)
        assert len(_marked(mark)) >= 5, (tmp_path / "run.log").read_text()

        os.killpg(process.pid, signal.SIGINT)
        time.sleep(0.3)
        os.killpg(process.pid, signal.SIGINT)  # impatient: Ctrl-C again

        process.wait(timeout=20)
        deadline = time.monotonic() + 5
        while _marked(mark) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _marked(mark) == [], (tmp_path / "run.log").read_text()
        for freed in (port, smtp_port):  # nothing listens there any more
            with socket.socket() as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("127.0.0.1", freed))
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        for pid in _marked(mark):
            os.kill(pid, signal.SIGKILL)
