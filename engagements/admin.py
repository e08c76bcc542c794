from django.contrib import admin

from .models import Attachment, EmailEngagement, Thread, TrackedMessageId


class AttachmentInline(admin.TabularInline):
    model = Attachment
    extra = 0
    fields = ["filename", "content_type", "size"]
    readonly_fields = fields


@admin.register(EmailEngagement)
class EmailEngagementAdmin(admin.ModelAdmin):
    list_display = ["subject", "direction", "from_address", "sent_at", "team", "deleted_at"]
    list_filter = ["team", "direction", "source"]
    search_fields = ["subject", "message_id", "from_address"]
    date_hierarchy = "sent_at"
    raw_id_fields = ["thread", "contacts", "companies", "deals", "logged_by", "deleted_by"]
    inlines = [AttachmentInline]


@admin.register(Thread)
class ThreadAdmin(admin.ModelAdmin):
    list_display = ["subject", "team", "created_at"]
    list_filter = ["team"]
    search_fields = ["subject"]


@admin.register(TrackedMessageId)
class TrackedMessageIdAdmin(admin.ModelAdmin):
    list_display = ["message_id", "thread", "team", "created_at"]
    list_filter = ["team"]
    search_fields = ["message_id"]
    raw_id_fields = ["thread", "engagement"]


@admin.register(Attachment)
class AttachmentAdmin(admin.ModelAdmin):
    list_display = ["filename", "content_type", "size", "team", "created_at"]
    list_filter = ["team"]
    search_fields = ["filename"]
    raw_id_fields = ["engagement"]
