"""Load benchmark: N simulated annotators judging pairs over HTTP against gunicorn on PostgreSQL.

Each annotator logs in once, opens the workbench, then loops: POST a verdict to the judge action as the
htmx page does; the 200 partial carries the next pair's form (one successful POST = one judgment). Per N,
after a warm-up: `max` (closed loop, no think time: capacity; there latency ~ N / throughput) and
`paced` (together the annotators offer --rate judgments/s on fixed schedules; `p99sch` is measured from
the scheduled send time, so time spent behind schedule counts). Reports judgments/s, p50/p95/p99/max ms,
errors (non-200, no new pair, socket errors), CPU cores of gunicorn / PostgreSQL / this client / the rest
of the machine, CPU ms per judgment (all three together; `all/j`: the whole machine's busy time, which
also holds what PostgreSQL backends used before they exited within the phase: gunicorn reconnects after
CONN_MAX_AGE, and an exited process's time cannot be read), the machine's speed just before the phase
(`python_loop_ms`, a fixed pure-Python loop: these shared machines vary by half from hour to hour), DB
checks (judgments added == successful POSTs, no duplicate (pair, annotator), no pair over k live
annotators, every done assignment judged, `taken` exact, one lease per annotator), and a profile of one
htmx judge request in-process (statements, time, slowest statement).

Scratch database `prefstudio_loadbench` (or --db): re-created, seeded through Django, ANALYZEd, dropped at
the end. Run: `.venv/bin/python bench/labeling_load.py [--sizes 10,50,100] [--seconds 20] [--workers 3]
[--worker-class gthread --threads 1] [--rate 50] [--pairs 40000] [--code CHECKOUT] [--db NAME]
[--out var/bench/labeling_load.json]` (gunicorn.conf.py's settings unless given; more gunicorn flags
through GUNICORN_CMD_ARGS). `--code` serves and profiles another checkout of the app (an older commit,
with its own .venv) with this script, so that two versions can be measured alternately on one machine:

    git worktree add /tmp/old d87b499 && ln -s $PWD/.venv /tmp/old/.venv
    for code in /tmp/old $PWD /tmp/old $PWD; do
        .venv/bin/python bench/labeling_load.py --code $code --sizes 10,50 \\
            --out var/bench/$(basename $code)-$RANDOM.json
    done

Targets: p99 < 150 ms paced at 50 judgments/s (about ten times a large team's real rate; measured from the
schedule), no errors, DB checks clean. Closed-loop latency follows from throughput, N / (judgments/s) on
average, so the latency target is read on the paced phase; the closed-loop p99 is reported beside it.
Compare CPU ms per judgment between versions within one run of alternations: these machines change
speed from hour to hour.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import re
import runpy
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import warnings
from pathlib import Path
from urllib.parse import urlencode

import psutil
from _scratch import migrate, scratch_database

ROOT = Path(__file__).resolve().parent.parent
BENCH_DB, SLUG, PASSWORD, K = "prefstudio_loadbench", "loadbench", "load-" + secrets.token_hex(8), 3
TARGET_N, TARGET_RATE, TARGET_P99_MS = 50, 50, 150
ACTION = re.compile(rb'action="(/projects/[\w-]+/label/\d+/judge/)"')
_TEXT = "the model answer explain why data train loss reward policy token context user prompt response better"
WORDS = (_TEXT + " because however example python function list value error result first note check").split()


def markdown(rng: random.Random, size: int) -> str:
    """About `size` characters of markdown: paragraphs, bullet lists with bold, sometimes a code block."""
    parts: list[str] = []
    while sum(map(len, parts)) < size:
        sentence, roll = " ".join(rng.choices(WORDS, k=rng.randint(6, 14))).capitalize() + ".", rng.random()
        if roll < 0.12:
            parts.append(f"```python\ndef {rng.choice(WORDS)}(x):\n    return [v * 2 for v in x]\n```")
        else:
            bullets = "\n".join(f"- **{w}**: {sentence}" for w in rng.sample(WORDS, 3))
            parts.append(bullets if roll < 0.3 else f"{sentence} {sentence.lower()}")
    return "\n\n".join(parts)


def seed(n_users: int, n_pairs: int, history_share: float) -> None:
    from django.contrib.auth.hashers import make_password
    from django.contrib.auth.models import Group, User
    from django.db import connection

    from labeling import tally
    from labeling.display import render_missing
    from labeling.models import ImportBatch, Membership, Pair, Project

    rng, hashed = random.Random(0), make_password(PASSWORD)
    project = Project.objects.create(slug=SLUG, name="Load bench", rubric=markdown(rng, 600), overlap=K,
                                     lease_minutes=30, gold_rate=0)  # fmt: skip
    batch = ImportBatch.objects.create(project=project, source_name="bench", state="done")
    users = User.objects.bulk_create([User(username=f"annotator{i:03d}", password=hashed)
                                      for i in range(n_users)])  # fmt: skip
    group, through = Group.objects.get(name="annotator"), User.groups.through
    through.objects.bulk_create([through(user=u, group=group) for u in users])
    Membership.objects.bulk_create([Membership(project=project, user=u, role="annotator") for u in users])
    pairs = []
    for i in range(n_pairs):
        prompt: str | list = f"Q{i}: " + markdown(rng, rng.randint(80, 300))
        if rng.random() < 0.1:
            prompt = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": prompt}]
        a, b = (markdown(rng, rng.randint(200, 700)) for _ in "ab")
        pairs.append(Pair(project=project, batch=batch, prompt=prompt, response_a=f"A {a}",
                          response_b=f"B {b}", shape="pair", content_hash=f"{i:064x}"))  # fmt: skip
    Pair.objects.bulk_create(pairs, batch_size=2000)
    render_missing(Pair.objects.filter(project=project))  # as the job that follows every import does
    history(project, pairs[: int(len(pairs) * history_share)], hashed)
    tally.recount(project.pk)  # the earlier annotators' tallies, as the app would have kept them
    with connection.cursor() as cursor:  # steady state: autovacuum keeps statistics about this fresh
        cursor.execute("ANALYZE labeling_pair, labeling_assignment, labeling_judgment, auth_user")


def history(project, pairs: list, hashed: str) -> None:
    """A project under way: `pairs` already judged k times by earlier annotators (done assignments
    and judgments), so tables and planner statistics look like a working project's, not an empty one's."""
    from datetime import timedelta

    from django.contrib.auth.models import User
    from django.utils import timezone

    from labeling.models import Assignment, Judgment, Pair

    earlier = User.objects.bulk_create([User(username=f"earlier{i}", password=hashed) for i in range(K)])
    then = timezone.now() - timedelta(days=1)
    done = dict(state="done", leased_at=then, expires_at=then + timedelta(minutes=30), finished_at=then)
    assignments = Assignment.objects.bulk_create(
        [Assignment(project=project, pair=p, annotator=u, **done) for p in pairs for u in earlier],
        batch_size=5000,
    )
    Judgment.objects.bulk_create(
        [
            Judgment(pair_id=a.pair_id, annotator_id=a.annotator_id, assignment=a, choice="a")
            for a in assignments
        ],
        batch_size=5000,
    )
    Pair.objects.filter(pk__in=[p.pk for p in pairs]).update(taken=K)


def db_state() -> dict:
    """Integrity counters over the whole project (they accumulate across phases)."""
    from django.db.models import Count, F, Q, Sum

    from labeling.models import Assignment, Judgment, Pair

    live, pairs = Q(assignments__state__in=["leased", "done"]), Pair.objects.filter(project__slug=SLUG)
    assignments, judgments = Assignment.objects.filter(project__slug=SLUG), Judgment.objects.all()
    per = lambda qs, *by: qs.values(*by).annotate(c=Count("id")).filter(c__gt=1).count()  # noqa: E731
    return {
        "judgments": judgments.filter(pair__project__slug=SLUG).count(),
        "duplicate_judgments": per(judgments, "pair_id", "annotator_id"),
        "pairs_over_k": pairs.annotate(c=Count("assignments__annotator", filter=live, distinct=True))
        .filter(c__gt=K).count(),
        "done_without_judgment": assignments.filter(state="done", judgment__isnull=True).count(),
        "taken_mismatch": pairs.annotate(c=Count("assignments", filter=live)).exclude(taken=F("c")).count(),
        "multi_lease_users": per(assignments.filter(state="leased"), "annotator_id"),
        "free_slots": pairs.aggregate(s=Sum(K - F("taken")))["s"],
    }  # fmt: skip


class Client:
    """One annotator: a keep-alive HTTP/1.1 connection (re-opened when the server closes it), cookies."""

    def __init__(self, port: int, username: str) -> None:
        self.port, self.username, self.cookies, self.action = port, username, {}, ""
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    def close(self) -> None:
        if self.writer:
            self.writer.close()
        self.reader = self.writer = None

    async def request(self, method: str, path: str, form: dict | None = None) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        data, cookies = urlencode(form or {}).encode(), "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        head = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{self.port}", f"Cookie: {cookies}"]
        if form:
            head += ["Content-Type: application/x-www-form-urlencoded", f"Content-Length: {len(data)}",
                     f"X-CSRFToken: {self.cookies.get('csrftoken', '')}", "HX-Request: true"]  # fmt: skip
        self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + data)
        lines = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        headers = [(n.lower(), v.strip()) for n, _, v in (line.partition(":") for line in lines[1:])]
        for key, _, val in (v.split(";")[0].partition("=") for n, v in headers if n == "set-cookie"):
            self.cookies[key] = val
        length = next((int(v) for n, v in headers if n == "content-length"), None)
        body = await (self.reader.read() if length is None else self.reader.readexactly(length))
        if length is None or ("connection", "close") in headers:
            self.close()
        return int(lines[0].split()[1]), body

    async def login(self) -> None:
        await self.request("GET", "/login/")
        form = {
            "csrfmiddlewaretoken": self.cookies["csrftoken"],
            "username": self.username,
            "password": PASSWORD,
        }
        if (status := (await self.request("POST", "/login/", form))[0]) != 302:
            raise SystemExit(f"login of {self.username} answered {status}")
        await self.reopen()
        self.close()

    async def reopen(self) -> None:
        """The full workbench page: the annotator's current lease (or a new one)."""
        status, body = await self.request("GET", f"/projects/{SLUG}/label/")
        if not (match := ACTION.search(body) if status == 200 else None):
            raise RuntimeError(f"workbench for {self.username}: {status}, no judge form")
        self.action = match.group(1).decode()


async def annotate(client: Client, rec: dict, t0: float, stop: float, interval: float) -> None:
    rng = random.Random(client.username)
    due = t0 + rng.uniform(0, interval)
    while (due if interval else 0) < stop and time.perf_counter() < stop:
        await asyncio.sleep(max(0.0, due - time.perf_counter()) if interval else 0)
        sent = time.perf_counter()
        scheduled, due = (due, due + interval) if interval else (sent, 0.0)
        form = {
            "choice": rng.choice(("left", "right", "tie")),
            "csrfmiddlewaretoken": client.cookies["csrftoken"],
        }
        try:
            status, body = await client.request("POST", client.action, form)
            match = ACTION.search(body) if status == 200 else None
            err = None if match and match.group(1).decode() != client.action else f"{status}: no new pair"
        except (OSError, asyncio.IncompleteReadError) as exc:
            client.close()
            status, err = 0, type(exc).__name__
        rec["samples"].append((sent, time.perf_counter(), scheduled, err is None))
        rec["posts_200"] += status == 200
        if err is None:
            client.action = match.group(1).decode()
            continue
        rec["errors"][err] = rec["errors"].get(err, 0) + 1
        try:  # resynchronize on the annotator's current lease
            await client.reopen()
        except (OSError, RuntimeError, asyncio.IncompleteReadError):
            return


async def login_all(clients: list[Client], batch: int) -> None:
    for i in range(0, len(clients), batch):  # PBKDF2 makes each login cost ~0.3 s of CPU
        await asyncio.gather(*(c.login() for c in clients[i : i + batch]))


def cpu_snapshot(server: psutil.Process) -> dict:
    tree, snap = {p.pid for p in [server, *server.children(recursive=True)]}, {"system": psutil.cpu_times()}
    for proc in psutil.process_iter(["name"]):
        group = "gunicorn" if proc.pid in tree else "client" if proc.pid == os.getpid() else None
        if group or (proc.info["name"] or "").startswith("postgres"):
            with contextlib.suppress(psutil.Error):
                snap[proc.pid] = (group or "postgres", sum(proc.cpu_times()[:2]))
    return snap


def cpu_cores(a: dict, b: dict, seconds: float) -> dict:
    """Cores used per group between two snapshots; `other`: the rest of the machine's busy time."""
    out = dict.fromkeys(("gunicorn", "postgres", "client"), 0.0)
    for pid, (group, cpu) in ((k, v) for k, v in b.items() if k != "system"):
        out[group] += cpu - (a[pid][1] if pid in a else 0.0)
    idle = sum(getattr(b["system"], f) - getattr(a["system"], f) for f in ("idle", "iowait"))
    out["other"] = psutil.cpu_count() * seconds - idle - sum(out.values())
    return {k: round(v / seconds, 2) for k, v in out.items()}


def python_loop_ms() -> float:
    """The machine's speed right now: the best of five runs of a fixed pure-Python loop, in ms.

    These shared 2-core machines change speed from hour to hour (the same code and the same phase have
    measured 40% apart); this reference, taken next to every phase, tells a slow machine from slow code.
    """
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        sum(i * i for i in range(200_000))
        best = min(best, time.perf_counter() - t)
    return round(best * 1000, 1)


async def run_phase(clients: list[Client], server: psutil.Process, args, rate: float) -> dict:
    rec: dict = {"samples": [], "errors": {}, "posts_200": 0}
    t0 = time.perf_counter()
    start, stop = t0 + args.warmup, t0 + args.warmup + args.seconds
    loop, snaps = asyncio.get_running_loop(), []
    for at in (start, stop):
        loop.call_at(loop.time() + at - t0, lambda: snaps.append(cpu_snapshot(server)))
    await asyncio.gather(*(annotate(c, rec, t0, stop, len(clients) / rate if rate else 0) for c in clients))
    for c in clients:
        c.close()
    ok = [s for s in rec["samples"] if start <= s[1] <= stop and s[3]]
    lat, late = sorted((s[1] - s[0]) * 1000 for s in ok), sorted((s[1] - s[2]) * 1000 for s in ok)
    pct = lambda v, p: round(v[min(len(v) - 1, int(p / 100 * len(v)))], 1) if v else float("nan")  # noqa: E731
    cores = cpu_cores(*snaps, args.seconds) if len(snaps) == 2 else {}
    busy = sum(v for k, v in cores.items() if k != "other")  # cores used by gunicorn, PostgreSQL, client
    return {
        "judgments_per_s": round(len(ok) / args.seconds, 1),
        **{f"p{p}_ms": pct(lat, p) for p in (50, 95, 99)},
        "max_ms": pct(lat, 100), "p99_from_schedule_ms": pct(late, 99),
        "errors": sum(rec["errors"].values()), "error_kinds": rec["errors"],
        "ok_posts_total": sum(s[3] for s in rec["samples"]), "posts_200_total": rec["posts_200"],
        "drain_s": round(time.perf_counter() - stop, 2),
        "cpu_ms_per_judgment": round(1000 * busy * args.seconds / len(ok), 2) if ok else None,
        "machine_cpu_ms_per_judgment": round(1000 * sum(cores.values()) * args.seconds / len(ok), 2)
        if ok and cores else None,
        "cpu_cores": cores,
    }  # fmt: skip


def profile(requests: int = 21) -> dict:
    """The median of `requests` htmx judge requests in-process: time, statements, SQL time, slowest."""
    from django.contrib.auth.models import User
    from django.db import connection
    from django.test import Client as DjangoClient
    from django.test.utils import CaptureQueriesContext

    client, runs = DjangoClient(HTTP_HX_REQUEST="true"), []
    client.force_login(User.objects.get(username="annotator000"))
    action = ACTION.search(client.get(f"/projects/{SLUG}/label/").content).group(1).decode()
    for _ in range(requests):
        with CaptureQueriesContext(connection) as ctx:
            t = time.perf_counter()
            response = client.post(action, {"choice": "left"})
            if not (match := ACTION.search(response.content)):
                body = response.content[:2000]
                raise SystemExit(f"profile: {action} answered {response.status_code}, no next pair: {body!r}")
            action = match.group(1).decode()
            runs.append((time.perf_counter() - t, [(float(q["time"]) * 1000, q["sql"]) for q in ctx]))
    seconds, queries = sorted(runs, key=lambda r: r[0])[len(runs) // 2]
    return {"median_request_ms": round(seconds * 1000, 1), "queries": len(queries),
            "sql_ms": round(sum(ms for ms, _ in queries), 1),
            "slowest": [{"ms": ms, "sql": sql[:400]} for ms, sql in sorted(queries)[::-1][:3]]}  # fmt: skip


def commit(root: Path) -> str:
    """The commit checked out at `root` (with '+' when its working tree has changes)."""
    run = lambda *cmd: subprocess.run(["git", *cmd], cwd=root, capture_output=True, text=True).stdout  # noqa: E731
    return run("rev-parse", "--short", "HEAD").strip() + ("+" if run("status", "--porcelain", "-uno") else "")


def start_server(args, log: Path) -> tuple[subprocess.Popen, int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [
        args.code / ".venv/bin/gunicorn",
        "prefstudio.wsgi:application",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        f"{args.workers}",
        "--worker-class",
        args.worker_class,
        "--threads",
        f"{args.threads}",
    ]
    proc = subprocess.Popen(cmd, cwd=args.code, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)  # fmt: skip
    for _ in range(300):
        with contextlib.suppress(OSError), urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz"):
            return proc, port
        time.sleep(0.1)
    stop_server(proc)
    raise SystemExit(f"gunicorn did not get ready; see {log}")


def stop_server(proc: subprocess.Popen) -> None:
    """SIGTERM to gunicorn's process group (master and workers), then SIGKILL to whatever is left."""
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        with contextlib.suppress(ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, sig)
            proc.wait(wait)


def run_phases(args, sizes: list[int], phases: list[dict]) -> dict:
    """Seed, serve, and run every phase (appended to `phases`); the profile of one judge request."""
    from django.db import connection

    seed(max(sizes), args.pairs, args.history)
    connection.close()
    proc, port = start_server(args, args.out.with_suffix(".gunicorn.log"))
    say = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    try:
        server, t = psutil.Process(proc.pid), time.perf_counter()
        clients = [Client(port, f"annotator{i:03d}") for i in range(max(sizes))]
        asyncio.run(login_all(clients, max(2, args.workers * args.threads)))
        say(f"seeded {args.pairs:,} pairs; {len(clients)} logins took {time.perf_counter() - t:.0f}s")
        before = db_state()
        for n, mode in ((n, m) for n in sizes for m in ("max", "paced")[: 2 if args.rate else 1]):
            rate = args.rate if mode == "paced" else None
            speed = python_loop_ms()  # the machine's speed just before the phase
            result = asyncio.run(run_phase(clients[:n], server, args, rate or 0))
            result["python_loop_ms"] = speed
            after = db_state()
            added, checks = after["judgments"] - before["judgments"], dict(list(after.items())[1:-1])
            result["db"] = {"judgments_added": added, "free_slots": after["free_slots"], **checks}
            result["db_ok"] = added == result["ok_posts_total"] and not any(checks.values())
            phases.append({"annotators": n, "mode": mode, "offered_rate": rate, **result})
            say(f"N={n} {mode}: {result['judgments_per_s']} j/s, p99 {result['p99_ms']} ms, "
                f"errors {result['errors']}, db {'ok' if result['db_ok'] else result['db']}")  # fmt: skip
            if not after["free_slots"]:  # "All done" answers would count as errors from here on
                raise SystemExit(f"the project ran out of pairs after N={n} {mode}: raise --pairs")
            before = after
            connection.close()
    finally:
        stop_server(proc)
    return profile()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--sizes", default="10,50,100", help="comma-separated numbers of annotators")
    add("--seconds", type=float, default=20.0, help="measured seconds per phase")
    add("--warmup", type=float, default=3.0, help="unmeasured seconds before each phase")
    add("--rate", type=float, default=TARGET_RATE, help="offered judgments/s in the paced phase (0: none)")
    shipped = runpy.run_path(str(ROOT / "gunicorn.conf.py"))  # what the Dockerfile serves with
    add("--workers", type=int, default=shipped["workers"], help="gunicorn workers (gunicorn.conf.py's)")
    add("--worker-class", default=shipped["worker_class"], help="gunicorn worker class: gthread or sync")
    add("--threads", type=int, default=shipped.get("threads", 1), help="threads per worker (gthread)")
    add("--pairs", type=int, default=40000, help="enough free slots for six phases at 500 judgments/s")
    add("--history", type=float, default=0.25, help="share of pairs already judged k times before the run")
    add("--out", type=Path, default=ROOT / "var/bench/labeling_load.json")
    add("--code", type=Path, default=ROOT, help="the checkout to serve and profile (default: this one)")
    add("--db", default=BENCH_DB, help="scratch database name")
    args = parser.parse_args()
    args.code = args.code.resolve()
    sizes, phases = sorted(int(s) for s in args.sizes.split(",")), []
    warnings.filterwarnings("ignore", "No directory at")  # WhiteNoise: no collectstatic here
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with scratch_database(args.db, "bench/labeling_load.py") as (url, pg):
        os.environ.update({  # inherited by manage.py, gunicorn and this process's Django
            "DATABASE_URL": url, "PREFSTUDIO_ENV_FILE": "/dev/null", "LOG_LEVEL": "WARNING",
            "REDIS_URL": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
            "DJANGO_SETTINGS_MODULE": "prefstudio.settings", "DEBUG": "false", "SECURE_HSTS_SECONDS": "0",
            "SECRET_KEY": secrets.token_urlsafe(50), "ALLOWED_HOSTS": "127.0.0.1,testserver",
            "SECURE_SSL_REDIRECT": "false", "SESSION_COOKIE_SECURE": "false", "CSRF_COOKIE_SECURE": "false",
            "CONN_MAX_AGE": os.environ.get("CONN_MAX_AGE", "60"),
        })  # fmt: skip
        migrate(root=args.code)
        sys.path.insert(0, str(args.code))
        import django

        django.setup()
        from django.db import connections

        try:
            request_profile = run_phases(args, sizes, phases)
        finally:
            connections.close_all()
    report(args, sizes, phases, request_profile, pg)


def report(args, sizes: list[int], phases: list[dict], profiled: dict, pg: str) -> None:
    import django
    import gunicorn

    at = {(p["annotators"], p["mode"]): p for p in phases}
    n = TARGET_N if TARGET_N in sizes else sizes[len(sizes) // 2]
    paced = at.get((n, "paced"), at[n, "max"])
    errors, db_ok = sum(p["errors"] for p in phases), all(p["db_ok"] for p in phases)
    targets = [
        (f"p99 ms at N={n} {paced['mode']} (from schedule) < {TARGET_P99_MS}",
         paced["p99_from_schedule_ms"] < TARGET_P99_MS, paced["p99_from_schedule_ms"]),
        ("zero errors", errors == 0, errors),
        ("DB integrity in every phase", db_ok, db_ok),
    ]  # fmt: skip
    model = m[1].strip() if (m := re.search(r"model name\s*:(.*)", Path("/proc/cpuinfo").read_text())) else ""
    result = {
        "benchmark": "labeling_load", "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"cpu_count": os.cpu_count(), "cpu": model, "platform": platform.platform(),
                    "python": platform.python_version(), "postgres": pg, "django": django.__version__,
                    "gunicorn": gunicorn.__version__},
        "gunicorn": {"worker_class": args.worker_class, "workers": args.workers, "threads": args.threads,
                     "conn_max_age": int(os.environ["CONN_MAX_AGE"]),
                     "extra_args": os.environ.get("GUNICORN_CMD_ARGS", "")},
        "setup": {"pairs": args.pairs, "history": args.history, "overlap_k": K, "seconds": args.seconds,
                  "warmup": args.warmup, "offered_rate": args.rate},
        "code": {"root": str(args.code), "commit": commit(args.code)},
        "phases": phases, "profile": profiled,
        "targets": [{"target": name, "pass": ok, "value": value} for name, ok, value in targets],
        "pass": all(ok for _, ok, _ in targets),
    }  # fmt: skip
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    g = result["gunicorn"]
    print(f"\nlabeling_load: {os.cpu_count()} CPUs, gunicorn {g['workers']} x {g['worker_class']} "
          f"(threads {g['threads']}), PostgreSQL {pg.split()[0]}, {args.pairs:,} pairs, k={K}")  # fmt: skip
    head = f"{'N':>4}  {'phase':<10}{'j/s':>7}{'p50':>7}{'p95':>7}{'p99':>7}{'max':>7}{'p99sch':>8}{'err':>5}"
    print(head + "  cores gunicorn/pg/client/other  cpu/j  all/j  loop  db\n" + "-" * (len(head) + 56))
    for p in phases:
        name = p["mode"] + (f"@{p['offered_rate']:g}" if p["offered_rate"] else "")
        cols = "".join(f"{p[k]:>7}" for k in ("judgments_per_s", "p50_ms", "p95_ms", "p99_ms", "max_ms"))
        cores = "/".join(str(v) for v in p["cpu_cores"].values())
        every = p["machine_cpu_ms_per_judgment"] or 0
        speed = f"{p['cpu_ms_per_judgment']:>6}{every:>7}{p['python_loop_ms']:>6}"
        print(f"{p['annotators']:>4}  {name:<10}{cols}{p['p99_from_schedule_ms']:>8}{p['errors']:>5}  "
              f"{cores:<30}{speed}  {'ok' if p['db_ok'] else 'FAIL'}")  # fmt: skip
    print(f"profile: judge request {profiled['median_request_ms']} ms in-process, {profiled['queries']} "
          f"statements, {profiled['sql_ms']} ms SQL; slowest {profiled['slowest'][0]['ms']:.1f} ms: "
          f"{profiled['slowest'][0]['sql'][:50]}...")  # fmt: skip
    for name, ok, value in targets:
        print(f"{'PASS' if ok else 'FAIL'}  {name}: {value}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
