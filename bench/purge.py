"""Retention purge benchmark: erase 1,000,000 expired metadata rows and 100,000 cached bodies.

Loads (with SQL, in seconds) N expired metadata rows (default 1,000,000; stored 70 days ago),
M cached bodies of 2 KB (default 100,000; fetched 10 days ago), and 10% of N rows that no rule
erases yet (stored yesterday, bodies fetched today). Then, each in its own process so its peak
RSS is its own: `purge --dry-run` (counting), and the purge itself. Prints wall time, rows per
second and peak RSS, and checks that exactly the expired rows went.

Run with `bash bench/run_purge.sh [--metadata N] [--bodies M]` (starts a temporary PostgreSQL).
"""

from __future__ import annotations

import argparse
import sys
import time

from phases import ROOT, parse_args, run_phase, setup_django  # noqa: E402

sys.path.insert(0, str(ROOT))


def phase_load(cfg: dict) -> dict:
    setup_django()
    from django.contrib.auth import get_user_model
    from django.db import connection

    from mailboxes.crypto import Secret
    from mailboxes.models import Folder, Mailbox, MessageBody, MessageMeta
    from teams.services import create_team

    owner = get_user_model().objects.create_user(username="bench", email="bench@example.com")
    team = create_team(name="Bench", owner=owner)
    mailbox = Mailbox.objects.create(
        team=team, owner=owner, kind="imap", email_address="bench@example.com",
        credentials=Secret({"password": "x"}),
    )  # fmt: skip
    folder = Folder.objects.create(team=team, mailbox=mailbox, name="INBOX", role="inbox")
    meta = MessageMeta._meta.db_table
    body = MessageBody._meta.db_table
    started = time.perf_counter()
    with connection.cursor() as cursor:
        batches = [
            (1, cfg["metadata"], "70 days"),
            (cfg["metadata"] + 1, cfg["metadata"] // 10, "1 day"),
        ]
        for first, count, age in batches:
            cursor.execute(
                f"""INSERT INTO {meta} (team_id, mailbox_id, folder_id, ref, message_id,
                    in_reply_to, "references", from_name, from_address, "to", cc, subject,
                    sent_at, received_at, size, flags, problems, thread_hint, created_at)
                SELECT %s, %s, %s, g::text, 'bench-' || g || '@example.com', '', '',
                    'Ada Lovelace', 'ada@example.com',
                    '[{{"name": "Owner", "email": "owner@example.com"}}]', '[]',
                    'Message ' || g, now() - %s::interval, now() - %s::interval, 4096,
                    '\\Seen', '', '', now() - %s::interval
                FROM generate_series(%s, %s) AS g""",
                [team.pk, mailbox.pk, folder.pk, age, age, age, first, first + count - 1],
            )
        raw = b"Subject: Message\r\n\r\n" + b"x" * 2000
        cursor.execute(f"SELECT min(id) FROM {meta}")
        first_id = cursor.fetchone()[0]
        # Expired: bodies of the first expired messages, fetched 10 days ago (R3).
        cursor.execute(
            f"""INSERT INTO {body} (team_id, meta_id, raw, fetched_at)
            SELECT team_id, id, %s, now() - interval '10 days' FROM {meta}
            WHERE id BETWEEN %s AND %s""",
            [raw, first_id, first_id + cfg["bodies"] - 1],
        )
        # Kept: bodies fetched today, of messages stored yesterday.
        cursor.execute(
            f"""INSERT INTO {body} (team_id, meta_id, raw, fetched_at)
            SELECT team_id, id, %s, now() FROM {meta}
            WHERE created_at > now() - interval '2 days' ORDER BY id LIMIT %s""",
            [raw, max(cfg["metadata"] // 100, 1)],
        )
        cursor.execute(f"ANALYZE {meta}")
        cursor.execute(f"ANALYZE {body}")
    return {
        "load_wall": time.perf_counter() - started,
        "team": team.pk,
        "metadata": MessageMeta.objects.count(),
        "bodies": MessageBody.objects.count(),
    }


def phase_purge(cfg: dict) -> dict:
    setup_django()
    from engagements.purge import purge
    from mailboxes.models import MessageBody, MessageMeta

    started = time.perf_counter()
    results = purge(dry_run=cfg["dry_run"])
    wall = time.perf_counter() - started
    return {
        "wall": wall,
        "rules": {r.rule: r.rows for r in results},
        "metadata_left": MessageMeta.objects.count(),
        "bodies_left": MessageBody.objects.count(),
    }


PHASES = {"load": phase_load, "purge": phase_purge}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--metadata", type=int, default=1_000_000)
    parser.add_argument("--bodies", type=int, default=100_000)
    args = parse_args(parser, PHASES)
    if args is None:
        return

    cfg = {"metadata": args.metadata, "bodies": args.bodies}
    loaded = run_phase(__file__, "load", cfg)
    print(
        f"loaded {loaded['metadata']:,} metadata rows and {loaded['bodies']:,} cached bodies "
        f"in {loaded['load_wall']:.1f} s"
    )
    dry = run_phase(__file__, "purge", {**cfg, "dry_run": True})
    real = run_phase(__file__, "purge", {**cfg, "dry_run": False})
    erased = real["rules"]["R3"] + real["rules"]["R4"]
    print(f"\nRetention purge benchmark ({args.metadata:,} expired metadata rows, "
          f"{args.bodies:,} expired cached bodies, PostgreSQL)")  # fmt: skip
    print(f"{'phase':34} {'wall':>9} {'peak RSS':>10}  rows")
    print(f"{'purge --dry-run (counts only)':34} {dry['wall']:>8.2f}s {dry['peak_rss_mb']:>7.1f} MB"
          f"  {dry['rules']}")  # fmt: skip
    print(f"{'purge':34} {real['wall']:>8.2f}s {real['peak_rss_mb']:>7.1f} MB  {real['rules']}")
    print(f"\n{erased / real['wall']:,.0f} rows erased per second "
          f"(R4 {real['rules']['R4']:,} metadata + R3 {real['rules']['R3']:,} bodies)")  # fmt: skip
    kept_meta, kept_bodies = real["metadata_left"], real["bodies_left"]
    expected_meta, expected_bodies = args.metadata // 10, max(args.metadata // 100, 1)
    ok = (real["rules"]["R4"], kept_meta) == (args.metadata, expected_meta) and (
        real["rules"]["R3"] == args.bodies and kept_bodies == expected_bodies
    )
    print(f"kept what no rule erases: {kept_meta:,} metadata rows, {kept_bodies:,} bodies"
          f" -> {'OK' if ok else 'MISMATCH'}")  # fmt: skip
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
