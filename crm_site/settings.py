"""Threadline settings: the only settings module, every value read from the environment.

Defaults suit a laptop (SQLite, the ORM broker, DEBUG on). Production sets DEBUG=false and
must then give SECRET_KEY and CRM_ENCRYPTION_KEYS; `.env.example` lists every variable.
"""

from __future__ import annotations

import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _load_dotenv(path: Path) -> None:
    """Read KEY=value lines from `.env` without overriding the real environment."""
    if not path.is_file():
        return
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        os.environ.setdefault(key.strip(), value.strip().strip("'\""))


# CRM_ENV_FILE points elsewhere (or at /dev/null to read none).
_load_dotenv(Path(os.environ.get("CRM_ENV_FILE", BASE_DIR / ".env")))


def env_str(name: str, default: str | None = None) -> str:
    """Return the variable, or `default`; raise when neither exists."""
    value = os.environ.get(name, default)
    if value is None:
        raise ImproperlyConfigured(f"Set the {name} environment variable.")
    return value


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    if raw.strip().lower() in _TRUE:
        return True
    if raw.strip().lower() in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be true or false, not {raw!r}.")


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a whole number, not {raw!r}.") from None


def env_list(name: str, default: str | None = "") -> list[str]:
    return [item.strip() for item in env_str(name, default).split(",") if item.strip()]


DEBUG = env_bool("DEBUG", False)

# Development keys are only usable with DEBUG on; production must provide its own.
_DEV_SECRET_KEY = "dev-only-insecure-secret-key-change-me-0123456789abcdefghijklmnop"
_DEV_ENCRYPTION_KEY = "ZGV2LW9ubHktaW5zZWN1cmUtZW5jcnlwdGlvbi1rZXk="
SECRET_KEY = env_str("SECRET_KEY", _DEV_SECRET_KEY if DEBUG else None)

# Fernet keys for mailbox credentials, newest first: add a new key at the front to rotate,
# then run `manage.py rotate_credentials` and drop the old key (SPEC S1).
CRM_ENCRYPTION_KEYS = env_list("CRM_ENCRYPTION_KEYS", _DEV_ENCRYPTION_KEY if DEBUG else None)
if not CRM_ENCRYPTION_KEYS:
    raise ImproperlyConfigured("CRM_ENCRYPTION_KEYS must hold at least one Fernet key.")


def _published_keys() -> set[str]:
    """Keys anyone can read: ours above and the ones `.env.example` ships with."""
    published = {_DEV_SECRET_KEY, _DEV_ENCRYPTION_KEY}
    example = BASE_DIR / ".env.example"
    if example.is_file():
        for line in example.read_text().splitlines():
            name, _, value = line.partition("=")
            if name.strip() in {"SECRET_KEY", "CRM_ENCRYPTION_KEYS"}:
                published.update(v.strip() for v in value.split(",") if v.strip())
    return published


if not DEBUG:
    # A published key makes the encrypted mailbox passwords as good as plain text (SPEC S1):
    # refuse to start rather than run with one.
    _generate = "generate one with: python3 -c 'import secrets; print(secrets.token_urlsafe(50))'"
    if SECRET_KEY in _published_keys() or len(SECRET_KEY) < 40:
        raise ImproperlyConfigured(
            f"SECRET_KEY is the published example key or shorter than 40 characters; {_generate}"
        )
    for _key in CRM_ENCRYPTION_KEYS:
        if _key in _published_keys():
            raise ImproperlyConfigured(
                "CRM_ENCRYPTION_KEYS holds the published example key; generate one with: "
                "python3 -c 'from cryptography.fernet import Fernet; "
                "print(Fernet.generate_key().decode())'"
            )

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "allauth",
    "allauth.account",
    "allauth.socialaccount",
    "allauth.socialaccount.providers.google",
    "allauth.socialaccount.providers.microsoft",
    "django_q",
    "teams",
    "contacts",
    "mailboxes",
    "engagements",
    "sync",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    "allauth.account.middleware.AccountMiddleware",
    "crm_site.tenancy.TeamMiddleware",
]

ROOT_URLCONF = "crm_site.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "mailboxes.context_processors.disconnected_mailboxes",
            ],
        },
    },
]

WSGI_APPLICATION = "crm_site.wsgi.application"

DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", "") or f"sqlite:///{BASE_DIR / 'db.sqlite3'}",
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 0),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the web server and the qcluster write without "database is locked".
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# django-allauth: email is the login; signing up creates a team (teams.adapters).
ACCOUNT_LOGIN_METHODS = {"email"}
ACCOUNT_SIGNUP_FIELDS = ["email*", "password1*", "password2*"]
# Mandatory verification is what lets sign-up hide whether an address already has an
# account (allauth's enumeration prevention): an existing address gets an email, and the
# page says the same as for a new one. An invitation's address counts as verified.
ACCOUNT_EMAIL_VERIFICATION = env_str("ACCOUNT_EMAIL_VERIFICATION", "mandatory")
ACCOUNT_PREVENT_ENUMERATION = True
ACCOUNT_LOGIN_ON_EMAIL_CONFIRMATION = True
# Failed logins: 10 a minute from one address, and 5 in 5 minutes for one account from one
# address (teams.adapters keys them by both): a stranger failing on purpose cannot lock
# the account's owner out, and a guesser waits 5 minutes after 5 tries.
ACCOUNT_RATE_LIMITS = {"login_failed": "10/m/ip,5/5m/key"}
# Behind reverse proxies, how many of them append to X-Forwarded-For: the client's address
# (rate limits count by it) is read that many hops from the end. 0: REMOTE_ADDR.
ALLAUTH_TRUSTED_PROXY_COUNT = env_int("CRM_TRUSTED_PROXY_COUNT", 0)
ACCOUNT_ADAPTER = "teams.adapters.TeamAccountAdapter"
ACCOUNT_LOGOUT_ON_GET = False
# Gmail and Microsoft 365 mailboxes connect over OAuth through allauth's providers
# (mailboxes/oauth.py). The tokens go to the mailbox, encrypted (SPEC S1): allauth keeps none.
GOOGLE_CLIENT_ID = env_str("GOOGLE_CLIENT_ID", "")
GOOGLE_CLIENT_SECRET = env_str("GOOGLE_CLIENT_SECRET", "")
MICROSOFT_CLIENT_ID = env_str("MICROSOFT_CLIENT_ID", "")
MICROSOFT_CLIENT_SECRET = env_str("MICROSOFT_CLIENT_SECRET", "")
MICROSOFT_TENANT = env_str("MICROSOFT_TENANT", "common")
MICROSOFT_LOGIN_URL = env_str("MICROSOFT_LOGIN_URL", "https://login.microsoftonline.com")
MICROSOFT_GRAPH_URL = env_str("MICROSOFT_GRAPH_URL", "https://graph.microsoft.com")
SOCIALACCOUNT_STORE_TOKENS = False
SOCIALACCOUNT_ADAPTER = "mailboxes.oauth.MailboxSocialAccountAdapter"
SOCIALACCOUNT_EMAIL_AUTHENTICATION = False
SOCIALACCOUNT_PROVIDERS = {
    "google": {
        "APP": {"client_id": GOOGLE_CLIENT_ID, "secret": GOOGLE_CLIENT_SECRET},
        # Read and send mail, nothing else of the account; offline: a refresh token.
        "SCOPE": [
            "openid",
            "email",
            "https://www.googleapis.com/auth/gmail.readonly",
            "https://www.googleapis.com/auth/gmail.send",
        ],
        "AUTH_PARAMS": {"access_type": "offline", "prompt": "consent"},
        "OAUTH_PKCE_ENABLED": True,
    },
    "microsoft": {
        "APP": {
            "client_id": MICROSOFT_CLIENT_ID,
            "secret": MICROSOFT_CLIENT_SECRET,
            "settings": {
                "tenant": MICROSOFT_TENANT,
                "login_url": MICROSOFT_LOGIN_URL,
                "graph_url": MICROSOFT_GRAPH_URL,
            },
        },
        # Read and send mail (offline: a refresh token); User.Read for the address.
        "SCOPE": ["User.Read", "offline_access", "Mail.Read", "Mail.Send"],
        "AUTH_PARAMS": {"prompt": "select_account"},
        "OAUTH_PKCE_ENABLED": True,
    },
}
# What the providers need besides the tokens (client app, endpoints: Google's by default).
CRM_OAUTH = {
    "gmail": {
        "client_id": GOOGLE_CLIENT_ID,
        "client_secret": GOOGLE_CLIENT_SECRET,
        "token_uri": env_str("GOOGLE_TOKEN_URI", "https://oauth2.googleapis.com/token"),
        "api_root": env_str("GMAIL_API_ROOT", "https://gmail.googleapis.com/"),
        # The keys that sign Pub/Sub's push tokens.
        "certs_uri": env_str("GOOGLE_CERTS_URI", "https://www.googleapis.com/oauth2/v1/certs"),
    },
    "graph": {
        "client_id": MICROSOFT_CLIENT_ID,
        "client_secret": MICROSOFT_CLIENT_SECRET,
        "token_uri": f"{MICROSOFT_LOGIN_URL}/{MICROSOFT_TENANT}/oauth2/v2.0/token",
        "api_root": f"{MICROSOFT_GRAPH_URL}/",
    },
}
LOGIN_REDIRECT_URL = "home"
LOGIN_URL = "account_login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
MEDIA_URL = "/media/"
MEDIA_ROOT = Path(env_str("MEDIA_ROOT", "") or BASE_DIR / "media")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}

EMAIL_BACKEND = env_str(
    "EMAIL_BACKEND",
    "django.core.mail.backends.console.EmailBackend"
    if DEBUG
    else "django.core.mail.backends.smtp.EmailBackend",
)
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "Threadline <noreply@localhost>")

# django-q2: the ORM broker by default (one machine, SQLite); Redis when REDIS_URL is set.
REDIS_URL = env_str("REDIS_URL", "")
_TASK_TIMEOUT = env_int("CRM_Q_TIMEOUT", 600)
Q_CLUSTER: dict[str, object] = {
    "name": "threadline",
    "workers": env_int("CRM_Q_WORKERS", 2),
    "timeout": _TASK_TIMEOUT,
    # django-q2 requires retry > timeout, or a slow task runs twice.
    "retry": _TASK_TIMEOUT + 60,
    "max_attempts": 3,
    "catch_up": False,
    "label": "Tasks",
    # A large sync reads ahead in a child process (sync/readahead.py); daemonic
    # workers may not have children.
    "daemonize_workers": False,
}
if REDIS_URL:
    Q_CLUSTER["redis"] = REDIS_URL
else:
    Q_CLUSTER["orm"] = "default"

# Rate limits (allauth's login limits, connection attempts) count in this cache: Redis when
# REDIS_URL is set, so every process and machine shares the counts; otherwise files under
# CRM_CACHE_DIR, shared by the processes of one machine.
if REDIS_URL:
    CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}
    }
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": env_str("CRM_CACHE_DIR", "") or str(BASE_DIR / "var" / "cache"),
        }
    }

# Size limits for CSV imports and uploads.
CRM_IMPORT_MAX_ROWS = env_int("CRM_IMPORT_MAX_ROWS", 10_000)
CRM_IMPORT_MAX_MB = env_int("CRM_IMPORT_MAX_MB", 10)
DATA_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024

# Production hardening (SPEC S2): secure cookies and HSTS whenever DEBUG is off.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", not DEBUG)
SESSION_COOKIE_SECURE = not DEBUG
CSRF_COOKIE_SECURE = not DEBUG
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0 if DEBUG else 31_536_000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = not DEBUG
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# Content-Security-Policy (django-csp): scripts and styles only from our own static files,
# never inline, so HTML that slips through the email sanitiser cannot run. Remote images in
# email are HTTPS only, and loaded only when the reader asks (engagements.sanitize). Forms
# are not limited: connecting Gmail posts to allauth, which redirects to Google. The admin
# (staff only) keeps Django's own inline scripts.
CONTENT_SECURITY_POLICY = {
    "EXCLUDE_URL_PREFIXES": ["/admin/"],
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "https:", "data:"],
        "connect-src": ["'self'"],
        "font-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "frame-ancestors": ["'none'"],
    },
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {
        "django_q": {"level": env_str("LOG_LEVEL_TASKS", "WARNING")},
        # aiosmtpd (run_inbound_smtp) logs every SMTP command at INFO.
        "mail.log": {"level": "WARNING"},
    },
}

# Mail servers (SPEC S2): extra CA certificates to trust (a PEM file, for company servers
# with their own CA), timeouts, and plain-text IMAP/SMTP only for loopback test servers.
CRM_MAIL_CA_FILE = env_str("CRM_MAIL_CA_FILE", "")
CRM_MAIL_TIMEOUT = env_int("CRM_MAIL_TIMEOUT", 30)
CRM_ALLOW_PLAINTEXT_LOOPBACK = env_bool("CRM_ALLOW_PLAINTEXT_LOOPBACK", False)
# Mail servers on loopback, private, link-local and other non-public addresses are refused
# (the connect form must not probe the deployment's own network) unless this allows them:
# local test servers and demos only.
CRM_ALLOW_PRIVATE_MAIL_HOSTS = env_bool("CRM_ALLOW_PRIVATE_MAIL_HOSTS", False)
CRM_SYNC_INTERVAL_MINUTES = env_int("CRM_SYNC_INTERVAL_MINUTES", 5)
# A sync's lease (one sync per mailbox): renewed with every batch and, on PostgreSQL, every
# third of it while the sync runs; a sync that died holding it blocks its mailbox this long.
CRM_SYNC_LEASE_SECONDS = env_int("CRM_SYNC_LEASE_SECONDS", 60)
# The mailbox watchers (manage.py watch_mailboxes): how often each looks at the others and
# renews its mailboxes, how long a silent watcher keeps them, and how often a watched mailbox
# is polled when neither IDLE nor push announces its changes (those are synced anyway every
# CRM_SYNC_INTERVAL_MINUTES).
CRM_WATCH_TICK_SECONDS = env_int("CRM_WATCH_TICK_SECONDS", 5)
CRM_WATCH_TTL_SECONDS = env_int("CRM_WATCH_TTL_SECONDS", 30)
CRM_WATCH_POLL_SECONDS = env_int("CRM_WATCH_POLL_SECONDS", 60)
# How often a watched IMAP mailbox's sent folder is looked at (STATUS between two IDLEs on the
# inbox): mail the user sends from their own mail client is logged within this.
CRM_WATCH_SENT_SECONDS = env_int("CRM_WATCH_SENT_SECONDS", 20)
# Push instead of polling (sync/push.py), off unless configured. Gmail: the Pub/Sub topic
# Gmail publishes to (projects/<project>/topics/<topic>), whose push subscription delivers to
# <CRM_SITE_URL>/push/gmail/ with authentication by this service account (and this audience,
# by default the endpoint's URL). Microsoft 365: Graph posts to <CRM_SITE_URL>/push/graph/,
# which must then be reachable from the internet over HTTPS.
CRM_GMAIL_PUSH_TOPIC = env_str("CRM_GMAIL_PUSH_TOPIC", "")
CRM_GMAIL_PUSH_SERVICE_ACCOUNT = env_str("CRM_GMAIL_PUSH_SERVICE_ACCOUNT", "")
CRM_GMAIL_PUSH_AUDIENCE = env_str("CRM_GMAIL_PUSH_AUDIENCE", "")
CRM_GRAPH_PUSH = env_bool("CRM_GRAPH_PUSH", False)
if CRM_GMAIL_PUSH_TOPIC and not CRM_GMAIL_PUSH_SERVICE_ACCOUNT:
    raise ImproperlyConfigured(
        "CRM_GMAIL_PUSH_TOPIC needs CRM_GMAIL_PUSH_SERVICE_ACCOUNT: the service account of the "
        "push subscription, whose tokens prove a push comes from Pub/Sub."
    )
# How many syncs one watcher runs at once (each uses a database connection while it runs).
CRM_WATCH_SYNCS = env_int("CRM_WATCH_SYNCS", 4)
# The retention purge (SPEC R2-R4): daily by default.
CRM_PURGE_INTERVAL_MINUTES = env_int("CRM_PURGE_INTERVAL_MINUTES", 24 * 60)
# Our own mail domain: the right-hand side of the Message-IDs we create (SPEC U) and of the
# teams' logging addresses (L4), which `run_inbound_smtp` receives.
CRM_MAIL_DOMAIN = env_str("CRM_MAIL_DOMAIN", "threadline.localhost")
CRM_INBOUND_MAX_MB = env_int("CRM_INBOUND_MAX_MB", 50)
# A mailbox whose server keeps failing is retried with backoff, then disconnected (SPEC D1).
CRM_DISCONNECT_AFTER_HOURS = env_int("CRM_DISCONNECT_AFTER_HOURS", 24)
# The site's address, for links in notification emails sent by background tasks.
CRM_SITE_URL = env_str("CRM_SITE_URL", "http://127.0.0.1:8000").rstrip("/")
