"""Django's own machinery stays Django's: sessions, authentication, the database backend, one template
engine, and SQL text only in the two places the ORM cannot express (issue 17)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from django.conf import settings

from tests.test_settings import probe

ROOT = Path(__file__).resolve().parents[1]
APPS = ("prefstudio", "labeling", "training")

# A library that keeps its own backend well: django-axes refuses locked-out logins before any password
# is checked (login throttling, #16).
ALLOWED_BACKENDS = {"axes.backends.AxesStandaloneBackend"}


def test_sessions_and_authentication_are_djangos_own():
    assert settings.SESSION_ENGINE.startswith("django.contrib.sessions.backends.")
    for backend in settings.AUTHENTICATION_BACKENDS:
        assert backend.startswith("django.contrib.auth.backends.") or backend in ALLOWED_BACKENDS, backend
    assert "django.contrib.auth.backends.ModelBackend" in settings.AUTHENTICATION_BACKENDS
    assert "django.contrib.sessions.middleware.SessionMiddleware" in settings.MIDDLEWARE
    assert "django.contrib.auth.middleware.AuthenticationMiddleware" in settings.MIDDLEWARE
    assert not any(
        "session" in m.lower() or "auth" in m.lower()
        for m in settings.MIDDLEWARE
        if not m.startswith(("django.", "axes."))
    )


def test_database_engine_and_templates_are_djangos_own():
    for database in settings.DATABASES.values():
        assert database["ENGINE"].startswith("django.db.backends."), database["ENGINE"]
    engine = probe(DEBUG="true", DATABASE_URL="postgres://u:p@127.0.0.1:5432/x")["db"]
    assert engine == "django.db.backends.postgresql"
    assert [t["BACKEND"] for t in settings.TEMPLATES] == ["django.template.backends.django.DjangoTemplates"]


# Where SQL text may appear (module-level names or functions, by file), and why.
SQL_ALLOWED = {
    # The claim: a choice between subqueries whose row locks skip (FOR NO KEY UPDATE SKIP LOCKED).
    "labeling/assignment.py": {
        "_UNSEEN",
        "_SENT_BACK",
        "_NEAR",
        "_FRESH",
        "_ANY",
        "_TAKE",
        "CLAIM",
        "_claim",
        # Queue ranks written in chunks: UPDATE ... FROM unnest(ids, ranks) with the rows locked in id
        # order (bulk_update's CASE is 3-4 times slower), under a session advisory lock held across the
        # chunks' transactions. The ORM can say neither.
        "RANK",
        "RANK_ONE",
        "_ranking",
        "_rank_chunk",
    },  # fmt: skip
    # The bulk import: COPY into a staging table, INSERT ... ON CONFLICT from it, ANALYZE after.
    "labeling/batches.py": {"_STAGE", "_EMPTY_STAGE", "_COPY", "_INSERT_STAGED", "_analyze_pairs", "_copy"},
}
# Running a query the ORM compiled (no SQL text) on a server-side cursor: exports stream every pair.
RAW_ALLOWED = {"labeling/snapshots.py": {"_raw_rows"}}
SQL_TEXT = re.compile(
    r"\b(SELECT|INSERT\s+INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM|CREATE\s+(TEMPORARY\s+)?TABLE|ALTER\s+TABLE|"
    r"DROP\s+TABLE|TRUNCATE|ANALYZE|VACUUM|COPY|WITH\s+\w+\s+AS)\b"
)
RAW_CALLS = {"execute", "executemany", "raw", "extra", "RawSQL", "cursor", "chunked_cursor", "copy_expert"}


def _where(tree: ast.Module) -> dict[ast.AST, str]:
    """Every node's enclosing top-level name: a function or class (its method), or an assigned name."""
    owner: dict[ast.AST, str] = {}
    for top in tree.body:
        names = []
        if isinstance(top, ast.FunctionDef | ast.ClassDef):
            names = [top.name]
        elif isinstance(top, ast.Assign):
            names = [t.id for t in top.targets if isinstance(t, ast.Name)]
        for node in ast.walk(top):
            owner[node] = names[0] if names else ""
        if isinstance(top, ast.ClassDef):
            for item in top.body:
                if isinstance(item, ast.FunctionDef):
                    for node in ast.walk(item):
                        owner[node] = item.name
    return owner


def _docstrings(tree: ast.Module) -> set[ast.AST]:
    found = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        first = body[0] if isinstance(body, list) and body else None
        if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
            found.add(first.value)
    return found


def _sources() -> list[Path]:
    return [p for app in APPS for p in (ROOT / app).rglob("*.py") if "migrations" not in p.parts]


def test_sql_text_appears_only_in_the_claim_and_the_bulk_import():
    found = []
    for path in _sources():
        name = path.relative_to(ROOT).as_posix()
        tree = ast.parse(path.read_text(), name)
        owner, docstrings = _where(tree), _docstrings(tree)
        for node in ast.walk(tree):
            text = None
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node not in docstrings:
                text = node.value if SQL_TEXT.search(node.value) else None
            if text and owner.get(node) not in SQL_ALLOWED.get(name, ()):
                found.append(f"{name}:{node.lineno} SQL text in {owner.get(node) or 'module'}: {text[:60]!r}")
            if isinstance(node, ast.Call):
                func = node.func
                # Methods of cursors and querysets; RawSQL by any name (a function may be called execute).
                called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                called = called if isinstance(func, ast.Attribute) or called == "RawSQL" else ""
                allowed = SQL_ALLOWED.get(name, set()) | RAW_ALLOWED.get(name, set())
                if called in RAW_CALLS and owner.get(node) not in allowed:
                    found.append(f"{name}:{node.lineno} {called}() in {owner.get(node) or 'module'}")
    assert found == []


def test_the_sql_check_finds_what_it_looks_for(tmp_path):
    """The check above is only as good as its patterns: each kind of raw SQL it must catch."""
    samples = [
        'cursor.execute("SELECT 1")',
        'Pair.objects.raw("SELECT * FROM labeling_pair")',
        'Pair.objects.extra(where=["taken > 0"])',
        'Pair.objects.annotate(n=RawSQL("1", []))',
        'q = "UPDATE labeling_pair SET taken = 0"',
        'q = f"INSERT INTO {table} (a) VALUES (%s)"',
    ]
    for sample in samples:
        tree = ast.parse(sample)
        texts = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
        calls = [
            n.func.attr if isinstance(n.func, ast.Attribute) else n.func.id
            for n in ast.walk(tree)
            if isinstance(n, ast.Call)
        ]
        assert any(SQL_TEXT.search(t) for t in texts) or set(calls) & RAW_CALLS, sample
