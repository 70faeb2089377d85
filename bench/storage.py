"""Benchmark: an export snapshot of 1,000,000 pairs written and read back through object storage (S3, via
django-storages) beside the local filesystem, in the same run.

Each measurement is a fresh child process with Django set up from the environment
(DJANGO_SETTINGS_MODULE=prefstudio.settings), so that its peak RSS belongs to that path alone:
- `filesystem`: MEDIA_ROOT in a temporary folder, no AWS variables;
- `s3`: AWS_STORAGE_BUCKET_NAME, AWS_S3_ENDPOINT_URL and keys naming a bucket on moto's S3 server
  (`moto_server`, started here on a free loopback port by tests/s3.py's `start_moto`).
The child does what the app does, through the app's functions:
- write: `labeling.snapshots._staging` picks the folder (the snapshot's place in a local media storage, or a
  staging folder under PREFSTUDIO_CACHE_DIR), `exporting.SnapshotWriter` writes the pairs there as an export
  does (standard shape, eval fraction 0.05, pair metadata included), then `_publish` makes them the stored
  files (read-only in place, or `storage.upload`ed and the staging copies removed);
- read: `training.services.split_files` (a worker's copy: the stored file itself on disk, a
  `storage.download` into the cache on S3), then every file streamed front to back with
  `storage.iter_chunks` (1 MiB chunks), then through `storage.serve`, the response the export download view
  sends (Django's FileResponse, reading 1 MiB at a time).
Bytes streamed are checked against the sizes written, and the worker's copies against the writer's sha256
(outside the timings).

The pairs are generated, the same every run (seeded): prompts of 150-250 characters, responses of two pieces
of 150-300 each, some non-ASCII text, model names, 2 criteria of vote counts and a metadata object as the
database hands it (JSON text); decisions from `consensus.decide` under the default rules, votes mostly for
one side, some split, tie or both-bad, so that about 85% of the pairs give rows (about 1.3 KB each).
Generating them is inside the write time on both sides, as reading the database is in a real export.

Rounds alternate the sides (the machine is shared: other work stretches wall times); each side's fastest
round by total seconds counts, and every round is in the report. Peak RSS (VmHWM) is taken per phase (the
kernel's peak reset between phases) and the largest over a side's rounds counts.

Targets (the object-storage issue): at the largest size, the S3 path's total seconds (write + read) at most
2x the filesystem path's; memory flat: each path's peak RSS at the largest size within FLAT_MB of its peak
at the smallest. moto keeps what it stores in its own process (its peak RSS is reported, not counted) and
runs on the same cores, so the S3 side pays for the server too. (moto re-reads the whole object for every
ranged GET: boto3's parallel ranged download took 137 s for the 1.3 GB file here against 6 s for the one
streamed GET `storage.download` now makes.)

Run: `.venv/bin/python bench/storage.py [--sizes 100000,1000000] [--rounds 2] [--format jsonl] [--tmp DIR]
[--out PATH]`. Writes JSON to var/bench/storage.json, prints a table, exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import resource
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TARGET_RATIO = 2.0  # S3 total seconds / filesystem total seconds, at most
FLAT_MB = 64.0  # peak RSS at the largest size minus peak at the smallest, at most
BYTES_PER_PAIR = 1600  # a generous estimate of the file bytes per pair, for the free-space check
PIECES = 4000
MODELS = ["llama-3-8b", "mistral-7b", "qwen2-7b", "gpt-4o-mini", "gemma-2-9b", "phi-3-mini"]
CRITERIA = ("helpfulness", "accuracy")
_CORPUS = str.split(
    "the a model answer question explain why how data train loss reward policy token context user "
    "assistant prompt response better worse because however therefore example python function list "
    "value error result first second finally note café naïve déjà 数据 モデル 👍 — step check"
)
# Three votes a pair, pattern (7 * the pair's number) modulo 20: mostly for one side; a split, a tie and a
# both-bad pattern, which the default rules drop (or the standard shape cannot express).
VOTES = [
    *[("a", "a", "a")] * 5,
    *[("a", "a", "b")] * 4,
    *[("b", "b", "b")] * 4,
    *[("b", "b", "a")] * 3,
    ("a", "a", "tie"),
    ("a", "b", "tie"),
    ("tie", "tie", "a"),
    ("both_bad", "both_bad", "b"),
]


def pieces() -> tuple[list[str], list[str]]:
    """PIECES prompts of 150-250 characters and PIECES response halves of 150-300, the same every run."""
    rng = random.Random(0)

    def text(lo: int, hi: int) -> str:
        size, words, length = rng.randint(lo, hi), [], 0
        while length < size:
            words.append(rng.choice(_CORPUS))
            length += len(words[-1]) + 1
        return " ".join(words)

    return [text(150, 250) for _ in range(PIECES)], [text(150, 300) for _ in range(PIECES)]


def generated_pairs(n: int, texts: tuple[list[str], list[str]]) -> Iterator[tuple[Any, Any]]:
    """`n` (ExportPair, Decision) as the export feeds its writer, from `pieces()`. Decisions come from
    `consensus.decide` under the default rules, one per vote pattern (the export shares them the same way);
    criteria counts are a few shared dicts (the writer only reads them)."""
    from labeling import consensus, exporting

    prompts, halves = texts
    rules = consensus.ConsensusRules()
    decisions = [consensus.decide(list(votes), rules=rules) for votes in VOTES]
    criteria = [
        {
            name: dict(zip(("a", "b", "tie"), votes[j:] + votes[:j], strict=True))
            for j, name in enumerate(CRITERIA)
        }
        for votes in ((2, 1, 0), (3, 0, 0), (1, 1, 1), (0, 2, 1))
    ]
    for i in range(1, n + 1):
        pair = exporting.ExportPair(
            id=f"bench-{i:07d}",
            pair_pk=i,
            prompt=f"Q{i}: {prompts[(i * 613) % PIECES]}",
            response_a=f"A: {halves[(i * 7919) % PIECES]} {halves[(i // 7 * 31 + 3) % PIECES]}",
            response_b=f"B: {halves[(i * 104729 + 11) % PIECES]} {halves[(i // 5 * 17 + 5) % PIECES]}",
            model_a=MODELS[i % 6],
            model_b=MODELS[(i + 1 + i // 6) % 6],
            criteria=criteria[i % 4],
            metadata=f'{{"row": {i}, "tags": ["chat", "en"], "source": "bench", "batch": {i // 10000}}}',
        )
        yield pair, decisions[(i * 7) % len(VOTES)]


def rss_mb(field: str = "VmRSS", pid: int | str = "self") -> float:
    """Resident memory now, or its peak (VmHWM), of this process or `pid`: unlike ru_maxrss, not inherited
    from the parent."""
    with open(f"/proc/{pid}/status") as f:
        kb = next(int(line.split()[1]) for line in f if line.startswith(f"{field}:"))
    return kb / 1024


def cpu_seconds() -> float:
    """CPU time of this process so far, its threads included."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


class Phases:
    """Seconds and peak RSS of consecutive phases of this process: the kernel's peak (VmHWM) is reset at the
    start of each (Linux /proc/self/clear_refs), so each phase's peak is its own."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.peak_mb: dict[str, float] = {}
        self._reset()

    def _reset(self) -> None:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        self._start = time.perf_counter()

    def end(self, name: str) -> None:
        self.seconds[name] = time.perf_counter() - self._start
        self.peak_mb[name] = rss_mb("VmHWM")
        self._reset()


def measure(spec: dict) -> dict:
    """One path, one size, in this fresh process: write the snapshot, read it back, measure, clean up."""
    import types
    from dataclasses import asdict

    import django

    django.setup()
    from labeling import exporting
    from labeling.snapshots import _publish, _staging
    from prefstudio import storage
    from training.services import split_files

    media = storage.media()
    remote = storage.is_remote(media)
    if remote != (spec["path"] == "s3"):
        raise SystemExit(f"{spec['path']}: the media storage is {type(media).__name__}")
    key = uuid.uuid4()
    snapshot = types.SimpleNamespace(uuid=key, directory=f"exports/1/{key}", files=[])
    pairs = generated_pairs(spec["n"], pieces())
    rss_before = rss_mb()
    load, cpu = os.getloadavg()[0], cpu_seconds()
    phases = Phases()

    directory = _staging(snapshot)
    directory.mkdir(parents=True, exist_ok=False)
    with exporting.SnapshotWriter(
        directory, fmt=spec["fmt"], shape="standard", eval_fraction=0.05, include_metadata=True
    ) as writer:
        for pair, decision in pairs:
            writer.add(pair, decision)
        files = writer.close()
    phases.end("encode")
    _publish(snapshot, directory, [info.name for info in files])
    phases.end("publish")
    snapshot.files = [asdict(info) for info in files]
    copies = [path for path in split_files(snapshot) if path is not None]
    phases.end("split_files")
    names = [f"{snapshot.directory}/{info.name}" for info in files]
    streamed = sum(len(chunk) for name in names for chunk in storage.iter_chunks(media, name))
    phases.end("iter_chunks")
    served = 0
    for name in names:
        response = storage.serve(media, name, filename=Path(name).name, content_type="application/jsonl")
        served += sum(len(chunk) for chunk in response.streaming_content)
        response.close()
    phases.end("serve")
    cpu = cpu_seconds() - cpu

    total_bytes = sum(info.bytes for info in files)
    if streamed != total_bytes or served != total_bytes:
        raise SystemExit(f"{spec}: wrote {total_bytes} bytes, iter_chunks read {streamed}, serve {served}")
    for path, info in zip(copies, files, strict=True):
        if sha256_of(path) != info.sha256:
            raise SystemExit(f"{spec}: the worker's copy {path} differs from what was written")
    if remote and directory.exists():
        raise SystemExit(f"{spec}: the staging folder {directory} was left behind")
    storage.delete_tree(media, snapshot.directory)
    shutil.rmtree(storage.cache_dir("media", snapshot.directory), ignore_errors=True)
    mb, seconds = total_bytes / 2**20, phases.seconds
    write_s = seconds["encode"] + seconds["publish"]
    read_s = seconds["split_files"] + seconds["iter_chunks"] + seconds["serve"]
    return {
        "write_seconds": round(write_s, 2),
        "read_seconds": round(read_s, 2),
        "total_seconds": round(write_s + read_s, 2),
        **{f"{name}_seconds": round(value, 2) for name, value in seconds.items()},
        "write_mb_per_s": round(mb / write_s, 1),
        **{f"{name}_mb_per_s": round(mb / max(value, 1e-6), 1) for name, value in seconds.items()},
        "cpu_seconds": round(cpu, 2),
        "load_avg_at_start": round(load, 2),
        "rss_before_mb": round(rss_before, 1),
        "peak_rss_mb": round(max(rss_before, *phases.peak_mb.values()), 1),
        "phase_peak_rss_mb": {name: round(value, 1) for name, value in phases.peak_mb.items()},
        "kept": writer.kept,
        "dropped": writer.dropped,
        "bytes": total_bytes,
        "files": {info.name: info.bytes for info in files},
    }


def run_child(env: dict, spec: dict) -> dict:
    cmd = [sys.executable, __file__, "--child", json.dumps(spec)]
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{spec} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100000,1000000", help="comma-separated pair counts")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of both paths at each size")
    parser.add_argument("--format", default="jsonl", choices=("jsonl", "parquet"))
    parser.add_argument("--tmp", type=Path, default=Path(tempfile.gettempdir()), help="where temp folders go")
    parser.add_argument("--out", type=Path, default=ROOT / "var/bench/storage.json")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(json.loads(args.child))))
        return 0
    sizes = sorted(int(s) for s in args.sizes.split(","))
    # The largest file lies at once in the storage folder or moto's spool, the staging or cache copy, and
    # moto's completed multipart upload.
    need = 4 * BYTES_PER_PAIR * sizes[-1]
    free = shutil.disk_usage(args.tmp).free
    if free < need:
        print(f"{args.tmp} has {free / 2**30:.1f} GiB free, the benchmark needs about {need / 2**30:.1f}")
        return 1
    runs: list[dict] = []
    moto_peak = None
    with tempfile.TemporaryDirectory(prefix="prefstudio-storagebench-", dir=args.tmp) as tmp:
        for folder in ("moto", "media", "artifacts", "cache"):
            Path(tmp, folder).mkdir()
        sys.path.insert(0, str(ROOT))
        from tests.s3 import client, start_moto

        server, endpoint = start_moto({**os.environ, "TMPDIR": str(Path(tmp, "moto"))})
        try:
            bucket = f"bench-{secrets.token_hex(6)}"
            client(endpoint).create_bucket(Bucket=bucket)
            base = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
            base.update({
                "DJANGO_SETTINGS_MODULE": "prefstudio.settings", "PREFSTUDIO_ENV_FILE": "/dev/null",
                "DEBUG": "false", "SECRET_KEY": secrets.token_urlsafe(50), "PYTHONPATH": str(ROOT),
                "DATABASE_URL": f"sqlite:///{tmp}/unused.sqlite3", "LOG_LEVEL": "WARNING",
                "MEDIA_ROOT": f"{tmp}/media", "ARTIFACT_ROOT": f"{tmp}/artifacts",
                "PREFSTUDIO_CACHE_DIR": f"{tmp}/cache",
            })  # fmt: skip
            envs = {
                "filesystem": base,
                "s3": {
                    **base, "AWS_STORAGE_BUCKET_NAME": bucket, "AWS_S3_ENDPOINT_URL": endpoint,
                    "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                    "AWS_S3_REGION_NAME": "us-east-1",
                },
            }  # fmt: skip
            for n in sizes:
                for round_ in range(args.rounds):
                    order = ["filesystem", "s3"] if round_ % 2 == 0 else ["s3", "filesystem"]
                    for path in order:
                        spec = {"path": path, "n": n, "fmt": args.format}
                        result = {
                            "path": path,
                            "pairs": n,
                            "round": round_ + 1,
                            **run_child(envs[path], spec),
                        }
                        runs.append(result)
                        print(
                            f"{path:<11}{n:>10,} pairs, round {round_ + 1}: "
                            f"write {result['write_seconds']} s, read {result['read_seconds']} s, "
                            f"peak {result['peak_rss_mb']} MB",
                            file=sys.stderr, flush=True,
                        )  # fmt: skip
            moto_peak = rss_mb("VmHWM", server.pid)
        finally:
            server.terminate()
            server.wait(timeout=30)
    return report(runs, sizes, args, moto_peak)


def report(runs: list[dict], sizes: list[int], args: argparse.Namespace, moto_peak: float | None) -> int:
    best: dict[str, dict[str, Any]] = {}
    for n in sizes:
        for path in ("filesystem", "s3"):
            mine = [r for r in runs if r["pairs"] == n and r["path"] == path]
            fastest = min(mine, key=lambda r: r["total_seconds"])
            best.setdefault(str(n), {})[path] = {
                **fastest,
                "peak_rss_mb": max(r["peak_rss_mb"] for r in mine),
                "rounds_total_seconds": [r["total_seconds"] for r in mine],
            }
    large, small = str(sizes[-1]), str(sizes[0])
    ratio = best[large]["s3"]["total_seconds"] / best[large]["filesystem"]["total_seconds"]
    targets = [
        {
            "target": f"S3 total seconds at {sizes[-1]:,} pairs <= {TARGET_RATIO:g}x the filesystem's",
            "value": round(ratio, 2),
            "pass": ratio <= TARGET_RATIO,
        }
    ]
    for path in ("filesystem", "s3"):
        growth = best[large][path]["peak_rss_mb"] - best[small][path]["peak_rss_mb"]
        targets.append(
            {
                "target": f"{path}: peak RSS at {sizes[-1]:,} pairs <= peak at {sizes[0]:,} + {FLAT_MB:g} MB",
                "value": round(growth, 1),
                "pass": growth <= FLAT_MB,
            }
        )
    result = {
        "benchmark": "storage",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_avg_at_end": [round(x, 2) for x in os.getloadavg()],
        },
        "setup": {
            "format": args.format,
            "shape": "standard",
            "eval_fraction": 0.05,
            "include_metadata": True,
            "rounds": args.rounds,
            "s3_server": "moto_server on the loopback (same machine, same cores)",
            "moto_peak_rss_mb": moto_peak and round(moto_peak, 1),
            "counted": "fastest round of each path by total seconds; peak RSS the largest over its rounds",
            "read": "split_files (worker copy) + iter_chunks (1 MiB) + serve (the export download view)",
            "flat_criterion": f"peak RSS at the largest size <= peak at the smallest + {FLAT_MB:g} MB",
        },
        "best": best,
        "s3_over_filesystem": {
            n: round(b["s3"]["total_seconds"] / b["filesystem"]["total_seconds"], 2) for n, b in best.items()
        },
        "runs": runs,
        "targets": targets,
        "pass": all(t["pass"] for t in targets),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    m = result["machine"]
    print(f"\nstorage: {m['cpu_count']} CPUs, Python {m['python']}, load at the end {m['load_avg_at_end']}, "
          f"{args.format}, moto peak RSS {result['setup']['moto_peak_rss_mb']} MB")  # fmt: skip
    head = (f"{'path':<11}{'pairs':>10}{'MB':>8}{'write s':>9}{'(publish)':>10}{'read s':>8}{'(copy)':>8}"
            f"{'(chunks)':>9}{'(serve)':>8}{'total s':>9}{'MB/s w':>8}{'peak MB':>9}")  # fmt: skip
    print(head + "\n" + "-" * len(head))
    for n, sides in best.items():
        for path, r in sides.items():
            print(f"{path:<11}{int(n):>10,}{r['bytes'] / 2**20:>8.0f}{r['write_seconds']:>9.2f}"
                  f"{r['publish_seconds']:>10.2f}{r['read_seconds']:>8.2f}{r['split_files_seconds']:>8.2f}"
                  f"{r['iter_chunks_seconds']:>9.2f}{r['serve_seconds']:>8.2f}{r['total_seconds']:>9.2f}"
                  f"{r['write_mb_per_s']:>8.1f}{r['peak_rss_mb']:>9.1f}")  # fmt: skip
    for n, sides in best.items():
        for path, r in sides.items():
            phases = ", ".join(f"{name} {mb:.0f}" for name, mb in r["phase_peak_rss_mb"].items())
            print(f"peak MB by phase, {path} {int(n):,}: {phases}")
    for t in targets:
        print(f"{'PASS' if t['pass'] else 'FAIL'}  {t['target']}: {t['value']}")
    print(f"wrote {args.out}")
    return 0 if result["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
