"""Django settings for prefstudio. Every value comes from the environment (or a `.env` file)."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"

env = environ.Env()
# Values already in the environment win over the file; PREFSTUDIO_ENV_FILE=/dev/null skips it.
_env_file = Path(os.environ.get("PREFSTUDIO_ENV_FILE", BASE_DIR / ".env"))
if _env_file.is_file():
    env.read_env(str(_env_file))

DEBUG = env.bool("DEBUG", default=False)

# Keys that must never protect a real deployment.
_PLACEHOLDER_KEYS = {"", "change-me", "changeme", "secret", "insecure", "dev"}
SECRET_KEY = env.str("SECRET_KEY", default="")
if not DEBUG and (
    SECRET_KEY.strip().lower() in _PLACEHOLDER_KEYS
    or SECRET_KEY.startswith("django-insecure")
    or len(SECRET_KEY) < 32
    or len(set(SECRET_KEY)) < 5
):
    raise ImproperlyConfigured(
        "SECRET_KEY must be set to a long random value when DEBUG is off (at least 32 characters, "
        "not a placeholder). Generate one with: "
        "python -c 'import secrets; print(secrets.token_urlsafe(50))'"
    )
if not SECRET_KEY:
    SECRET_KEY = "django-insecure-local-development-only"

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django_htmx",
    "template_partials",
    "csp",
    "axes",
    "prefstudio",  # its migrations remove the session table it once had
    # Before django_rq: training's `rqworker` command (JSON serializer by default) wins.
    "labeling",
    "training",
    "generation",
    "evaluation",
    "api",
    # django-ninja: its Swagger UI files (static/ninja/) serve the API docs from our own origin.
    "ninja",
    "django_rq",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    # Oversized bodies refused before they are read; Permissions-Policy on every response.
    "prefstudio.middleware.SecurityHeadersMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # Last, as django-axes asks: it turns a locked-out login into the lockout page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "prefstudio.urls"
WSGI_APPLICATION = "prefstudio.wsgi.application"

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
                "prefstudio.roles.navigation",
            ],
        },
    },
]

DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'prefstudio.sqlite3'}")}
DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # psycopg 3 prepares a statement after its 5th run on a connection: the workbench's statements then
    # skip parsing and planning, most of PostgreSQL's time per judgment. Behind a pooler without
    # prepared-statement support (PgBouncer before 1.21 in transaction mode) set
    # DATABASE_PREPARE_THRESHOLD=off.
    _prepare = env.str("DATABASE_PREPARE_THRESHOLD", default="5")
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        server_side_binding=True,
        prepare_threshold=None if _prepare.lower() in ("off", "none", "") else int(_prepare),
        # No JIT compilation: it spends tens of milliseconds compiling each large query (the export
        # preview's two scans of 100,000 rows) and wins less back; the app runs no long analytics.
        options=env.str("DATABASE_SERVER_OPTIONS", default="-c jit=off"),
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# Django's own sessions, kept in the database and read from Redis (no query per request while the cache
# holds them; a flushed Redis only costs a database read).
SESSION_ENGINE = "django.contrib.sessions.backends.cached_db"
SESSION_CACHE_ALIAS = "shared"
# django-axes first: it refuses a locked-out account or address before any password is checked.
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
# English only: without the translation machinery every URL reverse and template variable is cheaper.
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = env.path("STATIC_ROOT", default=BASE_DIR / "staticfiles")
STATICFILES_DIRS = [BASE_DIR / "static"]
MEDIA_URL = "media/"
MEDIA_ROOT = env.path("MEDIA_ROOT", default=VAR_DIR / "media")
ARTIFACT_ROOT = env.path("ARTIFACT_ROOT", default=VAR_DIR / "artifacts")
# Local copies of files that live in an object store: snapshots a worker trains on, the folder a run writes
# before it uploads, adapters a worker generates with (prefstudio.storage). Safe to delete when idle.
PREFSTUDIO_CACHE_DIR = env.path("PREFSTUDIO_CACHE_DIR", default=VAR_DIR / "cache")
# Object storage (prefstudio.storage): django-storages' own S3 settings, read from the environment. With a
# bucket named, imports and exports live under media/ and run artifacts under artifacts/ in that bucket
# (AWS S3, MinIO, Ceph, R2), and a GPU host needs no disk shared with the web app.
AWS_STORAGE_BUCKET_NAME = env.str("AWS_STORAGE_BUCKET_NAME", default="")
AWS_S3_ENDPOINT_URL = env.str("AWS_S3_ENDPOINT_URL", default="") or None
AWS_ACCESS_KEY_ID = env.str("AWS_ACCESS_KEY_ID", default="") or None
AWS_SECRET_ACCESS_KEY = env.str("AWS_SECRET_ACCESS_KEY", default="") or None
AWS_S3_REGION_NAME = env.str("AWS_S3_REGION_NAME", default="") or None
AWS_S3_ADDRESSING_STYLE = env.str("AWS_S3_ADDRESSING_STYLE", default="") or None
AWS_S3_SIGNATURE_VERSION = "s3v4"
AWS_S3_FILE_OVERWRITE = True  # our names are unique; a rewrite (a checkpoint) replaces the object
AWS_DEFAULT_ACL = None  # private objects; people get them through a permission-checked view
# A file opened whole (an import being read) spools to disk past this size instead of filling memory.
AWS_S3_MAX_MEMORY_SIZE = env.int("AWS_S3_MAX_MEMORY_SIZE", default=16 * 2**20)
# Downloads: streamed through the permission-checked view (default), or, with this on, that view answers
# with a redirect to a presigned URL valid this many seconds (the bucket must be reachable by browsers).
PREFSTUDIO_PRESIGNED_DOWNLOADS = env.bool("PREFSTUDIO_PRESIGNED_DOWNLOADS", default=False)
PREFSTUDIO_DOWNLOAD_URL_SECONDS = env.int("PREFSTUDIO_DOWNLOAD_URL_SECONDS", default=300)
if AWS_STORAGE_BUCKET_NAME:
    _S3 = "storages.backends.s3.S3Storage"
    _FILES = {
        "default": {"BACKEND": _S3, "OPTIONS": {"location": "media"}},
        "artifacts": {"BACKEND": _S3, "OPTIONS": {"location": "artifacts"}},
    }
else:
    # Folders that follow MEDIA_ROOT and ARTIFACT_ROOT (also when a test overrides them).
    _FILES = {
        "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
        "artifacts": {"BACKEND": "prefstudio.storage.ArtifactStorage"},
    }
STORAGES = {
    **_FILES,
    # Compressed but not hashed: tests and runserver need no collectstatic manifest, and the few
    # static files we ship change rarely (WhiteNoise serves them with a short max-age).
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

REDIS_URL = env.str("REDIS_URL", default="redis://127.0.0.1:6379/0")
CACHES = {
    # Per process: short-lived counts (pairs left per annotator) and rendered rubrics.
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    # Shared by every process, beside the job queues: sessions (SESSION_CACHE_ALIAS), users' roles
    # (prefstudio.roles) and who may open which project (labeling.access), each read on every request.
    # django-redis keeps one client per process (Django's own backend builds one per call, twice the
    # CPU of a read) and can delete keys by pattern (the tests start each test without them).
    # Redis is a cache here, never the only copy: when it does not answer, reads miss and writes are
    # dropped (IGNORE_EXCEPTIONS, logged), so sessions, roles and project access come from the database and
    # people can still log in, judge and review. Short socket timeouts bound what a silent Redis costs.
    "shared": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "prefstudio",
        "OPTIONS": {
            "IGNORE_EXCEPTIONS": True,
            "SOCKET_CONNECT_TIMEOUT": env.float("REDIS_CONNECT_TIMEOUT", default=0.5),
            "SOCKET_TIMEOUT": env.float("REDIS_SOCKET_TIMEOUT", default=1.0),
        },
    },
}
DJANGO_REDIS_LOG_IGNORED_EXCEPTIONS = True
DJANGO_REDIS_LOGGER = "prefstudio.shared_cache"
# The Review page recomputes its report at most this often while judgments stream in (it says "as of" and
# offers Refresh); a lead's own changes (exclusions, settings) show at once.
PREFSTUDIO_REVIEW_REFRESH_SECONDS = env.int("PREFSTUDIO_REVIEW_REFRESH_SECONDS", default=30)
# JSON API (api/): requests per token per window (N/s, N/min, N/hour, N/day, or e.g. 100/5min).
PREFSTUDIO_API_RATE = env.str("PREFSTUDIO_API_RATE", default="600/min")
PREFSTUDIO_TRAINING_QUEUE = env.str("PREFSTUDIO_TRAINING_QUEUE", default="gpu")
TRAINING_JOB_TIMEOUT = env.int("TRAINING_JOB_TIMEOUT", default=24 * 3600)
# Base models admins may train, as NAME=PATH: a local folder (relative to the project root; offered once
# it exists) or `hf:ORG/MODEL`, a name `from_pretrained` resolves on the GPU hosts. The default is the
# folder `manage.py prepare_demo_model` makes.
PREFSTUDIO_BASE_MODELS = {
    name.strip(): path.strip()
    for name, _, path in (
        entry.partition("=")
        for entry in env.list(
            "PREFSTUDIO_BASE_MODELS", default=["smollm2-135m-instruct=var/models/smollm2-135m-instruct"]
        )
    )
    if name.strip() and path.strip()
}
# The data check on the New run form tokenizes at most this many rows per file, within this many seconds.
PREFSTUDIO_DATA_CHECK_MAX_ROWS = env.int("PREFSTUDIO_DATA_CHECK_MAX_ROWS", default=20_000)
PREFSTUDIO_DATA_CHECK_SECONDS = env.int("PREFSTUDIO_DATA_CHECK_SECONDS", default=90)
# A running run's worker writes a heartbeat this often; after TRAINING_LOST_SECONDS without one the run
# is failed as "worker lost".
TRAINING_HEARTBEAT_SECONDS = env.int("TRAINING_HEARTBEAT_SECONDS", default=10)
TRAINING_LOST_SECONDS = env.int("TRAINING_LOST_SECONDS", default=45)
# Exports of more pairs than this run in a worker with a progress bar instead of inside the request.
PREFSTUDIO_EXPORT_SYNC_MAX_PAIRS = env.int("PREFSTUDIO_EXPORT_SYNC_MAX_PAIRS", default=20_000)
# JSON, not pickle: a job payload must never be able to run code when a worker loads it.
RQ_JOB_SERIALIZER = "rq.serializers.JSONSerializer"
# The job queues' connections give up connecting after 2 s (a request that enqueues then says the queue is
# unavailable); no read timeout, which would cut a worker's blocking wait for jobs.
_RQ_URL = REDIS_URL + ("&" if "?" in REDIS_URL else "?") + "socket_connect_timeout=2"
RQ_QUEUES = {
    "default": {
        "URL": _RQ_URL,
        "DEFAULT_TIMEOUT": env.int("RQ_DEFAULT_TIMEOUT", default=1800),
        "SERIALIZER": RQ_JOB_SERIALIZER,
    },
    PREFSTUDIO_TRAINING_QUEUE: {
        "URL": _RQ_URL,
        # RQ's 180 s default would kill any real training run.
        "DEFAULT_TIMEOUT": TRAINING_JOB_TIMEOUT,
        "SERIALIZER": RQ_JOB_SERIALIZER,
    },
}
# prefstudio.jobs.Worker: RQ's forking worker with our job machinery (connection hygiene, killed horses
# reported to their rows, periodic reaping); `manage.py rqworker` uses it.
RQ = {"COMMIT_MODE": "on_db_commit", "WORKER_CLASS": "prefstudio.jobs.Worker"}
RQ_SHOW_ADMIN_LINK = True

# Production hardening; every switch can be turned off from the environment (e.g. behind a
# proxy that terminates TLS on a private network).
_secure = not DEBUG
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=_secure)
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=_secure)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=_secure)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000 if _secure else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=_secure)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=_secure)
if env.bool("USE_X_FORWARDED_PROTO", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_REFERRER_POLICY = "same-origin"
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"

# Content-Security-Policy (django-csp): scripts, styles, fonts and images from our own origin only
# (htmx from django-htmx's static files, KaTeX vendored), no inline script or style attribute, never
# framed. KaTeX's layout sets element.style from script, which CSP allows.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}

# Login throttling (django-axes): after AXES_FAILURE_LIMIT failed logins for one account, or from one
# address, further attempts are refused for AXES_COOLOFF_MINUTES. Admins unlock in Django admin
# (Axes > Access attempts: delete the row) or with `manage.py axes_reset_username NAME` /
# `axes_reset_ip ADDRESS` / `axes_reset`.
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=10)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("AXES_COOLOFF_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_VERBOSE = False
# Behind the TLS proxy the client's address is the last one the proxy appended to X-Forwarded-For.
if env.bool("USE_X_FORWARDED_FOR", default=False):
    AXES_CLIENT_IP_CALLABLE = "prefstudio.middleware.forwarded_client_address"

# Uploads: Django's limits exclude file bodies, so datasets are also capped in the import form, and
# bodies declared larger are refused unread (prefstudio.middleware). Client file names are shortened
# before Django names its temporary file after them (prefstudio.uploads).
PREFSTUDIO_MAX_UPLOAD_BYTES = env.int("PREFSTUDIO_MAX_UPLOAD_BYTES", default=500 * 1024 * 1024)
FILE_UPLOAD_HANDLERS = [
    "prefstudio.uploads.ShortNameMemoryFileUploadHandler",
    "prefstudio.uploads.ShortNameTemporaryFileUploadHandler",
]
PREFSTUDIO_MAX_RECORD_BYTES = env.int("PREFSTUDIO_MAX_RECORD_BYTES", default=1_000_000)
PREFSTUDIO_MAX_PAIRS_PER_RECORD = env.int("PREFSTUDIO_MAX_PAIRS_PER_RECORD", default=10)
# Uploads larger than this import in an RQ job with a progress bar instead of inside the request.
PREFSTUDIO_IMPORT_SYNC_MAX_BYTES = env.int("PREFSTUDIO_IMPORT_SYNC_MAX_BYTES", default=2 * 1024 * 1024)
# Caps on what one file may hold as it is read (after gzip): bytes, records, and what one Parquet column
# chunk may unpack to, which bounds a Parquet read's memory (labeling.records.ImportOptions).
PREFSTUDIO_MAX_UNPACKED_BYTES = env.int("PREFSTUDIO_MAX_UNPACKED_BYTES", default=2 * 1024**3)
PREFSTUDIO_MAX_RECORDS = env.int("PREFSTUDIO_MAX_RECORDS", default=2_000_000)
PREFSTUDIO_PARQUET_CHUNK_BYTES = env.int("PREFSTUDIO_PARQUET_CHUNK_BYTES", default=64 * 1024 * 1024)
# Rejected records listed in a skip-invalid import's report; the rest are counted by reason.
PREFSTUDIO_REJECTED_REPORT_RECORDS = env.int("PREFSTUDIO_REJECTED_REPORT_RECORDS", default=10_000)
# A queued or running import with no sign of life for this long is failed as lost (and can be deleted).
PREFSTUDIO_IMPORT_LOST_SECONDS = env.int("PREFSTUDIO_IMPORT_LOST_SECONDS", default=300)
# Untrusted markdown: texts longer than this, or a pair (or rubric) that takes longer than this to lay
# out, are shown as escaped plain text with a note (labeling.rendering).
PREFSTUDIO_RENDER_MAX_CHARS = env.int("PREFSTUDIO_RENDER_MAX_CHARS", default=200_000)
PREFSTUDIO_RENDER_SECONDS = env.float("PREFSTUDIO_RENDER_SECONDS", default=1.0)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "filters": {"redis_down": {"()": "prefstudio.shared_cache.RedisDownFilter"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {
        # The shared cache's ignored Redis errors: one line a minute while Redis is down, no traceback.
        "prefstudio.shared_cache": {"filters": ["redis_down"]},
        "django": {"handlers": ["console"], "level": "INFO", "propagate": False},
        # django-axes logs every login at INFO; its lockouts are warnings.
        "axes": {"level": env.str("AXES_LOG_LEVEL", default="WARNING")},
        # The endpoint backend's HTTP client logs every request at INFO.
        "httpx2": {"level": "WARNING"},
        "httpx": {"level": "WARNING"},
    },
}
