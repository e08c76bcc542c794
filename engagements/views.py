from __future__ import annotations

from django.contrib import messages
from django.db import models
from django.http import FileResponse, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from contacts.models import Company, Contact, Deal
from crm_site.tenancy import get_for_team_or_404, team_member_required

from .models import Attachment, EmailEngagement
from .services import delete_engagement, restore_engagement
from .timeline import build_timeline


def _record_page(request: HttpRequest, record: models.Model, template: str) -> HttpResponse:
    timeline = build_timeline(request.team, record, request.GET.get("page"))
    context = {
        "object": record,
        "timeline": timeline,
        "show_images": request.GET.get("images") == "1",
    }
    return render(request, template, context)


@team_member_required
def contact_detail(request: HttpRequest, pk: int) -> HttpResponse:
    contact = get_for_team_or_404(
        Contact.objects.select_related("company", "owner").prefetch_related("emails", "deals"),
        request.team,
        pk=pk,
    )
    return _record_page(request, contact, "engagements/contact_detail.html")


@team_member_required
def company_detail(request: HttpRequest, pk: int) -> HttpResponse:
    company = get_for_team_or_404(
        Company.objects.select_related("owner").prefetch_related("contacts__emails", "deals"),
        request.team,
        pk=pk,
    )
    return _record_page(request, company, "engagements/company_detail.html")


@team_member_required
def deal_detail(request: HttpRequest, pk: int) -> HttpResponse:
    deal = get_for_team_or_404(
        Deal.objects.select_related("company", "owner").prefetch_related("contacts__emails"),
        request.team,
        pk=pk,
    )
    return _record_page(request, deal, "engagements/deal_detail.html")


def _back(request: HttpRequest) -> HttpResponse:
    target = request.POST.get("next", "")
    if url_has_allowed_host_and_scheme(target, {request.get_host()}, request.is_secure()):
        return redirect(target)
    return redirect("home")


@require_POST
@team_member_required
def engagement_delete(request: HttpRequest, pk: int) -> HttpResponse:
    engagement = get_for_team_or_404(EmailEngagement, request.team, pk=pk, deleted_at=None)
    delete_engagement(engagement=engagement, actor=request.user)
    messages.success(
        request,
        f"“{engagement}” was removed from the timeline. Restore it from “Recently removed” "
        "below the timeline.",
    )
    return _back(request)


@require_POST
@team_member_required
def engagement_restore(request: HttpRequest, pk: int) -> HttpResponse:
    engagement = get_for_team_or_404(EmailEngagement, request.team, pk=pk, deleted_at__isnull=False)
    restore_engagement(engagement=engagement)
    messages.success(request, f"“{engagement}” is back on the timeline.")
    return _back(request)


@team_member_required
def attachment_download(request: HttpRequest, pk: int) -> HttpResponse:
    attachment = get_for_team_or_404(
        Attachment, request.team, pk=pk, engagement__deleted_at__isnull=True
    )
    # Always a download, never rendered inline: an attachment may be HTML or SVG (SPEC S4).
    response = FileResponse(
        attachment.file.open("rb"),
        as_attachment=True,
        filename=attachment.filename,
        content_type="application/octet-stream",
    )
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    return response
