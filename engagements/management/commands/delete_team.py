"""Erase a team and everything of it (SPEC R5)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from engagements.purge import erase_team
from teams.models import Team


class Command(BaseCommand):
    help = "Erase a team and all of its data: records, email, mailboxes, files (SPEC R5)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("team_id", type=int)
        parser.add_argument("--yes", action="store_true", help="Do not ask for confirmation.")

    def handle(self, *args: Any, team_id: int, yes: bool, **options: Any) -> None:
        team = Team.objects.filter(pk=team_id).first()
        if team is None:
            raise CommandError(f"No team with id {team_id}.")
        if not yes and input(f"Erase team “{team}” and all its data? [y/N] ").lower() != "y":
            raise CommandError("Nothing erased.")
        erase_team(team)
        self.stdout.write(f"Team “{team}” and all its data are erased.")
