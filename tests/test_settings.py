"""Settings come from the environment; production refuses weak keys and passes `check --deploy`."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROBE = (
    "import json, django; django.setup(); from django.conf import settings as s; "
    "print(json.dumps({'debug': s.DEBUG, 'db': s.DATABASES['default']['ENGINE'], "
    "'db_name': str(s.DATABASES['default']['NAME']), 'redis': s.REDIS_URL, "
    "'queues': {k: [v['URL'], v['DEFAULT_TIMEOUT'], v['SERIALIZER']] for k, v in s.RQ_QUEUES.items()}, "
    "'training_queue': s.PREFSTUDIO_TRAINING_QUEUE, 'media': str(s.MEDIA_ROOT), "
    "'artifacts': str(s.ARTIFACT_ROOT), 'hosts': s.ALLOWED_HOSTS, 'csrf': s.CSRF_TRUSTED_ORIGINS}))"
)


def run_python(code: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in _SETTINGS_VARS}
    clean.update({"PREFSTUDIO_ENV_FILE": os.devnull, "DJANGO_SETTINGS_MODULE": "prefstudio.settings", **env})
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=clean, capture_output=True, text=True, timeout=120
    )


_SETTINGS_VARS = {
    "DEBUG", "SECRET_KEY", "DATABASE_URL", "REDIS_URL", "ALLOWED_HOSTS", "CSRF_TRUSTED_ORIGINS",
    "MEDIA_ROOT", "ARTIFACT_ROOT", "PREFSTUDIO_TRAINING_QUEUE", "DJANGO_ALLOW_ASYNC_UNSAFE",
    "DATABASE_PREPARE_THRESHOLD",
}  # fmt: skip


def probe(**env: str) -> dict:
    result = run_python(PROBE, **env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_defaults_for_local_development():
    s = probe(DEBUG="true")
    assert s["debug"] is True
    assert s["db"] == "django.db.backends.sqlite3"
    assert s["db_name"] == str(ROOT / "var" / "prefstudio.sqlite3")
    assert s["redis"] == "redis://127.0.0.1:6379/0"
    assert s["training_queue"] == "gpu"
    assert s["media"] == str(ROOT / "var" / "media")
    assert s["artifacts"] == str(ROOT / "var" / "artifacts")
    assert "127.0.0.1" in s["hosts"]


def test_environment_overrides_everything(tmp_path):
    s = probe(
        DEBUG="false",
        SECRET_KEY=secrets.token_urlsafe(50),
        DATABASE_URL="postgres://u:p@db.internal:5433/prefs",
        REDIS_URL="redis://cache.internal:6380/2",
        ALLOWED_HOSTS="prefs.example.com,.example.org",
        CSRF_TRUSTED_ORIGINS="https://prefs.example.com",
        MEDIA_ROOT=str(tmp_path / "media"),
        ARTIFACT_ROOT=str(tmp_path / "artifacts"),
        PREFSTUDIO_TRAINING_QUEUE="h100",
    )
    assert s["debug"] is False
    assert s["db"] == "django.db.backends.postgresql"
    assert s["db_name"] == "prefs"
    assert s["hosts"] == ["prefs.example.com", ".example.org"]
    assert s["csrf"] == ["https://prefs.example.com"]
    assert s["media"] == str(tmp_path / "media")
    assert s["artifacts"] == str(tmp_path / "artifacts")
    url, timeout, serializer = s["queues"]["h100"]
    assert url == "redis://cache.internal:6380/2?socket_connect_timeout=2"  # the queue says at once when down
    assert timeout >= 6 * 3600
    assert serializer == "rq.serializers.JSONSerializer"
    assert s["queues"]["default"][2] == "rq.serializers.JSONSerializer"


def test_refuses_to_start_without_a_real_secret_key():
    for key in ["", "change-me", "django-insecure-abc", "short-key", "a" * 60]:
        result = run_python("import django; django.setup()", DEBUG="false", SECRET_KEY=key)
        assert result.returncode != 0, key
        assert "SECRET_KEY must be set" in result.stderr, key


def test_debug_mode_starts_without_a_key():
    assert run_python("import django; django.setup()", DEBUG="true", SECRET_KEY="").returncode == 0


def test_check_deploy_is_clean_with_a_production_environment():
    env = {
        "DEBUG": "false",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "prefs.example.com",
        "CSRF_TRUSTED_ORIGINS": "https://prefs.example.com",
        "DATABASE_URL": "postgres://prefstudio@127.0.0.1:5432/prefstudio",
    }
    result = run_python(
        "import sys; from django.core.management import execute_from_command_line as run; "
        "run(['manage.py', 'check', '--deploy', '--fail-level', 'DEBUG'])",
        **env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_postgresql_statements_are_prepared_unless_turned_off():
    code = PROBE.split("print(")[0] + "print(json.dumps(s.DATABASES['default'].get('OPTIONS', {})))"

    def options(**env: str) -> dict:
        result = run_python(code, DEBUG="true", **env)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    url = "postgres://u:p@127.0.0.1:5432/x"
    assert options(DATABASE_URL=url) == {
        "server_side_binding": True, "prepare_threshold": 5, "options": "-c jit=off"
    }  # fmt: skip
    assert options(DATABASE_URL=url, DATABASE_SERVER_OPTIONS="")["options"] == ""
    assert options(DATABASE_URL=url, DATABASE_PREPARE_THRESHOLD="off")["prepare_threshold"] is None
    assert options(DATABASE_URL="sqlite:///x.sqlite3") == {}


def gunicorn_config(**env: str) -> dict[str, str]:
    """The settings gunicorn would serve with from the project's root, as `--print-config` lists them."""
    clean = {k: v for k, v in os.environ.items() if k != "WEB_CONCURRENCY"}
    result = subprocess.run(
        [Path(sys.executable).with_name("gunicorn"), "--print-config", "prefstudio.wsgi:application"],
        cwd=ROOT, env={**clean, **env}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = (line.partition(" = ") for line in result.stdout.splitlines())
    return {name.strip(): value.strip() for name, _, value in lines}


def test_gunicorn_serves_with_the_shipped_settings():
    """gunicorn.conf.py: synchronous workers, 3 of them unless WEB_CONCURRENCY."""
    values = gunicorn_config()
    assert values["worker_class"] == "sync" and values["timeout"] == "120"
    assert values["workers"] == "3"
    assert gunicorn_config(WEB_CONCURRENCY="5")["workers"] == "5"
