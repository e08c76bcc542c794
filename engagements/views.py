from __future__ import annotations

from datetime import timedelta

from django.contrib import messages
from django.core.paginator import Paginator
from django.db import models
from django.db.models.functions import Lower
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from contacts.models import Company, Contact, ContactEmail, Deal
from crm_site.tenancy import get_for_team_or_404, team_member_required
from mailboxes.models import Mailbox
from teams.models import Team

from . import richtext, templating
from .filenames import content_disposition
from .forms import ComposeForm, EmailTemplateForm
from .models import Attachment, EmailEngagement, EmailTemplate
from .sending import (
    Draft,
    SendError,
    cannot_send_reason,
    queue_email,
    retry_email,
    send_template,
    sender_identity,
    sending_mailbox,
)
from .services import Address, delete_engagement, restore_engagement
from .timeline import build_timeline, timeline_version

RECORD_MODELS: dict[str, type[models.Model]] = {
    "contact": Contact,
    "company": Company,
    "deal": Deal,
}


def _record_page(request: HttpRequest, record: models.Model, template: str) -> HttpResponse:
    timeline = build_timeline(request.team, record, request.GET.get("page"))
    kind = next(k for k, model in RECORD_MODELS.items() if isinstance(record, model))
    mailbox = sending_mailbox(request.user, request.team)
    context = {
        "object": record,
        "timeline": timeline,
        "show_images": request.GET.get("images") == "1",
        "compose_url": reverse(f"engagements:compose_{kind}", args=[record.pk]),
        "cannot_send": cannot_send_reason(mailbox),
        "sending_mailbox": mailbox,
        "timeline_version": timeline_version(request.team, record),
        "version_url": reverse(f"engagements:timeline_version_{kind}", args=[record.pk]),
    }
    return render(request, template, context)


@team_member_required
def timeline_version_view(request: HttpRequest, pk: int, kind: str) -> HttpResponse:
    """The record's timeline token, polled by its open page (static/js/timeline_live.js)."""
    record = get_for_team_or_404(RECORD_MODELS[kind], request.team, pk=pk)
    response = JsonResponse({"version": timeline_version(request.team, record)})
    response["Cache-Control"] = "no-store"
    return response


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
        attachment.file.open("rb"), as_attachment=True, content_type="application/octet-stream"
    )
    # Offers the name shown, not the stored one (RFC 6266 with an RFC 8187 filename*).
    response["Content-Disposition"] = content_disposition(attachment.filename)
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    return response


# -- compose and send (SPEC C4, L1, L7) ---------------------------------------------------


def _record_contacts(record: models.Model) -> list[Contact]:
    if isinstance(record, Contact):
        return [record]
    return list(record.contacts.prefetch_related("emails"))  # type: ignore[attr-defined]


def _contacts_by_address(team: Team, addresses: list[str]) -> dict[str, Contact]:
    rows = (
        ContactEmail.objects.for_team(team)
        .annotate(address=Lower("email"))
        .filter(address__in=[a.lower() for a in addresses])
        .select_related("contact")
    )
    return {row.address: row.contact for row in rows}


def _quote(engagement: EmailEngagement) -> str:
    when = engagement.sent_at.strftime("%d %b %Y %H:%M")
    quoted = "\n".join(f"> {line}" for line in engagement.body_text.strip().splitlines())
    return f"\n\nOn {when}, {engagement.from_display} wrote:\n{quoted}\n"


def _reply_subject(subject: str) -> str:
    return subject if subject.lower().startswith("re:") else f"Re: {subject}"


def _initial(
    record: models.Model,
    reply_to: EmailEngagement | None,
    template: EmailTemplate | None,
    mailbox: Mailbox | None,
) -> dict[str, object]:
    if reply_to is not None:
        own = mailbox.email_address.lower() if mailbox else ""
        if reply_to.from_address.lower() != own:
            to = [reply_to.from_address.lower()]
        else:  # replying to our own email: write to its recipients again
            to = [a["email"].lower() for a in reply_to.to]
        return {
            "to": to,
            "subject": _reply_subject(reply_to.subject),
            "body": _quote(reply_to),
        }
    initial: dict[str, object] = {}
    contacts = _record_contacts(record)
    if contacts and contacts[0].primary_email:
        initial["to"] = [contacts[0].primary_email.lower()]
    if template is not None:
        values = templating.token_values(
            contact=contacts[0] if contacts else None,
            company=record if isinstance(record, Company) else None,
            deal=record if isinstance(record, Deal) else None,
            sender=sender_identity(mailbox) if mailbox else None,
        )
        initial["subject"] = templating.render(template.subject, values)
        initial["body"] = templating.render(template.body, values)
    return initial


def _draft(team: Team, record: models.Model, data: dict, reply_to: EmailEngagement | None) -> Draft:
    """The compose form's data as a Draft, logged on the record it was written from and on
    every recipient who is a contact."""
    to_addresses = list(dict.fromkeys([*data["to_contacts"], *data["to_other"]]))
    recipients = _contacts_by_address(team, [*to_addresses, *data["cc"], *data["bcc"]])
    on_contacts = {c.pk: c for c in recipients.values()}
    if isinstance(record, Contact):
        on_contacts.setdefault(record.pk, record)

    def address(email: str) -> Address:
        return Address(email, recipients[email].full_name if email in recipients else "")

    return Draft(
        to=[address(a) for a in to_addresses],
        cc=[address(a) for a in data["cc"]],
        bcc=[Address(a) for a in data["bcc"]],
        subject=data["subject"],
        body=data["body"],
        html=richtext.to_html(data["body"]) if data["formatting"] else "",
        attachments=data["attachments"],
        reply_to=reply_to,
        contacts=list(on_contacts.values()),
        companies=[record] if isinstance(record, Company) else [],
        deals=[record] if isinstance(record, Deal) else [],
    )


@team_member_required
def compose(request: HttpRequest, kind: str, pk: int) -> HttpResponse:
    """Write an email from a record's page: "New email" (a new thread, no old references)
    or, with ?reply=<email id>, a reply in that email's thread."""
    model = RECORD_MODELS.get(kind)
    if model is None:
        raise Http404
    record = get_for_team_or_404(model, request.team, pk=pk)
    team = request.team
    mailbox = sending_mailbox(request.user, team)
    reason = cannot_send_reason(mailbox)
    reply_id = request.POST.get("reply") or request.GET.get("reply")
    reply_to = (
        get_for_team_or_404(EmailEngagement.objects.on_timeline_of(record), team, pk=reply_id)
        if reply_id
        else None
    )
    templates = EmailTemplate.objects.for_team(team)
    template_id = request.GET.get("template")
    template = get_for_team_or_404(templates, team, pk=template_id) if template_id else None
    contacts = _record_contacts(record)
    choices = [
        (email.email.lower(), f"{contact.full_name or email.email} <{email.email}>")
        for contact in contacts
        for email in contact.emails.all()
    ]
    initial = _initial(record, reply_to, template, mailbox)
    known = {value for value, _label in choices}
    to: list[str] = initial.pop("to", [])  # type: ignore[assignment]
    initial["to_contacts"] = [a for a in to if a in known]
    initial["to_other"] = ", ".join(a for a in to if a not in known)
    form = ComposeForm(
        request.POST or None, request.FILES or None, contact_choices=choices, initial=initial
    )
    if request.method == "POST" and not reason and form.is_valid():
        draft = _draft(team, record, form.cleaned_data, reply_to)
        try:
            engagement = queue_email(team=team, user=request.user, mailbox=mailbox, draft=draft)
        except SendError as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, f"“{engagement.subject}” is on its way.")
            return redirect(f"{record.get_absolute_url()}#email-{engagement.pk}")  # type: ignore[attr-defined]
    return render(
        request,
        "engagements/compose.html",
        {
            "object": record,
            "kind": kind,
            "form": form,
            "mailbox": mailbox,
            "cannot_send": reason,
            "reply_to": reply_to,
            "templates": templates,
            "template": template,
        },
    )


@require_POST
@team_member_required
def engagement_retry(request: HttpRequest, pk: int) -> HttpResponse:
    engagement = get_for_team_or_404(
        EmailEngagement.objects.select_related("outgoing__mailbox"),
        request.team,
        pk=pk,
        deleted_at=None,
        outgoing__isnull=False,
    )
    if engagement.outgoing.mailbox.owner_id != request.user.pk:
        messages.error(request, "Only the person who sent it can retry it.")
        return _back(request)
    try:
        retry_email(engagement)
    except SendError as exc:
        messages.error(request, str(exc))
    else:
        engagement.refresh_from_db()
        if engagement.status == EmailEngagement.Status.FAILED:
            messages.error(request, f"Still not sent: {engagement.status_detail}")
        else:
            messages.success(request, f"“{engagement}” is on its way again.")
    return _back(request)


# -- templates (SPEC T1) -------------------------------------------------------------------

BULK_SEND_MAX = 200


@team_member_required
def template_list(request: HttpRequest) -> HttpResponse:
    templates = EmailTemplate.objects.for_team(request.team).select_related("created_by")
    return render(request, "engagements/template_list.html", {"templates": templates})


def _preview(request: HttpRequest, template: EmailTemplate) -> dict[str, object]:
    """The template rendered for a real contact (?preview=<contact id>, else the first)."""
    contacts = Contact.objects.for_team(request.team).select_related("company")
    chosen = request.GET.get("preview")
    contact = get_for_team_or_404(contacts, request.team, pk=chosen) if chosen else contacts.first()
    mailbox = sending_mailbox(request.user, request.team)
    values = templating.token_values(
        contact=contact, sender=sender_identity(mailbox) if mailbox else None
    )
    return {
        "preview_contact": contact,
        "preview_subject": templating.render(template.subject, values),
        "preview_body": templating.render(template.body, values),
        "preview_choices": contacts.order_by("last_name", "first_name")[:200],
    }


@team_member_required
def template_edit(request: HttpRequest, pk: int | None = None) -> HttpResponse:
    team = request.team
    template = get_for_team_or_404(EmailTemplate, team, pk=pk) if pk else None
    form = EmailTemplateForm(request.POST or None, instance=template, team=team)
    if request.method == "POST" and form.is_valid():
        saved = form.save(commit=False)
        saved.team = team
        if saved.created_by_id is None:
            saved.created_by = request.user
        saved.save()
        messages.success(request, f"Template “{saved}” saved.")
        return redirect(saved.get_absolute_url())
    context: dict[str, object] = {"form": form, "object": template}
    if template is not None:
        context.update(_preview(request, template))
    return render(request, "engagements/template_form.html", context)


@require_POST
@team_member_required
def template_delete(request: HttpRequest, pk: int) -> HttpResponse:
    template = get_for_team_or_404(EmailTemplate, request.team, pk=pk)
    template.delete()
    messages.success(request, f"Template “{template}” deleted.")
    return redirect("engagements:template_list")


@team_member_required
def send_template_view(request: HttpRequest) -> HttpResponse:
    """Send one template to several contacts chosen on the contacts list: each gets their own
    email in a new thread (SPEC T1). GET shows a preview per contact; POST sends."""
    team = request.team
    source = request.POST if request.method == "POST" else request.GET
    ids = [int(i) for i in source.getlist("contact") if i.isdigit()][:BULK_SEND_MAX]
    contacts = list(
        Contact.objects.for_team(team)
        .filter(pk__in=ids)
        .select_related("company")
        .prefetch_related("emails")
        .order_by("last_name", "first_name", "pk")
    )
    templates = EmailTemplate.objects.for_team(team)
    template_id = source.get("template")
    template = get_for_team_or_404(templates, team, pk=template_id) if template_id else None
    mailbox = sending_mailbox(request.user, team)
    reason = cannot_send_reason(mailbox)
    if request.method == "POST" and template is not None and contacts and not reason:
        try:
            result = send_template(
                team=team, user=request.user, mailbox=mailbox, template=template,
                contacts=contacts,
            )  # fmt: skip
        except SendError as exc:
            messages.error(request, str(exc))
        else:
            text = f"“{template}” is on its way to {len(result.queued)} contact" + (
                "s." if len(result.queued) != 1 else "."
            )
            if result.skipped:
                text += " Skipped: " + ", ".join(
                    f"{contact} ({why})" for contact, why in result.skipped
                )
            messages.success(request, text)
            return redirect("contacts:contact_list")
    previews = []
    if template is not None:
        identity = sender_identity(mailbox) if mailbox else None
        for contact in contacts:
            values = templating.token_values(contact=contact, sender=identity)
            previews.append(
                {
                    "contact": contact,
                    "address": contact.primary_email,
                    "subject": templating.render(template.subject, values),
                    "body": templating.render(template.body, values),
                }
            )
    return render(
        request,
        "engagements/send_template.html",
        {
            "contacts": contacts,
            "templates": templates,
            "template": template,
            "previews": previews,
            "sendable": sum(1 for p in previews if p["address"]),
            "cannot_send": reason,
            "mailbox": mailbox,
        },
    )


@team_member_required
def recently_deleted(request: HttpRequest) -> HttpResponse:
    """The team's deleted email, restorable until the purge erases it (SPEC R2)."""
    team = request.team
    days = team.retention.deleted_engagement_days
    deleted = (
        EmailEngagement.objects.for_team(team)
        .deleted()
        .select_related("deleted_by")
        .prefetch_related("contacts", "companies", "deals")
        .order_by("-deleted_at", "-pk")
    )
    page = Paginator(deleted, 50).get_page(request.GET.get("page"))
    for engagement in page.object_list:
        engagement.erased_on = engagement.deleted_at + timedelta(days=days)
    return render(request, "engagements/recently_deleted.html", {"page": page, "days": days})
