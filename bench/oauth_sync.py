"""Gmail and Microsoft 365 initial sync benchmark, against the wire-format fakes.

Loads N messages (default 20,000; dates within 60 days, 1% replies to tracked Message-IDs)
into a fake Gmail and a fake Graph mailbox (tests/servers/), served from this process. For
each provider, in child processes (each peak RSS its own):

  sync   our initial sync (provider through the real client library, metadata rows, matcher)
         into the configured database; every HTTP request the fake receives is recorded
  floor  the same HTTP requests replayed with http.client on one connection, nothing parsed

and prints requests made, wall time, the ratio to the floor and peak RSS.

Run with `bash bench/run_oauth_sync.sh [--messages N]` (starts a temporary PostgreSQL).
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

from phases import ROOT, parse_args, run_phase, setup_django  # noqa: E402

sys.path.insert(0, str(ROOT))

from imap_sync import TRACKED, generate  # noqa: E402 - the same messages as the IMAP benchmark

KINDS = ("gmail", "graph")


def phase_setup(cfg: dict) -> dict:
    """A team with tracked threads and one connected mailbox per provider (not timed)."""
    setup_django(**cfg["env"])
    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from engagements.services import Address, EmailData, log_email
    from mailboxes.services import connect_mailbox
    from teams.services import create_team

    ids = {}
    for kind in KINDS:  # a team each: the same messages must be logged by both
        owner = get_user_model().objects.create_user(username=f"bench-{kind}",
                                                     email=f"owner-{kind}@example.com")  # fmt: skip
        team = create_team(name=f"Bench {kind}", owner=owner)
        for message_id in TRACKED:
            log_email(team=team, email=EmailData(message_id=message_id, sender=Address(
                owner.email), subject="Tracked", sent_at=timezone.now()),
                direction="out", source="crm")  # fmt: skip
        mailbox = connect_mailbox(
            team=team, owner=owner, kind=kind, email_address=cfg[kind]["email"],
            provider_settings={}, credentials=cfg[kind]["tokens"],
        )  # fmt: skip
        mailbox.folders.exclude(role="inbox").delete()  # the loaded mail is in the inbox
        ids[kind] = mailbox.pk
    return {"mailboxes": ids}


def phase_sync(cfg: dict) -> dict:
    setup_django(**cfg["env"])
    from engagements.models import EmailEngagement
    from mailboxes.models import MessageMeta
    from sync.services import sync_mailbox

    started = time.perf_counter()
    result = sync_mailbox(cfg["mailbox_id"])
    wall = time.perf_counter() - started
    return {
        "wall": wall, "new": result.new_messages, "error": result.error,
        "metadata_rows": MessageMeta.objects.filter(mailbox_id=cfg["mailbox_id"]).count(),
        "logged": EmailEngagement.objects.filter(
            source="sync", team__mailbox__pk=cfg["mailbox_id"]
        ).count(),
    }  # fmt: skip


def phase_floor(cfg: dict) -> dict:
    """Replay the recorded requests on one keep-alive connection, reading each body whole."""
    recorded = json.loads(Path(cfg["recorded"]).read_text())
    base = urlsplit(cfg["base"])
    connection = http.client.HTTPConnection(base.hostname, base.port, timeout=60)
    started = time.perf_counter()
    received = 0
    for method, target, headers, body in recorded:
        keep = {k: v for k, v in headers.items() if k.lower() in
                {"authorization", "content-type", "prefer"}}  # fmt: skip
        connection.request(method, target, body=body.encode("latin-1") or None, headers=keep)
        received += len(connection.getresponse().read())
    wall = time.perf_counter() - started
    return {"wall": wall, "requests": len(recorded), "received_mb": received / 1e6}


PHASES = {"setup": phase_setup, "sync": phase_sync, "floor": phase_floor}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    args = parse_args(parser, PHASES)
    if args is None:
        return

    from tests.servers.fake_google import FakeGoogle
    from tests.servers.fake_microsoft import FakeMicrosoft

    with FakeGoogle() as google, FakeMicrosoft() as microsoft:
        rng = random.Random(1)
        now = datetime.now(UTC)
        started = time.perf_counter()
        # Delivered in date order, as the IMAP benchmark's maildir is (UIDs follow dates).
        for raw, when in sorted((generate(n, rng, now) for n in range(args.messages)),
                                key=lambda item: item[1]):  # fmt: skip
            google.add_message(raw, when=when.timestamp())
            microsoft.add_message(raw, when=when.timestamp())
        print(f"loaded {args.messages:,} messages into each fake in "
              f"{time.perf_counter() - started:.1f} s")  # fmt: skip
        env = {
            "GOOGLE_CLIENT_ID": google.client_id, "GOOGLE_CLIENT_SECRET": google.client_secret,
            "GOOGLE_TOKEN_URI": f"{google.base}/token", "GMAIL_API_ROOT": f"{google.base}/",
            "MICROSOFT_CLIENT_ID": microsoft.client_id,
            "MICROSOFT_CLIENT_SECRET": microsoft.client_secret,
            "MICROSOFT_LOGIN_URL": microsoft.base, "MICROSOFT_GRAPH_URL": microsoft.base,
        }  # fmt: skip
        fakes = {"gmail": google, "graph": microsoft}
        cfg: dict = {"env": env}
        for kind, fake in fakes.items():
            access, refresh = fake.issue_tokens()
            expires = datetime.fromtimestamp(time.time() + 3600, UTC).isoformat()
            tokens = {"access_token": access, "refresh_token": refresh, "expires_at": expires}
            cfg[kind] = {"email": fake.email, "tokens": tokens}
        mailboxes = run_phase(__file__, "setup", cfg)["mailboxes"]
        results = {}
        for kind, fake in fakes.items():
            fake.recorded = []
            synced = run_phase(__file__, "sync", {**cfg, "mailbox_id": mailboxes[kind]})
            recorded, fake.recorded = fake.recorded, None
            path = Path(f"/tmp/threadline-bench-{kind}-requests.json")
            path.write_text(json.dumps([(m, t, h, b.decode("latin-1")) for m, t, h, b in recorded]))
            floor = run_phase(__file__, "floor", {"recorded": str(path), "base": fake.base})
            path.unlink()
            results[kind] = (synced, floor)
    report(args.messages, results)


def report(count: int, results: dict) -> None:
    print(f"\nOAuth providers: initial sync of {count:,} messages (fakes on loopback)")
    print(f"{'provider':10} {'requests':>9} {'floor':>9} {'our sync':>9} {'ratio':>7} "
          f"{'sync RSS':>9}  notes")  # fmt: skip
    for kind, (synced, floor) in results.items():
        notes = {k: synced[k] for k in ("new", "logged", "error")}
        ratio = synced["wall"] / floor["wall"]
        print(f"{kind:10} {floor['requests']:>9,} {floor['wall']:>8.2f}s {synced['wall']:>8.2f}s "
              f"{ratio:>6.2f}x {synced['peak_rss_mb']:>6.1f} MB  {notes}")  # fmt: skip


if __name__ == "__main__":
    main()
