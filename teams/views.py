from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from crm_site.tenancy import get_for_team_or_404, team_member_required, team_role_required

from .adapters import INVITATION_SESSION_KEY
from .forms import InvitationForm, TeamForm
from .models import Invitation, Membership
from .services import (
    InvitationError,
    accept_invitation,
    create_team,
    invite_member,
    revoke_invitation,
)


@login_required
def team_create(request: HttpRequest) -> HttpResponse:
    if request.team is not None:
        return redirect("teams:team_settings")
    form = TeamForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        create_team(name=form.cleaned_data["name"], owner=request.user)
        messages.success(request, "Your team is ready.")
        return redirect("home")
    return render(request, "teams/team_create.html", {"form": form})


@team_member_required
def team_settings(request: HttpRequest) -> HttpResponse:
    return _render_settings(request, InvitationForm())


def _render_settings(request: HttpRequest, form: InvitationForm, status: int = 200) -> HttpResponse:
    team = request.team
    context = {
        "team": team,
        "memberships": Membership.objects.for_team(team).select_related("user"),
        "invitations": Invitation.objects.for_team(team).pending().select_related("invited_by"),
        "retention": team.retention,
        "is_admin": request.membership.is_admin,
        "form": form,
    }
    return render(request, "teams/team_settings.html", context, status=status)


@require_POST
@team_role_required(Membership.Role.ADMIN)
def invitation_create(request: HttpRequest) -> HttpResponse:
    form = InvitationForm(request.POST)
    if form.is_valid():
        try:
            invitation = invite_member(
                team=request.team,
                email=form.cleaned_data["email"],
                actor=request.user,
                request=request,
            )
        except InvitationError as exc:
            form.add_error("email", str(exc))
        else:
            messages.success(request, f"Invitation sent to {invitation.email}.")
            return redirect("teams:team_settings")
    return _render_settings(request, form, status=400)


@require_POST
@team_role_required(Membership.Role.ADMIN)
def invitation_revoke(request: HttpRequest, pk: int) -> HttpResponse:
    invitation = get_for_team_or_404(Invitation, request.team, pk=pk, accepted_at__isnull=True)
    revoke_invitation(invitation=invitation)
    messages.success(request, f"Invitation for {invitation.email} withdrawn.")
    return redirect("teams:team_settings")


def invitation_accept(request: HttpRequest, token: str) -> HttpResponse:
    invitation = get_object_or_404(Invitation.objects.select_related("team"), token=token)
    if not invitation.is_usable():
        return render(
            request, "teams/invitation_accept.html", {"invitation": invitation}, status=410
        )
    if request.method == "POST":
        if not request.user.is_authenticated:
            request.session[INVITATION_SESSION_KEY] = invitation.token
            return redirect("account_signup")
        try:
            accept_invitation(invitation=invitation, user=request.user)
        except InvitationError as exc:
            messages.error(request, str(exc))
            return redirect("home")
        messages.success(request, f"Welcome to {invitation.team}.")
        return redirect("home")
    return render(request, "teams/invitation_accept.html", {"invitation": invitation})
