"""Apply the retention rules now (SPEC R1–R4); the daily schedule runs the same."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from engagements.purge import BATCH_SIZE, RuleResult, purge
from teams.models import Team


class Command(BaseCommand):
    help = (
        "Erase what the teams' retention settings no longer keep: deleted email past its "
        "restore period (R2), cached bodies (R3), mailbox metadata (R4). Sequence email (R1) "
        "is kept. --dry-run only counts."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--dry-run", action="store_true", help="Count, erase nothing.")
        parser.add_argument("--team", type=int, metavar="ID", help="Only this team.")
        parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)

    def handle(self, *args: Any, dry_run: bool, team: int | None, batch_size: int,
               **options: Any) -> None:  # fmt: skip
        if team is not None and not Team.objects.filter(pk=team).exists():
            raise CommandError(f"No team with id {team}.")
        started = timezone.now()
        results = purge(team_id=team, dry_run=dry_run, batch_size=batch_size)
        scope = f"team {team}" if team is not None else "all teams"
        title = "would be erased (dry run: nothing erased)" if dry_run else "erased"
        self.stdout.write(f"Retention purge, {scope}, {started:%Y-%m-%d %H:%M %Z}: {title}")
        self.stdout.write(table(results))
        if not dry_run:
            seconds = (timezone.now() - started).total_seconds()
            self.stdout.write(f"Done in {seconds:.1f} s.")


def table(results: list[RuleResult]) -> str:
    rows = [("rule", "what", "rows", "files")]
    rows.append(("R1", "sequence email: kept until the team is deleted", "none", "-"))
    with_files = {"R2", "files"}  # the rules that erase files
    rows += [(r.rule, r.what, f"{r.rows:,}", f"{r.files:,}" if r.rule in with_files else "-")
             for r in results]  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join(
        f"{rule:<{widths[0]}}  {what:<{widths[1]}}  {count:>{widths[2]}}  {files:>{widths[3]}}"
        for rule, what, count, files in rows
    )
