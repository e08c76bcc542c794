from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _upsert_schedules(sender: AppConfig, **kwargs: object) -> None:
    from .schedules import setup_schedules

    setup_schedules()


class EngagementsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "engagements"

    def ready(self) -> None:
        from . import purge  # noqa: F401 - connects the attachment-file cleanup signal

        # After every migrate: a deployment that follows the README syncs and purges.
        post_migrate.connect(_upsert_schedules, sender=self)
