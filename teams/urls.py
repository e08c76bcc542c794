from django.urls import path

from . import views

app_name = "teams"
urlpatterns = [
    path("", views.team_settings, name="team_settings"),
    path("new/", views.team_create, name="team_create"),
    path("invitations/", views.invitation_create, name="invitation_create"),
    path("invitations/<int:pk>/revoke/", views.invitation_revoke, name="invitation_revoke"),
    path("join/<str:token>/", views.invitation_accept, name="invitation_accept"),
]
