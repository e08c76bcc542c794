"""Large test folders, written straight into a test Dovecot user's Maildir.

APPEND costs a round trip and a file per message (hundreds a second); writing the files
ourselves and letting Dovecot index them on the next SELECT takes a second for 20,000.
"""

from __future__ import annotations

import os
import time

import imapclient


def message(n: int) -> bytes:
    """The n-th small message of a bulk-loaded folder (UID n + 1 in a fresh folder)."""
    return (
        f"From: Ada Lovelace <ada@example.com>\r\nTo: owner@example.com\r\n"
        f"Subject: bulk {n}\r\nMessage-ID: <bulk-{n}@example.com>\r\n"
        f"Date: Mon, 02 Mar 2026 10:00:00 +0000\r\n\r\nMessage number {n}.\r\n"
    ).encode()


def load_inbox(server, user: str, count: int) -> None:
    """Put `count` unread messages, received an hour ago, in the user's empty INBOX, in
    order: UIDs 1 to count."""
    home = server.dir / "mail" / user
    maildir = home / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True, exist_ok=True)
    received = int(time.time()) - 3600
    for n in range(count):
        raw = message(n)
        # Dovecot gives new files UIDs in the order of their names.
        path = maildir / "cur" / f"{received}.M{n:07d}P1.threadline,S={len(raw)}:2,"
        path.write_bytes(raw)
        os.utime(path, (received, received))
    if server.is_root:  # the mail processes run as `nobody`
        for directory, _dirs, files in os.walk(home):
            os.chown(directory, server.mail_uid, server.mail_gid)
            for name in files:
                os.chown(os.path.join(directory, name), server.mail_uid, server.mail_gid)
    client = imapclient.IMAPClient(server.host, server.port, ssl=False)
    client.login(user, server.users[user])
    found = client.select_folder("INBOX", readonly=True)[b"EXISTS"]
    client.logout()
    assert found == count, f"Dovecot indexed {found} of {count} messages"
