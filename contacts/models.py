from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models.functions import Lower
from django.urls import reverse
from django.utils import timezone

from crm_site.tenancy import TeamScopedQuerySet
from teams.models import Team


class CompanyQuerySet(TeamScopedQuerySet):
    def search(self, q: str) -> CompanyQuerySet:
        q = q.strip()
        if not q:
            return self
        return self.filter(models.Q(name__icontains=q) | models.Q(domain__icontains=q))


class Company(models.Model):
    team = models.ForeignKey(Team, on_delete=models.CASCADE)
    name = models.CharField(max_length=200)
    domain = models.CharField(max_length=253, blank=True, help_text="e.g. example.com")
    phone = models.CharField(max_length=40, blank=True)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    objects = CompanyQuerySet.as_manager()

    class Meta:
        ordering = ["name", "pk"]
        verbose_name_plural = "companies"
        indexes = [
            # Company list: ordered by name within a team.
            models.Index(fields=["team", "name"], name="company_team_name_idx"),
        ]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("engagements:company_detail", args=[self.pk])


class ContactQuerySet(TeamScopedQuerySet):
    def search(self, q: str) -> ContactQuerySet:
        """Match any word against names, any email address or the company name."""
        queryset = self
        for word in q.split():
            has_email = ContactEmail.objects.filter(
                contact=models.OuterRef("pk"), email__icontains=word
            )
            queryset = queryset.filter(
                models.Q(first_name__icontains=word)
                | models.Q(last_name__icontains=word)
                | models.Q(company__name__icontains=word)
                | models.Exists(has_email)
            )
        return queryset

    def with_list_data(self) -> ContactQuerySet:
        return self.select_related("company", "owner").prefetch_related("emails")


class Contact(models.Model):
    team = models.ForeignKey(Team, on_delete=models.CASCADE)
    first_name = models.CharField(max_length=100, blank=True)
    last_name = models.CharField(max_length=100, blank=True)
    job_title = models.CharField(max_length=150, blank=True)
    phone = models.CharField(max_length=40, blank=True)
    company = models.ForeignKey(
        Company, on_delete=models.SET_NULL, null=True, blank=True, related_name="contacts"
    )
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    objects = ContactQuerySet.as_manager()

    class Meta:
        ordering = ["last_name", "first_name", "pk"]
        indexes = [
            # Contact list: ordered by name within a team.
            models.Index(fields=["team", "last_name", "first_name"], name="contact_team_name_idx"),
        ]

    def __str__(self) -> str:
        return self.full_name or self.primary_email or f"Contact #{self.pk}"

    def get_absolute_url(self) -> str:
        return reverse("engagements:contact_detail", args=[self.pk])

    @property
    def full_name(self) -> str:
        return f"{self.first_name} {self.last_name}".strip()

    @property
    def primary_email(self) -> str:
        """The primary address (uses prefetched `emails` when present)."""
        emails = list(self.emails.all())
        for item in emails:
            if item.is_primary:
                return item.email
        return emails[0].email if emails else ""


class ContactEmail(models.Model):
    """One of a contact's addresses; an address belongs to one contact per team."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE)
    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="emails")
    email = models.EmailField()
    is_primary = models.BooleanField(default=False)

    objects = TeamScopedQuerySet.as_manager()

    class Meta:
        ordering = ["-is_primary", "pk"]
        constraints = [
            models.UniqueConstraint(
                "team", Lower("email"), name="contacts_contactemail_team_email_uniq"
            )
        ]

    def __str__(self) -> str:
        return self.email


class DealQuerySet(TeamScopedQuerySet):
    def search(self, q: str) -> DealQuerySet:
        q = q.strip()
        if not q:
            return self
        return self.filter(models.Q(name__icontains=q) | models.Q(company__name__icontains=q))


class Deal(models.Model):
    class Stage(models.TextChoices):
        APPOINTMENT = "appointment", "Appointment scheduled"
        QUALIFIED = "qualified", "Qualified to buy"
        PRESENTATION = "presentation", "Presentation scheduled"
        CONTRACT = "contract", "Contract sent"
        WON = "won", "Closed won"
        LOST = "lost", "Closed lost"

    team = models.ForeignKey(Team, on_delete=models.CASCADE)
    name = models.CharField(max_length=200)
    stage = models.CharField(max_length=20, choices=Stage.choices, default=Stage.APPOINTMENT)
    amount = models.DecimalField(max_digits=14, decimal_places=2, null=True, blank=True)
    close_date = models.DateField(null=True, blank=True)
    company = models.ForeignKey(
        Company, on_delete=models.SET_NULL, null=True, blank=True, related_name="deals"
    )
    contacts = models.ManyToManyField(Contact, blank=True, related_name="deals")
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    objects = DealQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "pk"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(amount__isnull=True) | models.Q(amount__gte=0),
                name="contacts_deal_amount_chk",
            )
        ]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("engagements:deal_detail", args=[self.pk])
