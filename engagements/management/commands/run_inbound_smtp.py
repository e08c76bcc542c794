"""Receive email sent to the teams' logging addresses (SPEC L4) and log it."""

from __future__ import annotations

import signal
import threading
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from engagements.inbound import inbound_server


class Command(BaseCommand):
    help = (
        "Run the SMTP service that receives email BCC'd or forwarded to the teams' logging "
        "addresses (log-…@CRM_MAIL_DOMAIN) and logs it. Put it behind your MX (or a relay "
        "that handles TLS and spam filtering) for the CRM_MAIL_DOMAIN."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--host", default="127.0.0.1", help="Address to listen on.")
        parser.add_argument("--port", type=int, default=2525, help="Port to listen on.")

    def handle(self, *args: Any, host: str, port: int, **options: Any) -> None:
        server = inbound_server(host, port)
        stopped = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stopped.set())
        server.start()
        self.stdout.write(
            f"Receiving logging email for @{settings.CRM_MAIL_DOMAIN} on {host}:{port} "
            f"(up to {settings.CRM_INBOUND_MAX_MB} MB). Ctrl-C stops."
        )
        try:
            stopped.wait()
        finally:
            server.stop()
            self.stdout.write("Stopped.")
