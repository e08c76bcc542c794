from django.apps import AppConfig


class EngagementsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "engagements"

    def ready(self) -> None:
        from . import purge  # noqa: F401 - connects the attachment-file cleanup signal
