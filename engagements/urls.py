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
]
