"""Benchmark: export snapshots of 100,000 and 1,000,000 judged pairs from PostgreSQL to JSONL and Parquet.

Seeds one project per size (3 judgments per pair by 5 annotators, written with INSERT ... SELECT over
generate_series with the tables' indexes and foreign keys built after the load: about 1.2 KB of text per
pair, prompts of 30-230 characters, 10% of them chat messages with a system turn, responses of two
pieces of 50-450 characters, model names and metadata; votes mostly for one side, some split, tie and
both-bad), then, each in a fresh subprocess, times `labeling.snapshots.snapshot_build` (standard shape,
default rules, eval fraction 0.05) and reads the process's CPU time and peak RSS (VmHWM: ru_maxrss would
carry the parent's peak over exec). Also times `export_preview` on the 100k project (the live preview of
the Export page: three calls in a fresh process, the slowest reported). Runs with DEBUG off, as a worker
does. The load average is recorded: other work on the machine stretches the wall times, not the CPU.

Targets (issue #11): 1M pairs in under 60 s to either format; peak RSS under 300 MB at both sizes; the
preview of 100k pairs under 1 s.

Touches nothing of the developer's data: scratch database `prefstudio_exportbench` on DATABASE_URL's
server (dropped at the end), export files in a temporary folder. PostgreSQL only.

Run: `.venv/bin/python bench/export.py [--sizes 100000,1000000] [--formats jsonl,parquet] [--out PATH]
[--profile DIR]`. Writes JSON to var/bench/export.json and prints a table.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import json
import os
import platform
import random
import resource
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import environ
from _scratch import migrate, scratch_database

ROOT = Path(__file__).resolve().parent.parent
BENCH_DB = "prefstudio_exportbench"
TARGET_SECONDS_1M = 60.0
TARGET_RSS_MB = 300.0
TARGET_PREVIEW_S = 1.0
ANNOTATORS = 5
_CORPUS = str.split(
    "the a model answer question explain why how data train loss reward policy token context user "
    "assistant prompt response better worse because however therefore example python function list "
    "value error result first second finally note café naïve déjà 数据 モデル 👍 — step check"
)
MODELS = ["llama-3-8b", "mistral-7b", "qwen2-7b", "gpt-4o-mini", "gemma-2-9b", "phi-3-mini"]

# One statement per table. Texts are pieces of generated text (`fragments`, FRAGMENTS of each kind) picked
# by the row number: a prompt is one piece, a response two (so that most responses are distinct). Ids and
# content hashes grow with the row number: inserted into their indexes in order, they seed 3 times faster.
FRAGMENTS = 5000
SEED_PAIRS = """
WITH piece AS (SELECT n - 1 AS n, t FROM unnest(%(texts)s::text[]) WITH ORDINALITY AS f(t, n))
INSERT INTO labeling_pair (project_id, batch_id, external_id, prompt, response_a, response_b, model_a,
    model_b, metadata, gold, original_label, shape, content_hash, taken, extra_wanted, created_at)
SELECT %(project)s, %(batch)s, 'bench-' || lpad(i::text, 7, '0'),
    CASE WHEN i %% 10 = 0
        THEN jsonb_build_array(jsonb_build_object('role', 'system', 'content', 'Answer briefly.'),
                               jsonb_build_object('role', 'user', 'content', 'Q' || i || ': ' || q.t))
        ELSE to_jsonb('Q' || i || ': ' || q.t) END,
    'A: ' || a1.t || ' ' || a2.t, 'B: ' || b1.t || ' ' || b2.t,
    (%(models)s::text[])[1 + i %% 6], (%(models)s::text[])[1 + (i + 1 + i / 6) %% 6],
    jsonb_build_object('source', 'bench', 'row', i, 'tags', jsonb_build_array('chat', 'en')),
    '', '', 'pair', lpad(%(project)s || '-' || i, 64, '0'), 3, 0, now()
FROM generate_series(1, %(n)s::bigint) AS i
JOIN piece q ON q.n = (i * 613) %% %(fragments)s
JOIN piece a1 ON a1.n = %(fragments)s + (i * 7919) %% %(fragments)s
JOIN piece a2 ON a2.n = %(fragments)s + (i / 7 * 31 + 3) %% %(fragments)s
JOIN piece b1 ON b1.n = %(fragments)s + (i * 104729 + 11) %% %(fragments)s
JOIN piece b2 ON b2.n = %(fragments)s + (i / 5 * 17 + 5) %% %(fragments)s
"""


def fragments() -> list[str]:
    """FRAGMENTS prompt pieces of 30-220 characters, then FRAGMENTS response pieces of 50-450, the same
    every run."""
    rng = random.Random(0)

    def text(lo: int, hi: int) -> str:
        size, words, length = rng.randint(lo, hi), [], 0
        while length < size:
            words.append(rng.choice(_CORPUS))
            length += len(words[-1]) + 1
        return " ".join(words)

    prompts = [text(30, 220) for _ in range(FRAGMENTS)]
    responses = [text(50, 450) for _ in range(FRAGMENTS)]
    return prompts + responses


# Annotators j, j+1, j+2 (of 5) judge each pair; a vote is for the pair's better side 75% of the time,
# then the other side, a tie, both bad.
SEED_JUDGMENTS = """
INSERT INTO labeling_judgment (pair_id, annotator_id, choice, strength, criteria, rationale, a_on_left,
    is_gold, seconds_spent, created_at, updated_at)
SELECT p.id, (%(users)s::int[])[1 + (p.id + k) %% 5],
    CASE WHEN r < 75 THEN better WHEN r < 87 THEN worse WHEN r < 95 THEN 'tie' ELSE 'both_bad' END,
    '', '{}', '', (p.id + k) %% 2 = 0, false, 5 + r / 4, now(), now()
FROM labeling_pair p CROSS JOIN generate_series(0, 2) AS k,
    LATERAL (SELECT (hashtext(p.id || ':' || k)::bigint %% 100 + 100) %% 100 AS r,
                    CASE WHEN p.id %% 2 = 0 THEN 'a' ELSE 'b' END AS better,
                    CASE WHEN p.id %% 2 = 0 THEN 'b' ELSE 'a' END AS worse) AS v
WHERE p.project_id = %(project)s
"""


def rss_mb(field: str = "VmRSS") -> float:
    """Resident memory now, or its peak (VmHWM): unlike ru_maxrss, not inherited from the parent."""
    with open("/proc/self/status") as f:
        kb = next(int(line.split()[1]) for line in f if line.startswith(f"{field}:"))
    return kb / 1024


def cpu_seconds() -> float:
    """CPU time of this process so far (its threads included): on a busy machine the wall time also
    counts the time other programs held the cores."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _setup() -> None:
    import django

    sys.path.insert(0, str(ROOT))
    django.setup()


SEEDED = ["labeling_pair", "labeling_judgment"]


@contextlib.contextmanager
def bulk_load(cursor: Any, tables: list[str]) -> Iterator[None]:
    """Drop the foreign keys, unique constraints and other indexes of `tables` (primary keys stay) for
    the body, then build them again, checking every row at once: a row by row check and index insert
    made a million pairs take 5 minutes to seed, not 2. The same names and definitions come back."""
    cursor.execute(
        "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE conrelid = ANY(%s::regclass[]) AND contype IN ('f', 'u')",
        [tables],
    )
    constraints = cursor.fetchall()
    cursor.execute(
        "SELECT indexname, indexdef FROM pg_indexes i WHERE tablename = ANY(%s) AND NOT EXISTS "
        "(SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)",
        [tables],
    )
    indexes = cursor.fetchall()
    for table, name, _ in constraints:
        cursor.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
    for name, _ in indexes:
        cursor.execute(f'DROP INDEX "{name}"')
    yield
    for _, definition in indexes:
        cursor.execute(definition)
    for table, name, definition in sorted(constraints, key=lambda c: "FOREIGN" in c[2]):  # unique first
        cursor.execute(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}')


def seed(spec: dict) -> dict:
    """A project of `n` pairs with 3 judgments each (in this child process)."""
    _setup()
    from django.contrib.auth.models import User
    from django.db import connection, transaction

    from labeling.models import ImportBatch, Membership, Pair, Project

    n, slug = spec["n"], spec["project"]
    start = time.perf_counter()
    project = Project.objects.create(slug=slug, name=slug, overlap=3)
    batch = ImportBatch.objects.create(project=project, source_name="bench", state="done", imported=n)
    users = [User.objects.create(username=f"{slug}-{i}") for i in range(ANNOTATORS)]
    Membership.objects.bulk_create(Membership(project=project, user=u) for u in users)
    params = {"project": project.pk, "batch": batch.pk, "n": n, "texts": fragments(),
              "fragments": FRAGMENTS, "models": MODELS, "users": [u.pk for u in users]}  # fmt: skip
    with transaction.atomic(), connection.cursor() as cursor, bulk_load(cursor, SEEDED):
        cursor.execute("SET LOCAL synchronous_commit = off")
        cursor.execute(SEED_PAIRS, params)
        cursor.execute(SEED_JUDGMENTS, params)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE labeling_pair, labeling_judgment")
        cursor.execute(
            "SELECT avg(octet_length(prompt::text) + octet_length(response_a) + octet_length(response_b)) "
            "FROM labeling_pair WHERE project_id = %s",
            [project.pk],
        )
        text_bytes = float(cursor.fetchone()[0])
    assert Pair.objects.filter(project=project).count() == n
    return {"seconds": round(time.perf_counter() - start, 1), "text_bytes_per_pair": round(text_bytes)}


def export(spec: dict) -> dict:
    """One snapshot build in this (fresh) process: set up Django, build, verify, measure."""
    _setup()
    from dataclasses import asdict

    import pyarrow.parquet  # noqa: F401  (loaded before the baseline: the writer loads it lazily)
    from django.db import connection

    from labeling.models import ExportSnapshot, Project
    from labeling.snapshots import rules_for, snapshot_build

    project = Project.objects.get(slug=spec["project"])
    snapshot = ExportSnapshot.objects.create(
        project=project, rules=asdict(rules_for(project)), shape="standard",
        format=spec["fmt"], eval_fraction=0.05, pairs_total=spec["n"],
    )  # fmt: skip
    rss_before = rss_mb()
    profiler = cProfile.Profile() if spec.get("profile") else None
    if profiler:
        profiler.enable()
    load, cpu, start = os.getloadavg()[0], cpu_seconds(), time.perf_counter()
    snapshot_build(snapshot)
    seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    if profiler:
        profiler.disable()
        profiler.dump_stats(spec["profile"])
    peak = rss_mb("VmHWM")
    snapshot.refresh_from_db()
    if snapshot.state != "done" or snapshot.kept + sum(snapshot.dropped.values()) != spec["n"]:
        raise SystemExit(f"export {spec}: {snapshot.state} {snapshot.message} kept {snapshot.kept}")
    if snapshot.train_rows + snapshot.eval_rows != snapshot.kept:
        raise SystemExit(
            f"export {spec}: {snapshot.train_rows} + {snapshot.eval_rows} rows for {snapshot.kept}"
        )
    return {
        "seconds": round(seconds, 2),
        "pairs_per_s": round(spec["n"] / seconds),
        "cpu_seconds": round(cpu, 2),
        "load_avg_at_start": round(load, 2),
        "peak_rss_mb": round(peak, 1),
        "rss_before_mb": round(rss_before, 1),
        "kept": snapshot.kept,
        "dropped": snapshot.dropped,
        "file_mb": round(sum(f["bytes"] for f in snapshot.files) / 2**20, 1),
        "server": connection.connection.info.parameter_status("server_version"),
    }


def preview(spec: dict) -> dict:
    """`export_preview` of the project three times in this fresh process: each call's seconds."""
    _setup()
    from labeling.models import Project
    from labeling.snapshots import export_preview, rules_for

    project = Project.objects.get(slug=spec["project"])
    times, result = [], None
    for _ in range(3):
        start = time.perf_counter()
        result = export_preview(project, rules=rules_for(project), shape="standard")
        times.append(round(time.perf_counter() - start, 3))
    return {
        "seconds": times,
        "pairs": result.pairs,
        "kept": result.kept,
        "peak_rss_mb": round(rss_mb("VmHWM"), 1),
    }


def run_child(env: dict, mode: str, **spec) -> dict:
    cmd = [sys.executable, __file__, "--child", json.dumps({"mode": mode, **spec})]
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{mode} failed ({spec}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100000,1000000", help="comma-separated pair counts")
    parser.add_argument("--formats", default="jsonl,parquet")
    parser.add_argument("--out", type=Path, default=ROOT / "var/bench/export.json")
    parser.add_argument("--profile", type=Path, help="folder for cProfile dumps of each export")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        spec = json.loads(args.child)
        print(json.dumps({"seed": seed, "export": export, "preview": preview}[spec.pop("mode")](spec)))
        return
    env_file = Path(os.environ.get("PREFSTUDIO_ENV_FILE", ROOT / ".env"))
    if env_file.is_file():  # as settings.py does: the environment wins over the file
        environ.Env.read_env(str(env_file))
    sizes = sorted(int(s) for s in args.sizes.split(","))
    formats = args.formats.split(",")
    runs, seeds, previews = [], {}, {}
    with scratch_database(BENCH_DB, "bench/export.py") as (url, _), tempfile.TemporaryDirectory() as media:
        env = {
            **os.environ, "DATABASE_URL": url, "DJANGO_SETTINGS_MODULE": "prefstudio.settings",
            "PREFSTUDIO_ENV_FILE": "/dev/null", "DEBUG": "false", "SECRET_KEY": secrets.token_urlsafe(50),
            "CONN_MAX_AGE": "0", "PYTHONPATH": str(ROOT), "MEDIA_ROOT": media, "LOG_LEVEL": "WARNING",
        }  # fmt: skip
        migrate(env)
        for n in sizes:
            project = f"export-{n}"
            seeds[n] = run_child(env, "seed", n=n, project=project)
            print(f"seeded {n:,} pairs in {seeds[n]['seconds']} s", file=sys.stderr, flush=True)
            if n == 100_000 or n == sizes[0]:
                previews[n] = run_child(env, "preview", n=n, project=project)
                print(f"  preview: {previews[n]['seconds']} s", file=sys.stderr, flush=True)
            for fmt in formats:
                profile = args.profile and str(args.profile.resolve() / f"export-{fmt}-{n}.prof")
                result = run_child(env, "export", n=n, project=project, fmt=fmt, profile=profile)
                runs.append({"format": fmt, "pairs": n, **result})
                print(f"  {fmt}: {result['pairs_per_s']:,} pairs/s, {result['peak_rss_mb']} MB",
                      file=sys.stderr, flush=True)  # fmt: skip
                for folder in Path(media).glob("exports/*/*"):  # the files are not needed again
                    for file in folder.iterdir():
                        file.unlink()
    report(runs, seeds, previews, sizes, args.out)


def report(runs: list[dict], seeds: dict, previews: dict, sizes: list[int], out: Path) -> None:
    targets = []
    for r in runs:
        if r["pairs"] >= 1_000_000:
            name = f"{r['format']}: {r['pairs']:,} pairs in < {TARGET_SECONDS_1M:.0f} s"
            targets.append({"target": name, "value": r["seconds"], "pass": r["seconds"] < TARGET_SECONDS_1M})
        name = f"{r['format']}: peak RSS at {r['pairs']:,} pairs < {TARGET_RSS_MB:.0f} MB"
        targets.append({"target": name, "value": r["peak_rss_mb"], "pass": r["peak_rss_mb"] < TARGET_RSS_MB})
    for n, p in previews.items():
        slowest = max(p["seconds"])
        name = f"preview of {n:,} pairs < {TARGET_PREVIEW_S:.0f} s (slowest of 3)"
        targets.append({"target": name, "value": slowest, "pass": slowest < TARGET_PREVIEW_S})
    result = {
        "benchmark": "export",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "postgres": runs[0]["server"] if runs else None,
            "load_avg_at_end": [round(x, 2) for x in os.getloadavg()],  # other work skews the rates
        },
        "setup": {
            "judgments_per_pair": 3,
            "annotators": ANNOTATORS,
            "shape": "standard",
            "rules": "defaults (k = 3, share 2/3, majority)",
            "eval_fraction": 0.05,
        },  # fmt: skip
        "seeding": {str(n): s for n, s in seeds.items()},
        "preview": {str(n): p for n, p in previews.items()},
        "runs": runs,
        "targets": targets,
        "pass": all(t["pass"] for t in targets),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    m = result["machine"]
    print(f"\nexport: {m['cpu_count']} CPUs, Python {m['python']}, PostgreSQL {m['postgres']}")
    print(f"load average at the end (1, 5, 15 min): {m['load_avg_at_end']}")
    head = (f"{'run':<10}{'pairs':>11}{'seconds':>9}{'pairs/s':>9}{'CPU s':>8}{'load':>6}{'peak MB':>9}"
            f"{'kept':>10}{'file MB':>9}")  # fmt: skip
    print(head + "\n" + "-" * len(head))
    for r in runs:
        print(f"{r['format']:<10}{r['pairs']:>11,}{r['seconds']:>9.2f}{r['pairs_per_s']:>9,}"
              f"{r['cpu_seconds']:>8.1f}{r['load_avg_at_start']:>6.1f}{r['peak_rss_mb']:>9.1f}{r['kept']:>10,}"
              f"{r['file_mb']:>9.1f}")  # fmt: skip
    for n, p in previews.items():
        print(f"preview of {n:,} pairs: {p['seconds']} s")
    for t in targets:
        print(f"{'PASS' if t['pass'] else 'FAIL'}  {t['target']}: {t['value']}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
