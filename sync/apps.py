from django.apps import AppConfig, apps
from django.db.models.signals import post_migrate


def _upsert_schedules(sender: AppConfig, **kwargs: object) -> None:
    from .schedules import setup_schedules

    setup_schedules()


class SyncConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "sync"
    verbose_name = "Mailbox sync"

    def ready(self) -> None:
        # After every migrate: a deployment that follows the README syncs and purges. (Sent
        # for each app with models: this one has none; django_q's holds the schedules.)
        post_migrate.connect(_upsert_schedules, sender=apps.get_app_config("django_q"))
