from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import include, path


def home(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        return redirect("contacts:contact_list")
    return render(request, "home.html")


urlpatterns = [
    path("", home, name="home"),
    path("accounts/", include("allauth.urls")),
    path("team/", include("teams.urls")),
    path("mailboxes/", include("mailboxes.urls")),
    path("push/", include("sync.urls")),
    path("", include("contacts.urls")),
    path("", include("engagements.urls")),
    path("admin/", admin.site.urls),
]

admin.site.site_header = "Threadline administration"
admin.site.site_title = "Threadline admin"
