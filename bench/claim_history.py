"""Benchmark: the judge request's cost as one annotator's lead over the others grows (PostgreSQL).

Pairs go to k annotators, nearly finished ones first. An annotator far ahead of the rest (a full-time
annotator beside part-time ones, or a team smaller than k) leaves a trail of pairs they judged that are
still open to others, and every claim of theirs must pass over that trail. This measures, in-process,
`submit_and_claim_next` (lock, store, count, claim, lease: one transaction) for:
- the leader, whose lead (pairs they judged that nobody else has yet) is 0, 1,000, 5,000 and 20,000;
- a follower with no history, who should be given pairs from the leader's trail (closest to k).
Reports the median and p95 ms of 60 requests each, and the share of the follower's pairs that came from
the trail. A lead is made with done assignments and judgments written directly, as a real one would be.
Target: at the longest lead the leader's median is under twice the follower's (the same tables, so the
machine's speed cancels out), and at least 90% of the follower's pairs come from the trail.

Scratch database `prefstudio_claimbench` on DATABASE_URL's server, dropped at the end.
Run: `.venv/bin/python bench/claim_history.py [--leads 0,1000,5000,20000] [--out PATH]`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path

from _scratch import migrate, scratch_database

ROOT = Path(__file__).resolve().parent.parent
BENCH_DB, K, REQUESTS = "prefstudio_claimbench", 3, 60
TARGET_RATIO = 2.0  # the leader's median judge request against the follower's, at the longest lead


def seed(n_pairs: int):
    from django.contrib.auth.models import Group, User

    from labeling.display import render_missing
    from labeling.models import ImportBatch, Membership, Pair, Project

    project = Project.objects.create(slug="claims", name="Claims", overlap=K, gold_rate=0)
    batch = ImportBatch.objects.create(project=project, source_name="bench", state="done")
    leader, follower = (User.objects.create(username=name) for name in ("leader", "follower"))
    group = Group.objects.get(name="annotator")
    for user in (leader, follower):
        user.groups.add(group)
        Membership.objects.create(project=project, user=user)
    Pair.objects.bulk_create(
        (
            Pair(project=project, batch=batch, prompt=f"Question {i}?", response_a=f"A {i}.",
                 response_b=f"B {i}.", shape="pair", content_hash=f"{i:064x}")
            for i in range(n_pairs)
        ),
        batch_size=5000,
    )  # fmt: skip
    render_missing(Pair.objects.filter(project=project))
    return project, leader, follower


def lead_by(project, leader, n: int) -> None:
    """Give the leader `n` more judged pairs that nobody else has judged (the oldest free ones)."""
    from django.db import connection
    from django.utils import timezone

    from labeling import tally
    from labeling.models import Assignment, Judgment, Pair

    then = timezone.now() - timedelta(hours=1)
    free = Pair.objects.filter(project=project, taken=0).order_by("id")
    fresh = list(free.values_list("id", flat=True)[:n])
    done = dict(state="done", leased_at=then, expires_at=then + timedelta(minutes=30), finished_at=then)
    made = Assignment.objects.bulk_create(
        [Assignment(project=project, pair_id=p, annotator=leader, **done) for p in fresh], batch_size=5000
    )
    Judgment.objects.bulk_create(
        [Judgment(pair_id=a.pair_id, annotator=leader, assignment=a, choice="a") for a in made],
        batch_size=5000,
    )
    Pair.objects.filter(pk__in=fresh).update(taken=1)
    tally.recount(project.pk)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE labeling_pair, labeling_assignment, labeling_judgment")


def time_requests(project, user, n: int) -> tuple[list[float], list[int]]:
    """`n` judge requests of `user` (ms each) and the `taken` of each pair claimed, before it was claimed."""
    from labeling.assignment import claim_next_pair
    from labeling.judging import Verdict, submit_and_claim_next

    lease, times, levels = claim_next_pair(project, user), [], []
    for _ in range(n):
        t = time.perf_counter()
        turn = submit_and_claim_next(
            assignment_id=lease.pk, annotator=user, project=project, verdict=Verdict(choice="left")
        )
        times.append((time.perf_counter() - t) * 1000)
        lease = turn.upcoming
        levels.append(lease.pair.taken - 1)
    return times, levels


def measure(leads: list[int]) -> list[dict]:
    """A row per lead: the leader's and the follower's judge requests at that lead."""
    project, leader, follower = seed(max(leads) + 10 * REQUESTS * len(leads) + 1000)
    rows, lead = [], 0
    for target in leads:
        lead_by(project, leader, target - lead)
        leader_ms, _ = time_requests(project, leader, REQUESTS)
        follower_ms, levels = time_requests(project, follower, REQUESTS)
        lead = target + REQUESTS  # the leader judged REQUESTS more
        row = {
            "lead": target,
            "leader_median_ms": round(statistics.median(leader_ms), 2),
            "leader_p95_ms": round(sorted(leader_ms)[int(0.95 * len(leader_ms))], 2),
            "follower_median_ms": round(statistics.median(follower_ms), 2),
            "follower_p95_ms": round(sorted(follower_ms)[int(0.95 * len(follower_ms))], 2),
            "follower_from_trail": round(sum(level > 0 for level in levels) / len(levels), 2),
        }
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--leads", default="0,1000,5000,20000")
    parser.add_argument("--out", type=Path, default=ROOT / "var/bench/claim_history.json")
    args = parser.parse_args()
    leads = [int(s) for s in args.leads.split(",")]
    rows = []
    with scratch_database(BENCH_DB, "bench/claim_history.py") as (url, _):
        os.environ.update({
            "DATABASE_URL": url, "PREFSTUDIO_ENV_FILE": "/dev/null", "LOG_LEVEL": "WARNING",
            "DJANGO_SETTINGS_MODULE": "prefstudio.settings", "DEBUG": "false",
            "SECRET_KEY": secrets.token_urlsafe(50),
        })  # fmt: skip
        migrate()
        sys.path.insert(0, str(ROOT))
        import django

        django.setup()
        from django.db import connections

        try:
            rows = measure(leads)
        finally:
            connections.close_all()
    longest = rows[-1]
    ratio = round(longest["leader_median_ms"] / longest["follower_median_ms"], 2)
    result = {
        "benchmark": "claim_history", "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version()},
        "setup": {"overlap_k": K, "requests": REQUESTS}, "rows": rows,
        "leader_to_follower": ratio,
        "target": f"at a lead of {longest['lead']:,}: leader / follower median < {TARGET_RATIO}, "
                  "follower from the trail >= 90%",
        "pass": ratio < TARGET_RATIO and min(r["follower_from_trail"] for r in rows) >= 0.9,
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nclaim_history: k={K}, {REQUESTS} judge requests per row (in-process, PostgreSQL)")
    print(f"{'lead':>7}{'leader p50':>12}{'p95':>8}{'follower p50':>14}{'p95':>8}  follower from trail")
    for r in rows:
        print(f"{r['lead']:>7,}{r['leader_median_ms']:>12}{r['leader_p95_ms']:>8}{r['follower_median_ms']:>14}"
              f"{r['follower_p95_ms']:>8}  {r['follower_from_trail']:.0%}")  # fmt: skip
    print(f"{'PASS' if result['pass'] else 'FAIL'}  {result['target']}: {ratio}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
