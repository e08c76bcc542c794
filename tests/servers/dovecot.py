"""A real Dovecot IMAP server from a temporary config, for tests and benchmarks.

Runs as root (mail owned by `nobody`, the package's dovecot/dovenull service users) or as an
ordinary user (everything as that user). Users are added on the fly: Dovecot re-reads the
passwd-file, so each test can have a fresh, empty mailbox.
"""

from __future__ import annotations

import grp
import itertools
import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from pathlib import Path

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
USER_POOL = 400

SPECIAL_USE_FOLDERS = """
  mailbox Drafts {
    special_use = \\Drafts
    auto = subscribe
  }
  mailbox Sent {
    special_use = \\Sent
    auto = subscribe
  }
  mailbox Trash {
    special_use = \\Trash
    auto = subscribe
  }
  mailbox Junk {
    special_use = \\Junk
    auto = subscribe
  }
"""
# Exchange-style names and no RFC 6154 attributes: the client must guess the sent folder.
PLAIN_FOLDERS = """
  mailbox "Sent Items" {
    auto = subscribe
  }
  mailbox Drafts {
    auto = subscribe
  }
  mailbox "Deleted Items" {
    auto = subscribe
  }
"""

CONFIG = """
base_dir = {dir}/run
state_dir = {dir}/state
instance_name = threadline-test-{port}
log_path = {dir}/dovecot.log
info_log_path = {dir}/dovecot.log
protocols = imap
listen = 127.0.0.1
default_internal_user = {internal_user}
default_internal_group = {internal_group}
default_login_user = {login_user}
service anvil {{
  chroot = {anvil_chroot}
}}
service imap-login {{
  inet_listener imap {{
    port = {port}
  }}
  inet_listener imaps {{
    port = {tls_port}
    ssl = yes
  }}
  service_count = 0
  process_min_avail = 1
  chroot = {login_chroot}
}}
ssl = yes
ssl_cert = <{dir}/tls/cert.pem
ssl_key = <{dir}/tls/key.pem
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_cache_size = 0
auth_failure_delay = 0
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {dir}/passwd
}}
userdb {{
  driver = static
  args = uid={mail_uid} gid={mail_gid} home={dir}/mail/%u
}}
mail_max_userip_connections = 1000
mail_location = maildir:~/Maildir
mail_fsync = never
first_valid_uid = 1
mail_privileged_group =
namespace inbox {{
  inbox = yes
  separator = /
  prefix =
{folders}
}}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class DovecotServer:
    """`with DovecotServer(special_use=True) as server:` -> host, port, tls_port, add_user()."""

    host = "127.0.0.1"

    def __init__(
        self, *, special_use: bool = True, users: int = USER_POOL, extra_config: str = ""
    ) -> None:
        """`users` fresh mailboxes are made ready; `extra_config` is appended to the config
        (a benchmark's process limits, say)."""
        self.special_use = special_use
        self.extra_config = extra_config
        # Short path: Dovecot's UNIX sockets live in base_dir (107-byte limit).
        self.dir = Path(tempfile.mkdtemp(prefix="dc", dir="/tmp"))
        self.port, self.tls_port = free_port(), free_port()
        self.is_root = os.geteuid() == 0
        # Mail processes never run as uid 0; as root the mail belongs to `nobody`.
        account = pwd.getpwnam("nobody") if self.is_root else pwd.getpwuid(os.geteuid())
        self.mail_uid, self.mail_gid = account.pw_uid, account.pw_gid
        # Dovecot re-reads a changed passwd-file at most once a second, so users are created
        # up front: add_user() hands out the next fresh, empty mailbox at once.
        self.users = {f"user{n}": f"user{n}-secret" for n in range(1, users + 1)}
        self._next_user = itertools.count(1)
        self.process: subprocess.Popen[bytes] | None = None

    # -- users -------------------------------------------------------------------------
    def add_user(self) -> tuple[str, str]:
        """A user with an empty mailbox: (name, password)."""
        name = f"user{next(self._next_user)}"
        if name not in self.users:
            raise RuntimeError(f"more than {len(self.users)} users asked of one Dovecot server")
        return name, self.users[name]

    def set_password(self, name: str, password: str) -> None:
        """Change a user's password; Dovecot sees it after at most a second."""
        self.users[name] = password
        self._write_passwd()
        time.sleep(1.1)

    def _write_passwd(self) -> None:
        lines = [f"{name}:{{PLAIN}}{password}::::::\n" for name, password in self.users.items()]
        tmp = self.dir / "passwd.tmp"
        tmp.write_text("".join(lines))
        tmp.chmod(0o644)
        tmp.replace(self.dir / "passwd")

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> DovecotServer:
        for sub in ("run", "state", "tls", "mail"):
            (self.dir / sub).mkdir(exist_ok=True)
        if self.is_root:
            # auth (user dovecot) must read the passwd-file; mail processes (nobody) create
            # their homes under mail/.
            os.chmod(self.dir, 0o755)
            os.chmod(self.dir / "mail", 0o1777)
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
             "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
             "-keyout", str(self.dir / "tls/key.pem"), "-out", str(self.dir / "tls/cert.pem")],
            check=True, capture_output=True,
        )  # fmt: skip
        self._write_passwd()
        if self.is_root:
            users = {
                "internal_user": "dovecot",
                "internal_group": "dovecot",
                "login_user": "dovenull",
                "login_chroot": "login",
                "anvil_chroot": "empty",
            }
        else:
            me = pwd.getpwuid(os.geteuid()).pw_name
            users = {
                "internal_user": me,
                "internal_group": grp.getgrgid(os.getegid()).gr_name,
                "login_user": me,
                "login_chroot": "",
                "anvil_chroot": "",
            }
        config = (
            CONFIG.format(
                dir=self.dir,
                port=self.port,
                tls_port=self.tls_port,
                folders=SPECIAL_USE_FOLDERS if self.special_use else PLAIN_FOLDERS,
                mail_uid=self.mail_uid,
                mail_gid=self.mail_gid,
                **users,
            )
            + self.extra_config
        )
        (self.dir / "dovecot.conf").write_text(config)
        self.process = subprocess.Popen(
            [DOVECOT, "-F", "-c", str(self.dir / "dovecot.conf")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        deadline = time.monotonic() + 15
        while not self._greets():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"Dovecot did not start: {self.log_tail()}")
            time.sleep(0.02)
        return self

    def _greets(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=1) as sock:
                return sock.recv(100).startswith(b"* OK")
        except OSError:
            return False

    def stop(self) -> None:
        """Stop the server (it can be started again on the same ports and mail)."""
        if self.process and self.process.poll() is None:
            # The directory is throw-away: no need to wait for a graceful shutdown.
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.process = None

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> DovecotServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "".join((self.dir / "dovecot.log").read_text().splitlines(True)[-lines:])
        except OSError:
            return "(no log)"

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.dir / "tls/cert.pem"))
