from django.contrib import admin

from .models import Invitation, Membership, RetentionPolicy, Team


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    raw_id_fields = ["user"]


class RetentionPolicyInline(admin.StackedInline):
    model = RetentionPolicy
    can_delete = False


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
    list_display = ["name", "created_at"]
    search_fields = ["name"]
    inlines = [RetentionPolicyInline, MembershipInline]

    def save_related(self, request, form, formsets, change):  # type: ignore[no-untyped-def]
        super().save_related(request, form, formsets, change)
        # A team made here gets the default policy even when its inline was left untouched.
        RetentionPolicy.objects.get_or_create(team=form.instance)


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "team", "role", "joined_at"]
    list_filter = ["team", "role"]
    search_fields = ["user__email"]
    raw_id_fields = ["user"]


@admin.register(Invitation)
class InvitationAdmin(admin.ModelAdmin):
    list_display = ["email", "team", "invited_by", "created_at", "accepted_at"]
    list_filter = ["team"]
    search_fields = ["email"]
    # The token is a bearer secret: it joins whoever holds it to the team.
    exclude = ["token"]
    readonly_fields = ["invited_by", "accepted_at"]


@admin.register(RetentionPolicy)
class RetentionPolicyAdmin(admin.ModelAdmin):
    list_display = [
        "team",
        "body_cache_days",
        "metadata_days",
        "deleted_engagement_days",
        "log_attachments",
        "attachment_max_mb",
    ]
    list_filter = ["team", "log_attachments"]
    fieldsets = [
        (None, {"fields": ["team"]}),
        (
            "Mailbox sync data",
            {
                "fields": ["body_cache_days", "metadata_days"],
                "description": "Defaults: bodies 7 days (R3), metadata 60 days (R4).",
            },
        ),
        (
            "Timeline",
            {
                "fields": ["deleted_engagement_days", "log_attachments", "attachment_max_mb"],
                "description": (
                    "Defaults: deleted engagements restorable 90 days (R2); attachments on, "
                    "for email under 50 MB (L5). Sequence email is kept until the team is "
                    "deleted (R1)."
                ),
            },
        ),
    ]
