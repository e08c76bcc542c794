"""Settings come from the environment; production settings pass Django's deploy checks."""

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
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

    assert "'orm': 'default'" in orm.stdout, orm.stderr
    assert "'redis': 'redis://127.0.0.1:6399/0'" in redis.stdout
    assert "'orm'" not in redis.stdout


def test_database_url_selects_postgresql():
    result = _setting(
        "DATABASES['default']['ENGINE']",
        **{**PRODUCTION, "DATABASE_URL": "postgres://u:p@127.0.0.1:5432/crm"},
    )

    assert result.stdout.strip() == "django.db.backends.postgresql", result.stderr


def test_production_refuses_the_example_keys():
    # .env.example as a production .env, with only DEBUG turned off.
    env = {"CRM_ENV_FILE": str(ROOT / ".env.example"), "DEBUG": "false"}

    result = manage("check", **env)

    assert result.returncode != 0
    assert "SECRET_KEY is the published example key" in result.stderr


def test_production_refuses_the_example_encryption_key():
    example_key = next(
        line.partition("=")[2]
        for line in (ROOT / ".env.example").read_text().splitlines()
        if line.startswith("CRM_ENCRYPTION_KEYS=")
    )

    result = manage("check", **{**PRODUCTION, "CRM_ENCRYPTION_KEYS": example_key})

    assert result.returncode != 0
    assert "CRM_ENCRYPTION_KEYS holds the published example key" in result.stderr


@pytest.mark.parametrize("secret_key", ["", "short-but-not-empty"])
def test_production_refuses_an_empty_or_short_secret_key(secret_key):
    result = manage("check", **{**PRODUCTION, "SECRET_KEY": secret_key})

    assert result.returncode != 0
    assert "shorter than 40 characters" in result.stderr


def test_first_setup_writes_an_env_with_fresh_keys_that_production_accepts(tmp_path):
    (tmp_path / ".env.example").write_bytes((ROOT / ".env.example").read_bytes())
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")

    made = subprocess.run(
        ["bash", "-c", f"source {ROOT / 'scripts/_setup.sh'} && make_env"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip

    assert made.returncode == 0, made.stderr
    written = dict(
        line.partition("=")[::2]
        for line in (tmp_path / ".env").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert (tmp_path / ".env").stat().st_mode & 0o077 == 0
    env = {"CRM_ENV_FILE": str(tmp_path / ".env"), "DEBUG": "false", "ALLOWED_HOSTS": "x.test"}
    check = manage("check", "--deploy", **env)
    assert check.returncode == 0, check.stderr
    Fernet(written["CRM_ENCRYPTION_KEYS"].encode())


def _variables_read_by_settings() -> set[str]:
    """Every environment variable crm_site/settings.py reads, however the call is written."""
    readers = {"env_str", "env_bool", "env_int", "env_list", "get", "getenv"}
    tree = ast.parse((ROOT / "crm_site" / "settings.py").read_text())
    names = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and getattr(node.func, "id", getattr(node.func, "attr", None)) in readers
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
            and node.args[0].value.isupper()
        ):
            names.add(node.args[0].value)
    return names


def _variables_in_env_example() -> set[str]:
    # "NAME=value", or commented out ("# NAME=value") where the default is best left alone.
    text = (ROOT / ".env.example").read_text()
    return set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", text, flags=re.MULTILINE)) | set(
        re.findall(r"^# ([A-Z][A-Z0-9_]+) \(real environment only\)", text, flags=re.MULTILINE)
    )


def _variables_in_readme_table() -> set[str]:
    readme = (ROOT / "README.md").read_text()
    table = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1] for line in table.splitlines() if line.startswith("| `")]
    return {name for row in rows for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", row)}


def test_env_example_names_every_variable_the_settings_read():
    read = _variables_read_by_settings()

    assert {"SECRET_KEY", "EMAIL_BACKEND", "CRM_ENV_FILE"} <= read  # the parser finds them all
    assert read - _variables_in_env_example() == set()


def test_env_example_names_no_variable_the_settings_ignore():
    assert _variables_in_env_example() - _variables_read_by_settings() == set()


def test_readme_table_lists_exactly_the_variables_of_env_example():
    assert _variables_in_readme_table() == _variables_in_env_example()
