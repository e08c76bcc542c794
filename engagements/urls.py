from django.urls import path

from . import views

app_name = "engagements"
urlpatterns = [
    # The records' detail pages are their timelines, so they live here (imports go
    # engagements -> contacts, never back).
    path("contacts/<int:pk>/", views.contact_detail, name="contact_detail"),
    path("companies/<int:pk>/", views.company_detail, name="company_detail"),
    path("deals/<int:pk>/", views.deal_detail, name="deal_detail"),
    path("emails/<int:pk>/delete/", views.engagement_delete, name="engagement_delete"),
    path("emails/<int:pk>/restore/", views.engagement_restore, name="engagement_restore"),
    path("attachments/<int:pk>/", views.attachment_download, name="attachment_download"),
    path("contacts/<int:pk>/email/", views.compose, {"kind": "contact"}, name="compose_contact"),
    path(
        "contacts/<int:pk>/timeline/version/",
        views.timeline_version_view,
        {"kind": "contact"},
        name="timeline_version_contact",
    ),  # fmt: skip
    path(
        "companies/<int:pk>/timeline/version/",
        views.timeline_version_view,
        {"kind": "company"},
        name="timeline_version_company",
    ),  # fmt: skip
    path(
        "deals/<int:pk>/timeline/version/",
        views.timeline_version_view,
        {"kind": "deal"},
        name="timeline_version_deal",
    ),  # fmt: skip
    path("companies/<int:pk>/email/", views.compose, {"kind": "company"}, name="compose_company"),
    path("deals/<int:pk>/email/", views.compose, {"kind": "deal"}, name="compose_deal"),
    path("emails/deleted/", views.recently_deleted, name="recently_deleted"),
    path("emails/<int:pk>/retry/", views.engagement_retry, name="engagement_retry"),
    path("email-templates/", views.template_list, name="template_list"),
    path("email-templates/new/", views.template_edit, name="template_create"),
    path("email-templates/<int:pk>/", views.template_edit, name="template_update"),
    path("email-templates/<int:pk>/delete/", views.template_delete, name="template_delete"),
    path("email-templates/send/", views.send_template_view, name="send_template"),
]
