"""Benchmark: importing generated preference pairs from JSONL and Parquet into PostgreSQL.

Measures records/s of `labeling.batches.import_stream` (only that call is timed) and the peak RSS of
the process doing it, for 10,000 and 100,000 pairs in each format, plus a re-import of the 100k JSONL
file into the same project (every record a duplicate). Each import runs in a fresh subprocess, so peak
RSS is per run (VmHWM: ru_maxrss would carry the parent's peak over exec); "growth" is that peak minus
the RSS just before the import (Django set up, pyarrow loaded). Runs with DEBUG off, as the import
worker does (DEBUG keeps every query's SQL in memory).
Records are generated deterministically: prompts of 50-400 characters (10% chat messages, flattened to
text in Parquet, whose prompt column has one type), two responses of 200-1500, models, metadata.

Touches nothing of the developer's data: it creates a scratch database (DATABASE_URL's server, name
`prefstudio_bench`), migrates it, and drops it at the end. PostgreSQL only.

Run: `make bench` or `.venv/bin/python bench/import_pairs.py [--sizes 10000,100000] [--out PATH]`.
Writes JSON to var/bench/import_pairs.json and prints a table.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import platform
import random
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import environ
from _scratch import migrate, scratch_database

ROOT = Path(__file__).resolve().parent.parent
BENCH_DB = "prefstudio_bench"
TARGET_RATE = 5000
ROW_GROUP = 5000
_TEXT = (
    "the a model answer question explain why how data train loss reward policy token context user "
    "assistant prompt response better worse because however therefore example python function list "
    "value error result first second finally note café naïve déjà 数据 モデル 👍 — step check"
)
WORDS = _TEXT.split()
MODELS = ["llama-3-8b", "mistral-7b", "qwen2-7b", "gpt-4o-mini", "gemma-2-9b", "phi-3-mini"]


def rss_mb(field: str = "VmRSS") -> float:
    """Resident memory now, or its peak (VmHWM): unlike ru_maxrss, not inherited from the parent."""
    with open("/proc/self/status") as f:
        kb = next(int(line.split()[1]) for line in f if line.startswith(f"{field}:"))
    return kb / 1024


def records(n: int, seed: int = 0) -> Iterator[dict]:
    """`n` deterministic records; ~10% have chat prompts."""
    rng = random.Random(seed)
    corpus = " ".join(rng.choices(WORDS, k=400_000))

    def text(lo: int, hi: int) -> str:
        size = rng.randint(lo, hi)
        start = rng.randrange(len(corpus) - size)
        return corpus[start : start + size].strip() or "empty"

    for i in range(n):
        prompt: str | list[dict[str, str]] = f"Q{i}: {text(45, 395)}"
        if rng.random() < 0.1:
            prompt = [{"role": "system", "content": text(50, 200)}, {"role": "user", "content": prompt}]
        model_a, model_b = rng.sample(MODELS, 2)
        meta = {
            "source": rng.choice(["arena", "synthetic", "support"]),
            "lang": rng.choice(["en", "de"]),
            "turns": len(prompt) if isinstance(prompt, list) else 1,
            "score": round(rng.random(), 3),
            "tags": rng.sample(["math", "code", "chat", "safety", "long"], rng.randint(0, 3)),
        }
        yield {
            "id": f"bench-{i}",
            "prompt": prompt,
            "response_a": f"A: {text(200, 1500)}",
            "response_b": f"B: {text(200, 1500)}",
            "model_a": model_a,
            "model_b": model_b,
            "metadata": meta,
        }


def write_files(folder: Path, n: int) -> dict[str, Path]:
    """The same n records as JSONL and as Parquet (row groups of ROW_GROUP, streamed)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    text, names = pa.string(), ["id", "prompt", "response_a", "response_b", "model_a", "model_b"]
    meta = {"source": text, "lang": text, "turns": pa.int32(), "score": pa.float64(), "tags": pa.list_(text)}
    schema = pa.schema([*((name, text) for name in names), ("metadata", pa.struct(meta))])
    paths = {"jsonl": folder / f"pairs-{n}.jsonl", "parquet": folder / f"pairs-{n}.parquet"}
    rows: list[dict] = []
    with paths["jsonl"].open("w", encoding="utf-8") as out, pq.ParquetWriter(paths["parquet"], schema) as pw:
        for i, rec in enumerate(records(n), start=1):
            out.write(json.dumps(rec, ensure_ascii=False) + "\n")
            if isinstance(prompt := rec["prompt"], list):  # Parquet: one type per column, so chat as text
                prompt = "\n\n".join(f"{m['role']}: {m['content']}" for m in prompt)
            rows.append({**rec, "prompt": prompt})
            if len(rows) == ROW_GROUP or i == n:
                pw.write_table(pa.Table.from_pylist(rows, schema=schema))
                rows.clear()
    return paths


def child(spec: dict) -> dict:
    """One import in this (fresh) process: set up Django, import, verify, measure."""
    import django

    sys.path.insert(0, str(ROOT))
    django.setup()
    import pyarrow.parquet  # noqa: F401  (loaded before the baseline: the importer loads it lazily)
    from django.db import connection

    from labeling.batches import import_stream
    from labeling.models import ImportBatch, Pair, Project

    path, n = Path(spec["path"]), spec["n"]
    project, _ = Project.objects.get_or_create(slug=spec["project"], defaults={"name": spec["project"]})
    before = Pair.objects.filter(project=project).count()
    batch = ImportBatch.objects.create(
        project=project, source_name=path.name, size_bytes=path.stat().st_size, format=spec["fmt"]
    )
    rss_before = rss_mb()
    profiler = cProfile.Profile() if spec.get("profile") else None
    if profiler:
        profiler.enable()
    with path.open("rb") as stream:
        start = time.perf_counter()
        summary = import_stream(batch=batch, stream=stream, fmt=spec["fmt"])
        seconds = time.perf_counter() - start
    if profiler:
        profiler.disable()
        profiler.dump_stats(spec["profile"])
    peak = rss_mb("VmHWM")
    count = Pair.objects.filter(project=project).count()
    want = 0 if before else n  # a re-import adds nothing
    got, expected = (summary.records, summary.imported, summary.duplicates, count), (n, want, n - want, n)
    if got != expected or not summary.committed:
        raise SystemExit(f"{path.name}: records, imported, duplicates, pairs: {got}, expected {expected}")
    return {
        "seconds": round(seconds, 3),
        "records_per_s": round(n / seconds),
        "peak_rss_mb": round(peak, 1),
        "rss_before_mb": round(rss_before, 1),
        "rss_growth_mb": round(peak - rss_before, 1),
        "imported": summary.imported,
        "duplicates": summary.duplicates,
        "server": connection.connection.info.parameter_status("server_version"),
    }


def run_child(env: dict, **spec) -> dict:
    cmd = [sys.executable, __file__, "--child", json.dumps(spec)]
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"import run failed ({spec}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000", help="comma-separated record counts")
    parser.add_argument("--out", type=Path, default=ROOT / "var/bench/import_pairs.json")
    parser.add_argument("--profile", type=Path, help="folder for cProfile dumps of each import")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    env_file = Path(os.environ.get("PREFSTUDIO_ENV_FILE", ROOT / ".env"))
    if env_file.is_file():  # as settings.py does: the environment wins over the file
        environ.Env.read_env(str(env_file))
    sizes, runs = sorted(int(s) for s in args.sizes.split(",")), []
    with scratch_database(BENCH_DB, "bench/import_pairs.py") as (url, _):
        env = {
            **os.environ,
            "DATABASE_URL": url,
            "DJANGO_SETTINGS_MODULE": "prefstudio.settings",
            "PREFSTUDIO_ENV_FILE": "/dev/null",
            "DEBUG": "false",
            "SECRET_KEY": secrets.token_urlsafe(50),
            "CONN_MAX_AGE": "0",
            "PYTHONPATH": str(ROOT),
        }
        migrate(env)
        with tempfile.TemporaryDirectory(prefix="bench-import-") as tmp:
            for n in sizes:
                t0 = time.perf_counter()
                files = write_files(Path(tmp), n)
                print(f"generated {n:,} records in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
                plan = [(fmt, n, f"{fmt}-{n}", "import") for fmt in files]
                if n == sizes[-1]:
                    plan.append(("jsonl", n, f"jsonl-{n}", "re-import (all duplicates)"))
                for fmt, n_, project, kind in plan:
                    profile = args.profile and str(args.profile.resolve() / f"{project}-{len(runs)}.prof")
                    spec = {"path": str(files[fmt]), "fmt": fmt, "n": n_, "project": project}
                    result = run_child(env, **spec, profile=profile)
                    size = round(files[fmt].stat().st_size / 2**20, 1)
                    runs.append({"format": fmt, "kind": kind, "records": n_, "file_mb": size, **result})
                    print(f"  {fmt} {kind}: {result['records_per_s']:,} records/s", file=sys.stderr)
    report(runs, sizes, args.out)


def report(runs: list[dict], sizes: list[int], out: Path) -> None:
    imports = {(r["format"], r["records"]): r for r in runs if r["kind"] == "import"}
    small, big = sizes[0], sizes[-1]
    targets = []
    for fmt in ("jsonl", "parquet"):
        rate = imports[fmt, big]["records_per_s"]
        name = f"{fmt} records/s at {big:,} >= {TARGET_RATE:,}"
        targets.append({"target": name, "value": rate, "pass": rate >= TARGET_RATE})
        if small != big:
            lo, hi = imports[fmt, small]["peak_rss_mb"], imports[fmt, big]["peak_rss_mb"]
            name = f"{fmt} peak RSS MB at {big:,} <= max(1.5x, +50 MB) of {small:,}'s {lo}"
            targets.append({"target": name, "value": hi, "pass": hi <= max(1.5 * lo, lo + 50)})
    result = {
        "benchmark": "import_pairs",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "postgres": runs[0]["server"],
            "load_avg_at_end": [round(x, 2) for x in os.getloadavg()],  # other work skews the rates
        },
        "runs": runs,
        "targets": targets,
        "pass": all(t["pass"] for t in targets),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    m = result["machine"]
    print(f"\nimport_pairs: {m['cpu_count']} CPUs, Python {m['python']}, PostgreSQL {m['postgres']}")
    print(f"load average at the end (1, 5, 15 min): {m['load_avg_at_end']}")
    head = f"{'run':<36}{'records':>9}{'seconds':>9}{'rec/s':>8}{'peak MB':>9}{'growth MB':>11}{'file MB':>9}"
    print(head + "\n" + "-" * len(head))
    for r in runs:
        print(
            f"{r['format'] + ' ' + r['kind']:<36}{r['records']:>9,}{r['seconds']:>9.2f}"
            f"{r['records_per_s']:>8,}{r['peak_rss_mb']:>9.1f}{r['rss_growth_mb']:>11.1f}{r['file_mb']:>9.1f}"
        )
    for t in targets:
        print(f"{'PASS' if t['pass'] else 'FAIL'}  {t['target']}: {t['value']}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
