from django.contrib import admin

from .models import Mailbox


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
