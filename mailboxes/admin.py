from django.contrib import admin

from .models import Folder, Mailbox, MessageMeta, QuarantinedMessage


@admin.register(Mailbox)
class MailboxAdmin(admin.ModelAdmin):
    list_display = ["email_address", "kind", "state", "owner", "team", "created_at"]
    list_filter = ["team", "kind", "state"]
    search_fields = ["email_address"]
    # Credentials are not editable (so never in the form) and never listed (SPEC S1).
    fields = ["team", "owner", "kind", "email_address", "state", "last_error"]
    readonly_fields = ["team", "owner", "kind", "email_address"]

    def get_queryset(self, request):  # type: ignore[no-untyped-def]
        # Never decrypt what the admin will not show.
        return super().get_queryset(request).defer("credentials")

    def has_add_permission(self, request):  # type: ignore[no-untyped-def]
        return False  # mailboxes are connected by their owners, through the connect flow


@admin.register(Folder)
class FolderAdmin(admin.ModelAdmin):
    list_display = ["name", "role", "mailbox", "synced_count", "total_count", "last_synced_at"]
    list_filter = ["team", "role"]
    search_fields = ["mailbox__email_address", "name"]
    readonly_fields = ["team", "mailbox", "cursor", "synced_count", "total_count"]


@admin.register(MessageMeta)
class MessageMetaAdmin(admin.ModelAdmin):
    """Support triage (SPEC R4): a mailbox's recent headers, never a body."""

    list_display = ["received_at", "from_address", "subject", "folder", "size", "flags", "team"]
    list_filter = ["team", "mailbox"]
    search_fields = ["message_id", "subject", "from_address"]
    date_hierarchy = "received_at"
    list_select_related = ["folder"]

    def has_add_permission(self, request):  # type: ignore[no-untyped-def]
        return False

    def has_change_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False


@admin.register(QuarantinedMessage)
class QuarantinedMessageAdmin(admin.ModelAdmin):
    """Support triage: messages a sync could not log, and why."""

    list_display = ["failed_at", "mailbox", "from_address", "subject", "reason", "attempts", "team"]
    list_filter = ["team", "mailbox"]
    search_fields = ["message_id", "subject", "from_address", "reason"]
    list_select_related = ["mailbox"]
    readonly_fields = [f.name for f in QuarantinedMessage._meta.fields]

    def has_add_permission(self, request):  # type: ignore[no-untyped-def]
        return False
