from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.views.decorators.http import require_POST

from crm_site.tenancy import get_for_team_or_404, team_member_required

from .forms import PRESETS, ImapConnectForm, SenderIdentityForm
from .models import Mailbox
from .oauth import oauth_available
from .services import (
    ConnectError,
    TooManyAttempts,
    connect_mailbox,
    count_connect_attempt,
    delete_mailbox,
    queue_sync,
    resync_mailbox,
)

QUARANTINE_SHOWN = 20


def _mailbox(request: HttpRequest, pk: int) -> Mailbox:
    return get_for_team_or_404(
        Mailbox.objects.select_related("owner", "sync_lease").prefetch_related("folders"),
        request.team,
        pk=pk,
    )


def _own_mailbox(request: HttpRequest, pk: int) -> Mailbox:
    """One of the user's own mailboxes: a teammate's answers 404, like another team's."""
    mailbox = _mailbox(request, pk)
    if mailbox.owner_id != request.user.pk:
        raise Http404("Only the mailbox's owner can do this.")
    return mailbox


@team_member_required
def mailbox_list(request: HttpRequest) -> HttpResponse:
    mailboxes = (
        Mailbox.objects.for_team(request.team)
        .select_related("owner", "sync_lease")
        .prefetch_related("folders")
        .order_by("email_address")
    )
    return render(request, "mailboxes/mailbox_list.html", {"mailboxes": mailboxes})


@team_member_required
def mailbox_connect(request: HttpRequest) -> HttpResponse:
    """Connect a mailbox; ?reconnect=<id> fills in one of the user's own, but its password."""
    initial = {"email_address": request.user.email}
    reconnect = request.GET.get("reconnect")
    if reconnect:
        mailbox = get_for_team_or_404(
            Mailbox.objects.filter(owner=request.user), request.team, pk=reconnect
        )
        initial = {"email_address": mailbox.email_address, **mailbox.settings}
    form = ImapConnectForm(request.POST or None, initial=initial)
    retry_after = None
    if request.method == "POST" and form.is_valid():
        try:
            count_connect_attempt(team=request.team, user=request.user)
            mailbox = connect_mailbox(
                team=request.team,
                owner=request.user,
                kind=Mailbox.Kind.IMAP,
                email_address=form.cleaned_data["email_address"],
                provider_settings=form.provider_settings(),
                credentials={"password": form.cleaned_data["password"]},
            )
        except TooManyAttempts as exc:
            form.add_error(None, str(exc))
            retry_after = exc.retry_after
        except ConnectError as exc:
            form.add_error(None, str(exc))
        else:
            queue_sync(mailbox.pk)
            messages.success(
                request, f"{mailbox.email_address} is connected. The first sync has started."
            )
            return redirect(mailbox)
    context = {
        "form": form,
        "presets": PRESETS,
        "gmail_available": oauth_available("gmail"),
        "microsoft_available": oauth_available("graph"),
    }
    status = 429 if retry_after else 400 if form.errors else 200
    response = render(request, "mailboxes/mailbox_connect.html", context, status=status)
    if retry_after:
        response["Retry-After"] = str(retry_after)
    return response


@team_member_required
def mailbox_detail(request: HttpRequest, pk: int) -> HttpResponse:
    mailbox = _mailbox(request, pk)
    identity = SenderIdentityForm(instance=mailbox) if mailbox.owner_id == request.user.pk else None
    return render(
        request,
        "mailboxes/mailbox_detail.html",
        {
            "mailbox": mailbox,
            "identity": identity,
            "disconnect_after_hours": settings.CRM_DISCONNECT_AFTER_HOURS,
            "quarantined": mailbox.quarantined.all()[:QUARANTINE_SHOWN],
        },
    )


@require_POST
@team_member_required
def mailbox_identity(request: HttpRequest, pk: int) -> HttpResponse:
    """The owner's name and signature on email sent through the mailbox."""
    mailbox = _own_mailbox(request, pk)
    form = SenderIdentityForm(request.POST, instance=mailbox)
    if form.is_valid():
        form.save()
        messages.success(request, "Your name and signature are saved.")
        return redirect("mailboxes:mailbox_detail", pk=mailbox.pk)
    return render(request, "mailboxes/mailbox_detail.html", {"mailbox": mailbox, "identity": form})


@team_member_required
def mailbox_status(request: HttpRequest, pk: int) -> HttpResponse:
    """The state and sync progress, polled by the open mailbox page (mailbox_status.js)."""
    mailbox = _mailbox(request, pk)
    done, total = mailbox.progress
    return JsonResponse(
        {
            "is_syncing": mailbox.is_syncing,
            "state": render_to_string("mailboxes/_mailbox_state.html", {"mailbox": mailbox}),
            "done": done,
            "total": total,
            "last_synced_at": mailbox.last_synced_at,
            "last_error": mailbox.last_error,
            "folders": [
                {"name": f.name, "done": f.synced_count, "total": f.total_count}
                for f in mailbox.folders.all()
            ],
        }
    )


@require_POST
@team_member_required
def mailbox_sync(request: HttpRequest, pk: int) -> HttpResponse:
    mailbox = _mailbox(request, pk)
    if mailbox.is_syncing:
        messages.info(request, "This mailbox is syncing right now: its new mail is being read.")
    elif queue_sync(mailbox.pk):
        messages.success(request, "Sync started.")
    else:
        messages.info(request, "A sync of this mailbox is already waiting to start.")
    return redirect(mailbox)


@require_POST
@team_member_required
def mailbox_resync(request: HttpRequest, pk: int) -> HttpResponse:
    """Read the mailbox again from scratch (the owner's repair for a drift)."""
    mailbox = _own_mailbox(request, pk)
    resync_mailbox(mailbox)
    messages.success(request, "Threadline is reading this mailbox again from the start.")
    return redirect(mailbox)


@require_POST
@team_member_required
def mailbox_delete(request: HttpRequest, pk: int) -> HttpResponse:
    mailbox = _own_mailbox(request, pk)
    delete_mailbox(mailbox=mailbox)
    messages.success(
        request, f"{mailbox.email_address} was disconnected. Email on timelines stays."
    )
    return redirect("mailboxes:mailbox_list")
