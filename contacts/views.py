from __future__ import annotations

from django.contrib import messages
from django.core.paginator import Paginator
from django.db import models
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.csrf import csrf_exempt, csrf_protect
from django.views.decorators.http import require_POST

from crm_site.tenancy import get_for_team_or_404, team_member_required

from .forms import CompanyForm, ContactForm, ContactImportForm, DealForm, TeamScopedForm
from .models import Company, Contact, Deal
from .services import (
    ImportFileError,
    delete_record,
    import_contacts_csv,
    save_contact,
    save_record,
)
from .uploads import ImportUploadLimit, limit_import_upload

PAGE_SIZE = 25

# model -> (form, list url name, label)
_KINDS: dict[type[models.Model], tuple[type[TeamScopedForm], str, str]] = {
    Contact: (ContactForm, "contacts:contact_list", "contact"),
    Company: (CompanyForm, "contacts:company_list", "company"),
    Deal: (DealForm, "contacts:deal_list", "deal"),
}


def _list(request: HttpRequest, queryset: models.QuerySet, template: str) -> HttpResponse:
    q = request.GET.get("q", "").strip()
    if q:
        queryset = queryset.search(q)
    page = Paginator(queryset, PAGE_SIZE).get_page(request.GET.get("page"))
    return render(request, template, {"page": page, "q": q})


def _edit(request: HttpRequest, model: type[models.Model], pk: int | None) -> HttpResponse:
    form_class, list_url, label = _KINDS[model]
    instance = get_for_team_or_404(model, request.team, pk=pk) if pk else None
    form = form_class(request.POST or None, instance=instance, team=request.team)
    if request.method == "POST":
        if form.is_valid():
            save = save_contact if model is Contact else save_record
            record = save(team=request.team, form=form, actor=request.user)
            messages.success(request, f"{label.capitalize()} “{record}” saved.")
            return redirect(record)
        status = 400
    else:
        status = 200
    context = {"form": form, "object": instance, "label": label, "list_url": list_url}
    return render(request, "contacts/record_form.html", context, status=status)


def _delete(request: HttpRequest, model: type[models.Model], pk: int) -> HttpResponse:
    _form, list_url, label = _KINDS[model]
    record = get_for_team_or_404(model, request.team, pk=pk)
    delete_record(record=record)
    messages.success(request, f"{label.capitalize()} “{record}” deleted.")
    return redirect(list_url)


@team_member_required
def contact_list(request: HttpRequest) -> HttpResponse:
    queryset = Contact.objects.for_team(request.team).with_list_data()
    return _list(request, queryset, "contacts/contact_list.html")


@team_member_required
def contact_create(request: HttpRequest) -> HttpResponse:
    return _edit(request, Contact, None)


@team_member_required
def contact_update(request: HttpRequest, pk: int) -> HttpResponse:
    return _edit(request, Contact, pk)


@require_POST
@team_member_required
def contact_delete(request: HttpRequest, pk: int) -> HttpResponse:
    return _delete(request, Contact, pk)


@csrf_exempt  # checked by _contact_import, once the size limit is in place (below)
@team_member_required
def contact_import(request: HttpRequest) -> HttpResponse:
    # Upload handlers can only change before the body is read, and CSRF checking reads it.
    return _contact_import(request, limit_import_upload(request))


@csrf_protect
def _contact_import(request: HttpRequest, upload: ImportUploadLimit) -> HttpResponse:
    # Bound on every POST: a stopped upload may leave no field at all, and must still say why.
    posted = request.method == "POST"
    form = ContactImportForm(
        request.POST if posted else None, request.FILES if posted else None, refusal=upload.refusal
    )
    report = None
    if posted and form.is_valid():
        try:
            report = import_contacts_csv(
                team=request.team, data=form.cleaned_data["file"], actor=request.user
            )
        except ImportFileError as exc:
            form.add_error("file", str(exc))
    status = 400 if form.errors else 200
    return render(
        request, "contacts/contact_import.html", {"form": form, "report": report}, status=status
    )


@team_member_required
def company_list(request: HttpRequest) -> HttpResponse:
    queryset = (
        Company.objects.for_team(request.team)
        .select_related("owner")
        .annotate(contact_count=models.Count("contacts", distinct=True))
        # The aggregate drops Meta.ordering: without it, pages could repeat or skip rows.
        .order_by("name", "pk")
    )
    return _list(request, queryset, "contacts/company_list.html")


@team_member_required
def company_create(request: HttpRequest) -> HttpResponse:
    return _edit(request, Company, None)


@team_member_required
def company_update(request: HttpRequest, pk: int) -> HttpResponse:
    return _edit(request, Company, pk)


@require_POST
@team_member_required
def company_delete(request: HttpRequest, pk: int) -> HttpResponse:
    return _delete(request, Company, pk)


@team_member_required
def deal_list(request: HttpRequest) -> HttpResponse:
    queryset = Deal.objects.for_team(request.team).select_related("company", "owner")
    return _list(request, queryset, "contacts/deal_list.html")


@team_member_required
def deal_create(request: HttpRequest) -> HttpResponse:
    return _edit(request, Deal, None)


@team_member_required
def deal_update(request: HttpRequest, pk: int) -> HttpResponse:
    return _edit(request, Deal, pk)


@require_POST
@team_member_required
def deal_delete(request: HttpRequest, pk: int) -> HttpResponse:
    return _delete(request, Deal, pk)
