from django.urls import path

from . import views

app_name = "sync"
urlpatterns = [
    path("gmail/", views.gmail_push, name="push_gmail"),
    path("graph/", views.graph_push, name="push_graph"),
    path("graph/lifecycle/", views.graph_push, name="push_graph_lifecycle"),
]
