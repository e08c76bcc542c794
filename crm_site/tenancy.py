"""Team scoping: the one way views reach tenant data (STYLE section 3).

`request.team` is set by `TeamMiddleware` from the user's membership; views fetch rows through
`Model.objects.for_team(team)` or `get_for_team_or_404`, so another team's row is a 404.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import TYPE_CHECKING, Any, TypeVar

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db import models
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect

if TYPE_CHECKING:
    from teams.models import Team

M = TypeVar("M", bound=models.Model)
View = Callable[..., HttpResponse]


class TeamScopedQuerySet(models.QuerySet):
    """Base queryset of every tenant-owned model: `for_team(team)` is the entry point."""

    def for_team(self, team: Team | None) -> TeamScopedQuerySet:
        if team is None:
            return self.none()
        return self.filter(team=team)


def get_for_team_or_404(
    model_or_queryset: type[M] | models.QuerySet, team: Team | None, **lookup: Any
) -> M:
    """Fetch one row of `team`; another team's row answers 404 like a missing one."""
    queryset = (
        model_or_queryset
        if isinstance(model_or_queryset, models.QuerySet)
        else model_or_queryset.objects.all()  # type: ignore[attr-defined]
    )
    return get_object_or_404(queryset.for_team(team), **lookup)


class TeamMiddleware:
    """Set `request.membership` and `request.team` from the signed-in user's membership."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        from teams.models import Membership

        membership = None
        if request.user.is_authenticated:
            membership = (
                Membership.objects.select_related("team__retention")
                .filter(user=request.user)
                .first()
            )
        request.membership = membership  # type: ignore[attr-defined]
        request.team = membership.team if membership else None  # type: ignore[attr-defined]
        return self.get_response(request)


def team_member_required(view: View) -> View:
    """Login required, and a team: users without one are sent to create or join one."""

    @login_required
    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if request.team is None:  # type: ignore[attr-defined]
            return redirect("teams:team_create")
        return view(request, *args, **kwargs)

    return wrapper


def team_role_required(role: str) -> Callable[[View], View]:
    """Like `team_member_required`, and the member must hold `role` (403 otherwise)."""

    def decorator(view: View) -> View:
        @team_member_required
        @wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if request.membership.role != role:  # type: ignore[attr-defined]
                raise PermissionDenied(f"Only team {role}s can do this.")
            return view(request, *args, **kwargs)

        return wrapper

    return decorator
