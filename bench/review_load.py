"""Load benchmark: the Review page while annotators judge. A lead reloads it once a second, idle and
while N annotators judge pairs, against gunicorn on PostgreSQL.

Seeds a scratch database (`prefstudio_reviewbench`, or --db) through Django: a project with N
annotators (50) and a lead; --pairs (2,000) pairs judged k = 3 times each by annotators drawn at random
(each right 60-90% of the time, two with a left bias; six models; a tenth gold, half with an imported
label; judgments spread over ten days), and --open-pairs (3,000) pairs left to judge. Then, against
gunicorn with gunicorn.conf.py's settings:

- cold: the lead's first load, which computes the report (what a recompute costs a page);
- then --cycles (2) of an idle window and a loaded one, alternated so that a machine whose speed drifts
  during the run (these shared machines vary 2-3x) slows both alike; in each, the lead loads the page
  once every --lead-interval s for --window s. Before each idle window (unmeasured): the Refresh button,
  and three rounds of six loads at once, so that every worker has loaded the statistics modules (and, in
  the code before this bench, computed the current report in its own cache). In each loaded window the
  N annotators judge, paced together at --rate judgments/s, starting --warmup s before the lead's
  loads. `--judging orm` (the default): through the services the judge endpoint calls
  (`claim_next_pair`, `submit_judgment`), from --writers threads of a separate process, so that gunicorn
  serves only the lead: what the Review page costs while judgments stream in. `--judging http`: through
  the real judge endpoint over HTTP (bench/labeling_load.py's client: each POST is the htmx judge
  action, its answer the next pair); on a shared 2-core machine 50 judgments/s of those alone can fill
  the three workers (judge p99 over a second), and the lead's loads then wait behind them.

Reports, idle and loaded, the lead's load latency (p50/p95/p99/max ms; with fewer than 100 loads p99 is
the slowest), the distinct reports the lead saw ("as of" times: the recomputes that reached the page),
gunicorn's CPU ms per load of the lead (the page's server time; with --judging http the judge requests'
too), the annotators' judge p99 and errors while loaded, CPU cores of gunicorn and PostgreSQL, and the
machine's speed just before the run (`python_loop_ms`); in-process on the seeded project: a recompute
of the report and a load of the kept one (median ms), and the kept report's size.
Targets: loaded p99 <= 2 x idle p99 (both measured in this run, so the machine's speed cancels out), and
at most one recompute per PREFSTUDIO_REVIEW_REFRESH_SECONDS while loaded (as the lead's pages show them).

Run: `.venv/bin/python bench/review_load.py [--judging orm|http] [--annotators 50] [--rate 50]
[--cycles 2] [--window 45] [--code CHECKOUT] [--out var/bench/review_load.json]`. `--code` serves another
checkout (with its own .venv or a link to this one), e.g. the code before a change, measured by this same
script:

    mkdir /tmp/before && git archive HEAD | tar -x -C /tmp/before && ln -s $PWD/.venv /tmp/before/.venv
    .venv/bin/python bench/review_load.py --code /tmp/before --out var/bench/review_load-before.json
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import multiprocessing
import os
import pickle
import platform
import random
import re
import runpy
import secrets
import statistics
import sys
import time
import warnings
from datetime import timedelta
from pathlib import Path

import labeling_load as load
import psutil
from _scratch import migrate, scratch_database

ROOT = Path(__file__).resolve().parent.parent
BENCH_DB, K, TARGET_RATIO = "prefstudio_reviewbench", load.K, 2.0
REVIEW = f"/projects/{load.SLUG}/review/"
MODELS = ["alpaca-7b", "vicuna-13b", "llama-2-70b", "mistral-7b", "gpt-3.5", "claude-2"]
# "As of" in the report region (this checkout), or the footer's "Computed ..." of the code before it.
AS_OF = re.compile(rb'<time datetime="([^"]+)">|Computed ([^<]+?) from')


def seed(args) -> None:
    from django.contrib.auth.hashers import make_password
    from django.contrib.auth.models import Group, User
    from django.db import connection
    from django.utils import timezone

    from labeling.display import render_missing
    from labeling.models import ImportBatch, Judgment, Membership, Pair, Project

    rng, hashed = random.Random(0), make_password(load.PASSWORD)
    project = Project.objects.create(slug=load.SLUG, name="Review bench", rubric="Prefer the correct answer.",
                                     overlap=K, lease_minutes=30, gold_rate=0)  # fmt: skip
    batch = ImportBatch.objects.create(project=project, source_name="bench", state="done")
    users = User.objects.bulk_create([User(username=f"annotator{i:03d}", password=hashed)
                                      for i in range(args.annotators)])  # fmt: skip
    lead = User.objects.create(username="lead", password=hashed)
    through = User.groups.through
    group = {name: Group.objects.get(name=name) for name in ("annotator", "lead")}
    through.objects.bulk_create([through(user=u, group=group["annotator"]) for u in users]
                                + [through(user=lead, group=group["lead"])])  # fmt: skip
    Membership.objects.bulk_create([Membership(project=project, user=u, role="annotator") for u in users]
                                   + [Membership(project=project, user=lead, role="lead")])  # fmt: skip
    pairs = []
    for i in range(args.pairs + args.open_pairs):
        a, b = (load.markdown(rng, rng.randint(120, 500)) for _ in "ab")
        model_a, model_b = rng.sample(MODELS, 2)
        judged = i < args.pairs
        pairs.append(Pair(
            project=project, batch=batch, prompt=f"Q{i}: " + load.markdown(rng, rng.randint(60, 200)),
            response_a=f"A {a}", response_b=f"B {b}", shape="pair", content_hash=f"{i:064x}",
            model_a=model_a, model_b=model_b, taken=K if judged else 0,
            gold=rng.choice("ab") if judged and rng.random() < 0.1 else "",
            original_label=rng.choice("ab") if rng.random() < 0.5 else "",
        ))  # fmt: skip
    Pair.objects.bulk_create(pairs, batch_size=2000)
    render_missing(Pair.objects.filter(project=project, taken=0))  # as the job after every import does
    skill = [rng.uniform(0.6, 0.9) for _ in users]
    left_biased = set(rng.sample(range(len(users)), 2))
    judgments = []
    for pair in pairs[: args.pairs]:
        truth = pair.gold or rng.choices(["a", "b", "tie", "both_bad"], weights=[45, 40, 10, 5])[0]
        for j in rng.sample(range(len(users)), K):
            a_on_left = rng.random() < 0.5
            if j in left_biased and rng.random() < 0.4:
                choice = "a" if a_on_left else "b"
            else:
                choice = truth if rng.random() < skill[j] else rng.choice(["a", "b", "tie", "both_bad"])
            judgments.append(Judgment(pair=pair, annotator=users[j], choice=choice, a_on_left=a_on_left,
                                      seconds_spent=rng.lognormvariate(3.5, 0.6)))  # fmt: skip
    Judgment.objects.bulk_create(judgments, batch_size=5000)
    now, per_day = timezone.now(), -(-args.pairs // 10)
    for day in range(10):  # ten days of history for the agreement-over-time chart
        chunk = [p.pk for p in pairs[day * per_day : (day + 1) * per_day]]
        Judgment.objects.filter(pair_id__in=chunk).update(created_at=now - timedelta(days=10 - day))
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE labeling_pair, labeling_assignment, labeling_judgment, auth_user")


def forget_report(project_pk: int) -> None:
    """An earlier run's report of a project with this id (and its recompute lock) out of the shared cache.
    The report would not be served (its project is another one), but a lock left by a killed run would
    hold back the recomputes measured here."""
    from django.core.cache import caches

    caches["shared"].delete_many([f"review:{project_pk}", f"review:{project_pk}:computing"])


def in_process() -> dict:
    """On the seeded project, in this process: a recompute of the report and a load of the kept one
    (median ms), and the size of the kept report."""
    from labeling import review
    from labeling.models import Project

    project = Project.objects.get(slug=load.SLUG)

    def median_ms(fn, n: int) -> float:
        times = []
        for _ in range(n):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return round(statistics.median(times) * 1000, 1)

    recompute = median_ms(lambda: review.review_report(project, refresh=True), 3)
    kept = median_ms(lambda: review.review_report(project), 20)
    return {"recompute_ms": recompute, "kept_report_ms": kept,
            "report_bytes": len(pickle.dumps(review.review_report(project)))}  # fmt: skip


async def lead_login(port: int) -> load.Client:
    lead = load.Client(port, "lead")
    await lead.request("GET", "/login/")
    form = {"csrfmiddlewaretoken": lead.cookies["csrftoken"], "username": "lead", "password": load.PASSWORD}
    if (status := (await lead.request("POST", "/login/", form))[0]) != 302:
        raise SystemExit(f"login of the lead answered {status}")
    lead.close()
    return lead


def twin(lead: load.Client) -> load.Client:
    """Another connection of the signed-in lead (a second tab)."""
    other = load.Client(lead.port, lead.username)
    other.cookies = dict(lead.cookies)
    return other


async def review_load(lead: load.Client) -> tuple[float, str | None]:
    """One load of the Review page: (ms, the "as of" of the report shown; None for an error)."""
    t = time.perf_counter()
    try:
        status, body = await lead.request("GET", REVIEW)
    except (OSError, asyncio.IncompleteReadError):
        lead.close()
        status, body = 0, b""
    ms = (time.perf_counter() - t) * 1000
    found = AS_OF.search(body) if status == 200 and b"Krippendorff" in body else None
    return ms, (found.group(1) or found.group(2)).decode() if found else None


async def lead_loop(
    lead: load.Client, start: float, stop: float, every: float
) -> list[tuple[float, str | None]]:
    loads, due = [], start
    while due < stop:
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        loads.append(await review_load(lead))
        due += every
    return loads


def judge_in_process(args, done, out) -> None:
    """--judging orm, in a process of its own (started with `spawn`): the annotators claim and judge pairs
    through the services, from --writers threads paced together at --rate judgments/s, from when it puts
    "ready" on `out` until `done` is set; then puts {"samples": [(end, seconds)], "errors": {kind: n}}
    (perf_counter: the machine's monotonic clock, the same in every process)."""
    import threading

    import django

    django.setup()
    from django.contrib.auth.models import User
    from django.db import connections

    from labeling.assignment import claim_next_pair
    from labeling.judging import Verdict, submit_judgment
    from labeling.models import Project

    project = Project.objects.get(slug=load.SLUG)
    annotators = User.objects.filter(username__startswith="annotator").order_by("username")
    users = list(annotators[: args.annotators])
    samples: list[tuple[float, float]] = []
    errors: dict[str, int] = {}
    every = args.writers / args.rate

    def writer(k: int) -> None:
        rng, mine = random.Random(k), users[k :: args.writers]
        due = time.perf_counter() + rng.uniform(0, every)
        try:
            for i in itertools.count():
                if done.is_set():
                    return
                time.sleep(max(0.0, due - time.perf_counter()))
                due += every
                t, user = time.perf_counter(), mine[i % len(mine)]
                try:
                    lease = claim_next_pair(project, user)
                    verdict = Verdict(choice=rng.choice(("left", "right", "tie")))
                    submit_judgment(assignment_id=lease.pk, annotator=user, project=project, verdict=verdict)
                    samples.append((time.perf_counter(), time.perf_counter() - t))
                except Exception as exc:  # noqa: BLE001 - counted and reported
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
        finally:
            connections.close_all()

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(args.writers)]
    out.put("ready")
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    out.put({"samples": samples, "errors": errors})


async def judging(annotators: list[load.Client], args) -> tuple[float, float, asyncio.Future]:
    """Start the annotators judging: (start, stop) of the window measured after --warmup s of it, and a
    future of (ms of each judgment that ended within the window, {error kind: count})."""
    loop = asyncio.get_running_loop()
    if args.judging == "http":
        rec: dict = {"samples": [], "errors": {}, "posts_200": 0}
        start = time.perf_counter() + args.warmup
        stop, every = start + args.window, len(annotators) / args.rate
        now = time.perf_counter()

        async def run() -> tuple[list[float], dict[str, int]]:
            await asyncio.gather(*(load.annotate(c, rec, now, stop, every) for c in annotators))
            return [(s[1] - s[0]) * 1000 for s in rec["samples"] if start <= s[1] <= stop and s[3]], rec[
                "errors"
            ]

        return start, stop, asyncio.ensure_future(run())
    spawn = multiprocessing.get_context("spawn")
    done, out = spawn.Event(), spawn.Queue()
    writer = spawn.Process(target=judge_in_process, args=(args, done, out))
    writer.start()
    await loop.run_in_executor(None, out.get)  # Django set up, judging begins
    start = time.perf_counter() + args.warmup
    stop = start + args.window

    async def finish() -> tuple[list[float], dict[str, int]]:
        await asyncio.sleep(max(0.0, stop - time.perf_counter()))
        done.set()
        written = await loop.run_in_executor(None, out.get)
        writer.join()
        return [s * 1000 for end, s in written["samples"] if start <= end <= stop], written["errors"]

    return start, stop, asyncio.ensure_future(finish())


def summary(loads: list[tuple[float, str | None]]) -> dict:
    ms = sorted(m for m, as_of in loads if as_of)
    pct = lambda p: round(ms[min(len(ms) - 1, int(p / 100 * len(ms)))], 1) if ms else float("nan")  # noqa: E731
    return {"loads": len(loads), "errors": sum(as_of is None for _, as_of in loads),
            **{f"p{p}_ms": pct(p) for p in (50, 95, 99)}, "max_ms": pct(100),
            "reports_seen": len({as_of for _, as_of in loads if as_of}),
            "each": [[round(ms, 1), as_of] for ms, as_of in loads]}  # fmt: skip


async def settle(lead: load.Client) -> None:
    """Unmeasured: the Refresh button (the code before it had none: a 405, ignored), then three rounds of
    six loads at once, so that every worker has loaded the statistics modules and, with the per-process
    cache of the code before, computed the current report."""
    form = {"csrfmiddlewaretoken": lead.cookies.get("csrftoken", "")}
    await twin(lead).request("POST", REVIEW, form)
    for _ in range(3):
        await asyncio.gather(*(review_load(twin(lead)) for _ in range(6)))


async def phases(port: int, server: psutil.Process, args) -> dict:
    """The cold load, then --cycles of an idle window and a loaded one (alternated, so that a machine
    whose speed drifts during the run slows both alike), each --window s of the lead's loads."""
    lead = await lead_login(port)
    cold, _ = await review_load(lead)
    annotators = [load.Client(port, f"annotator{i:03d}") for i in range(args.annotators)]
    if args.judging == "http":
        await load.login_all(annotators, 6)
    idle: list = []
    loaded: list = []
    judge_ms: list[float] = []
    errors: dict[str, int] = {}
    cores: dict[str, list[dict]] = {"idle": [], "loaded": []}
    for _ in range(args.cycles):
        await settle(lead)
        t0 = time.perf_counter()
        before = load.cpu_snapshot(server)
        idle += await lead_loop(lead, t0, t0 + args.window, args.lead_interval)
        cores["idle"].append(load.cpu_cores(before, load.cpu_snapshot(server), time.perf_counter() - t0))

        start, stop, judged = await judging(annotators, args)
        await asyncio.sleep(max(0.0, start - time.perf_counter()))
        before = load.cpu_snapshot(server)
        loaded += await lead_loop(lead, start, stop, args.lead_interval)
        cores["loaded"].append(load.cpu_cores(before, load.cpu_snapshot(server), time.perf_counter() - start))
        ms, kinds = await judged
        judge_ms += ms
        for kind, n in kinds.items():
            errors[kind] = errors.get(kind, 0) + n
    ok = sorted(judge_ms)
    judge = {
        "how": args.judging,
        "judgments_per_s": round(len(ok) / (args.window * args.cycles), 1),
        "p99_ms": round(ok[min(len(ok) - 1, int(0.99 * len(ok)))], 1) if ok else None,
        "errors": sum(errors.values()), "error_kinds": errors,
    }  # fmt: skip
    mean = lambda snaps: {k: round(statistics.mean(s[k] for s in snaps), 2) for k in snaps[0]}  # noqa: E731
    # Server time per load: gunicorn's CPU over the window per load of the lead (with --judging http it
    # holds the judge requests' too).
    per_load = lambda snaps, n: round(mean(snaps)["gunicorn"] * args.window * args.cycles * 1000 / n, 1)  # noqa: E731
    return {
        "cold_ms": round(cold, 1),
        "idle": {**summary(idle), "cpu_cores": mean(cores["idle"]),
                 "gunicorn_cpu_ms_per_load": per_load(cores["idle"], len(idle))},
        "loaded": {**summary(loaded), "judging": judge, "cpu_cores": mean(cores["loaded"]),
                   "gunicorn_cpu_ms_per_load": per_load(cores["loaded"], len(loaded))},
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--annotators", type=int, default=50)
    add("--pairs", type=int, default=2000, help="pairs already judged k = 3 times")
    add("--open-pairs", type=int, default=3000, help="pairs left to judge while loaded")
    add("--rate", type=float, default=50.0, help="judgments/s the annotators offer together while loaded")
    add("--cycles", type=int, default=2, help="idle and loaded windows, alternated")
    add("--window", type=float, default=45.0, help="seconds of the lead's loads per window")
    add("--warmup", type=float, default=3.0, help="judging seconds before each loaded window")
    add("--lead-interval", type=float, default=1.0, help="seconds between the lead's loads")
    add("--judging", choices=("orm", "http"), default="orm", help="the services, or the judge endpoint")
    add("--writers", type=int, default=5, help="threads judging with --judging orm")
    shipped = runpy.run_path(str(ROOT / "gunicorn.conf.py"))  # what the Dockerfile serves with
    add("--workers", type=int, default=shipped["workers"], help="gunicorn workers (gunicorn.conf.py's)")
    add("--worker-class", default=shipped["worker_class"], help="gunicorn worker class: gthread or sync")
    add("--threads", type=int, default=shipped.get("threads", 1), help="threads per worker (gthread)")
    add("--out", type=Path, default=ROOT / "var/bench/review_load.json")
    add("--code", type=Path, default=ROOT, help="the checkout to serve and measure (default: this one)")
    add("--db", default=BENCH_DB, help="scratch database name")
    args = parser.parse_args()
    args.code = args.code.resolve()
    if args.rate * (args.window + args.warmup) * args.cycles > args.open_pairs * K * 0.9:
        raise SystemExit("--open-pairs is too small for --rate x (--window + --warmup) x --cycles judgments")
    warnings.filterwarnings("ignore", "No directory at")  # WhiteNoise: no collectstatic here
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with scratch_database(args.db, "bench/review_load.py") as (url, pg):
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
        from django.db import connection, connections

        from labeling.models import Project

        try:
            t = time.perf_counter()
            seed(args)
            forget_report(Project.objects.get(slug=load.SLUG).pk)
            print(f"seeded in {time.perf_counter() - t:.0f}s", file=sys.stderr, flush=True)
            connection.close()
            speed = load.python_loop_ms()
            proc, port = load.start_server(args, args.out.with_suffix(".gunicorn.log"))
            try:
                measured = asyncio.run(phases(port, psutil.Process(proc.pid), args))
            finally:
                load.stop_server(proc)
            measured["in_process"] = in_process()
        finally:
            connections.close_all()
    report(args, measured, speed, pg)


def report(args, measured: dict, speed: float, pg: str) -> None:
    import django
    from django.conf import settings

    idle, loaded = measured["idle"], measured["loaded"]
    ratio = round(loaded["p99_ms"] / idle["p99_ms"], 2)
    errors = idle["errors"] + loaded["errors"]
    # Recomputes the lead saw while loaded: the reports shown, less the one each window starts with; at
    # most one per interval (the first comes at once: the window starts with a report older than that).
    interval = getattr(settings, "PREFSTUDIO_REVIEW_REFRESH_SECONDS", 30)
    recomputes, most = loaded["reports_seen"] - args.cycles, args.cycles * math.ceil(args.window / interval)
    targets = [
        (f"Review p99 loaded / idle <= {TARGET_RATIO}", ratio <= TARGET_RATIO, ratio),
        (f"recomputes seen while loaded <= {most} (one per {interval:g} s)", recomputes <= most, recomputes),
        ("no Review load failed", errors == 0, errors),
        ("no judge request failed", loaded["judging"]["errors"] == 0, loaded["judging"]["errors"]),
    ]
    model = m[1].strip() if (m := re.search(r"model name\s*:(.*)", Path("/proc/cpuinfo").read_text())) else ""
    result = {
        "benchmark": "review_load", "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"cpu_count": os.cpu_count(), "cpu": model, "platform": platform.platform(),
                    "python": platform.python_version(), "postgres": pg, "django": django.__version__,
                    "python_loop_ms": speed},
        "gunicorn": {"worker_class": args.worker_class, "workers": args.workers, "threads": args.threads},
        "setup": {"annotators": args.annotators, "judged_pairs": args.pairs, "open_pairs": args.open_pairs,
                  "overlap_k": K, "rate": args.rate, "cycles": args.cycles, "window": args.window,
                  "warmup": args.warmup, "lead_interval": args.lead_interval,
                  "judging": args.judging, "writers": args.writers},
        "code": {"root": str(args.code), "commit": load.commit(args.code)},
        **measured, "p99_ratio": ratio,
        "targets": [{"target": name, "pass": ok, "value": value} for name, ok, value in targets],
        "pass": all(ok for _, ok, _ in targets),
    }  # fmt: skip
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    g, judging = result["gunicorn"], loaded["judging"]
    print(f"\nreview_load: {os.cpu_count()} CPUs, gunicorn {g['workers']} x {g['worker_class']}, PostgreSQL "
          f"{pg.split()[0]}, {args.annotators} annotators, {args.pairs:,} judged pairs, k={K}, "
          f"code {result['code']['commit']}, python_loop_ms {speed}")  # fmt: skip
    print(f"cold load (computes the report): {measured['cold_ms']} ms")
    head = f"{'phase':<8}{'loads':>6}{'p50':>8}{'p95':>8}{'p99':>8}{'max':>8}{'reports':>9}{'err':>5}"
    head += "  gunicorn ms/load  cores"
    print(head + "\n" + "-" * (len(head) + 26))
    for name, p in (("idle", idle), ("loaded", loaded)):
        cols = "".join(f"{p[k]:>8}" for k in ("p50_ms", "p95_ms", "p99_ms", "max_ms"))
        cores = " ".join(f"{k} {v}" for k, v in p["cpu_cores"].items() if k in ("gunicorn", "postgres"))
        print(f"{name:<8}{p['loads']:>6}{cols}{p['reports_seen']:>9}{p['errors']:>5}"
              f"  {p['gunicorn_cpu_ms_per_load']:>16}  {cores}")  # fmt: skip
    print(f"judging while loaded: {judging['judgments_per_s']} judgments/s, p99 {judging['p99_ms']} ms, "
          f"errors {judging['errors']}")  # fmt: skip
    ip = measured["in_process"]
    print(f"in-process: recompute {ip['recompute_ms']} ms, kept report {ip['kept_report_ms']} ms, "
          f"{ip['report_bytes']:,} bytes")  # fmt: skip
    for name, ok, value in targets:
        print(f"{'PASS' if ok else 'FAIL'}  {name}: {value}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
