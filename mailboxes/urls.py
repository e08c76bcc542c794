from django.urls import path

from . import views

app_name = "mailboxes"
urlpatterns = [
    path("", views.mailbox_list, name="mailbox_list"),
    path("connect/", views.mailbox_connect, name="mailbox_connect"),
    path("<int:pk>/", views.mailbox_detail, name="mailbox_detail"),
    path("<int:pk>/identity/", views.mailbox_identity, name="mailbox_identity"),
    path("<int:pk>/status/", views.mailbox_status, name="mailbox_status"),
    path("<int:pk>/sync/", views.mailbox_sync, name="mailbox_sync"),
    path("<int:pk>/resync/", views.mailbox_resync, name="mailbox_resync"),
    path("<int:pk>/delete/", views.mailbox_delete, name="mailbox_delete"),
]
