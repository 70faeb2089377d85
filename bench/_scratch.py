"""What the benchmarks share: a scratch PostgreSQL database on DATABASE_URL's server, made empty,
migrated, and dropped at the end, so a benchmark never touches the developer's data."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_URL = "postgres://prefstudio:prefstudio@127.0.0.1:5432/prefstudio"


def admin(url: str, *statements: str) -> str:
    """Run `statements` outside a transaction on the database at `url`; the server's version."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)
        return conn.info.parameter_status("server_version") or ""


@contextlib.contextmanager
def scratch_database(name: str, script: str) -> Iterator[tuple[str, str]]:
    """Database `name`, made empty on DATABASE_URL's server (DEFAULT_URL without one) and dropped on
    the way out; yields (its URL, the server's version). Exits with a message unless DATABASE_URL is a
    PostgreSQL URL naming another database."""
    parts = urlsplit(os.environ.get("DATABASE_URL") or DEFAULT_URL)
    if not parts.scheme.startswith("postgres") or parts.path == f"/{name}":
        raise SystemExit(
            f"{script} measures PostgreSQL, but DATABASE_URL is {parts.scheme}://…{parts.path}. Point it at "
            f"a PostgreSQL database (not {name}) whose role may CREATEDB."
        )
    server = urlunsplit(parts._replace(path="/postgres"))
    version = admin(server, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", f"CREATE DATABASE {name}")
    try:
        yield urlunsplit(parts._replace(path=f"/{name}")), version
    finally:
        admin(server, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def migrate(env: dict[str, str] | None = None, root: Path = ROOT) -> None:
    """`manage.py migrate` of the checkout at `root` with `env` (this process's environment when None)."""
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=root, env=env, check=True
    )
