"""Settings come from the environment; production settings pass Django's deploy checks."""

import os
import subprocess
import sys
from pathlib import Path

from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parent.parent

PRODUCTION = {
    "CRM_ENV_FILE": "/dev/null",
    "DEBUG": "false",
    "SECRET_KEY": "x7#kq2!prod-" + "a9Zb3" * 12,
    "CRM_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
    "ALLOWED_HOSTS": "crm.example.com",
    "DATABASE_URL": "sqlite:////tmp/threadline-deploy-check.sqlite3",
}


def manage(*args, **env):
    skip = {*PRODUCTION, "REDIS_URL", "DJANGO_ALLOW_ASYNC_UNSAFE"}
    clean = {k: v for k, v in os.environ.items() if k not in skip}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_production_settings_pass_the_deploy_check():
    result = manage("check", "--deploy", "--fail-level", "WARNING", **PRODUCTION)

    # HSTS preload is left to the operator (SECURE_HSTS_PRELOAD): submitting a domain to the
    # browsers' preload list is a commitment a default should not make.
    reported = [line for line in result.stderr.splitlines() if line.startswith("?:")]
    assert [line.split()[1] for line in reported] == ["(security.W021)"], result.stderr


def test_production_refuses_to_start_without_a_secret_key():
    env = {k: v for k, v in PRODUCTION.items() if k != "SECRET_KEY"}

    result = manage("check", **env)

    assert result.returncode != 0
    assert "Set the SECRET_KEY environment variable" in result.stderr


def test_malformed_boolean_is_reported():
    result = manage("check", **{**PRODUCTION, "DEBUG": "maybe"})

    assert result.returncode != 0
    assert "DEBUG must be true or false" in result.stderr


def _setting(name, **env):
    code = f"from django.conf import settings; print(settings.{name})"
    return manage("shell", "--no-imports", "-c", code, **env)


def test_task_broker_is_the_orm_by_default_and_redis_when_configured():
    orm = _setting("Q_CLUSTER", **PRODUCTION)
    redis = _setting("Q_CLUSTER", **PRODUCTION, REDIS_URL="redis://127.0.0.1:6399/0")

    assert "'orm': 'default'" in orm.stdout
    assert "'redis': 'redis://127.0.0.1:6399/0'" in redis.stdout
    assert "'orm'" not in redis.stdout


def test_database_url_selects_postgresql():
    result = _setting(
        "DATABASES['default']['ENGINE']",
        **{**PRODUCTION, "DATABASE_URL": "postgres://u:p@127.0.0.1:5432/crm"},
    )

    assert result.stdout.strip() == "django.db.backends.postgresql"
