"""Benchmark: the agreement statistics at the sizes the Review page must handle (pure numpy, no database).

Measures, best of `--repeat` runs each:
- Krippendorff's alpha (nominal) on 1,000,000 judgments over 333,000 items and 50 raters, from numpy
  columns: coding them (`Ratings.from_arrays`) plus alpha. Target: under 0.5 s. Also, for information,
  alpha alone on the coded ratings and on the same data as a list of Python triples.
- The whole dashboard aggregate, `review_stats.project_report`, on 100,000 simulated judgments
  (overlap 3, 5% gold pairs, strength on, two criteria, six models, imported labels, one excluded and
  one left-biased annotator) with 1,000 bootstrap resamples. Target: under 1 s. Also, for information,
  `JudgmentTable.from_rows` on the same judgments as the row tuples a database query returns.
Also reports the machine's speed (`python_loop_ms`, the same fixed pure-Python loop as
bench/labeling_load.py) so a slow machine can be told from slow code.

Run: `.venv/bin/python bench/agreement.py [--repeat 3] [--out PATH]`.
Writes JSON to var/bench/agreement.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from labeling import agreement  # noqa: E402
from labeling.review_stats import JudgmentTable, project_report  # noqa: E402

ALPHA_TARGET_S, REPORT_TARGET_S = 0.5, 1.0


def python_loop_ms() -> float:
    """The machine's speed right now: the best of five runs of a fixed pure-Python loop, in ms."""
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        sum(i * i for i in range(200_000))
        best = min(best, time.perf_counter() - t)
    return round(best * 1000, 1)


def best_of(repeat: int, fn) -> tuple[float, object]:
    """The fastest of `repeat` calls of `fn`, in seconds, and its result."""
    best, result = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t)
    return best, result


def alpha_columns(n_judgments: int, n_items: int, n_raters: int, seed: int = 0):
    """Item, rater and label columns: three distinct raters per item, the rest on the first items."""
    rng = np.random.default_rng(seed)
    item = np.repeat(np.arange(n_items), 3)
    rater = ((rng.integers(0, n_raters, n_items)[:, None] + [0, 17, 33]) % n_raters).reshape(-1)
    extra = n_judgments - len(item)
    item = np.concatenate([item, np.arange(extra)])
    rater = np.concatenate([rater, (rater[: 3 * extra : 3] + 7) % n_raters])
    truth = rng.integers(0, 4, n_items)
    label = np.where(rng.random(len(item)) < 0.7, truth[item], rng.integers(0, 4, len(item)))
    return item, rater, label


def simulated_table(n_judgments: int, *, n_raters: int = 50, seed: int = 0) -> JudgmentTable:
    """About `n_judgments` judgments: pairs judged by 3 annotators (5% gold pairs by 10), 70% agreeing
    with a latent label; annotator 1 picks the left response 80% of the time."""
    rng = np.random.default_rng(seed)
    n_pairs = n_judgments // 3
    gold = rng.random(n_pairs) < 0.05
    per_pair = np.where(gold, 10, 3)
    item = np.repeat(np.arange(n_pairs), per_pair)
    rater = (np.repeat(rng.integers(0, n_raters, n_pairs), per_pair) + _ranks(per_pair) * 7) % n_raters + 1
    item, rater = item[:n_judgments], rater[:n_judgments]
    n = len(item)
    truth = rng.choice(["a", "b", "tie", "both_bad"], p=[0.45, 0.4, 0.1, 0.05], size=n_pairs)
    choice = np.where(rng.random(n) < 0.7, truth[item], rng.choice(["a", "b", "tie", "both_bad"], size=n))
    a_on_left = rng.random(n) < 0.5
    biased = (rater == 1) & np.isin(choice, ["a", "b"]) & (rng.random(n) < 0.8)
    choice = np.where(biased, np.where(a_on_left, "a", "b"), choice)
    models = np.array(["llama-3-8b", "mistral-7b", "qwen2-7b", "gpt-4o-mini", "gemma-2-9b", "phi-3-mini"])
    model_a, model_b = rng.integers(0, 6, n_pairs), rng.integers(0, 5, n_pairs)
    model_b = np.where(model_b >= model_a, model_b + 1, model_b)
    trl = rng.random(n_pairs) < 0.3
    return JudgmentTable(
        item=item,
        rater=rater,
        choice=choice,
        strength=np.where(np.isin(choice, ["a", "b"]), rng.choice(["slightly", "clearly", ""], size=n), ""),
        a_on_left=a_on_left,
        len_a=rng.integers(50, 2000, n_pairs)[item],
        len_b=rng.integers(50, 2000, n_pairs)[item],
        gold=np.where(gold, truth, "")[item],
        seconds=rng.gamma(2.0, 15.0, n),
        day=np.datetime64("2026-11-01") + (item * 30 // n_pairs).astype("timedelta64[D]"),
        criteria={
            "helpfulness": np.where(rng.random(n) < 0.9, np.where(choice == "both_bad", "tie", choice), ""),
            "honesty": rng.choice(["a", "b", "tie", ""], size=n),
        },
        model_a=models[model_a][item],
        model_b=models[model_b][item],
        original_label=np.where(trl, np.where(truth == "b", "b", "a"), "")[item],
    )


def from_triples_seconds(item: np.ndarray, rater: np.ndarray, label: np.ndarray) -> float:
    """Seconds for alpha on the same data given as a list of Python (item, rater, label) triples."""
    triples = list(zip(item.tolist(), rater.tolist(), label.tolist(), strict=True))
    return best_of(1, lambda: agreement.krippendorff_alpha(triples))[0]


def table_rows(table: JudgmentTable) -> list[tuple]:
    """The table as the row tuples a `values_list` query gives (Python dates, None for unknown)."""
    columns = [getattr(table, name).tolist() for name in ("item", "rater", "choice", "strength", "a_on_left",
                                                           "len_a", "len_b", "gold", "seconds")]  # fmt: skip
    days = table.day.astype(object).tolist()
    names = list(table.criteria)
    criteria = [
        {n: v for n, v in zip(names, answers, strict=True) if v}
        for answers in zip(*table.criteria.values(), strict=True)
    ]
    rest = [getattr(table, name).tolist() for name in ("model_a", "model_b", "original_label")]
    return list(zip(*columns, days, criteria, *rest, strict=True))


def from_rows_seconds(table: JudgmentTable, repeat: int) -> float:
    """Seconds for `JudgmentTable.from_rows` on the table's judgments as database row tuples."""
    rows = table_rows(table)
    return best_of(repeat, lambda: JudgmentTable.from_rows(rows, criteria=list(table.criteria)))[0]


def _ranks(sizes: np.ndarray) -> np.ndarray:
    """0, 1, ... within each run of `sizes`."""
    return np.arange(sizes.sum()) - np.repeat(np.cumsum(sizes) - sizes, sizes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "var" / "bench" / "agreement.json"))
    args = parser.parse_args()

    speed = python_loop_ms()
    item, rater, label = alpha_columns(1_000_000, 333_000, 50)
    alpha_s, alpha = best_of(
        args.repeat, lambda: agreement.krippendorff_alpha(agreement.Ratings.from_arrays(item, rater, label))
    )
    coded = agreement.Ratings.from_arrays(item, rater, label)
    alpha_only_s, _ = best_of(args.repeat, lambda: agreement.krippendorff_alpha(coded))
    triples_s = from_triples_seconds(item, rater, label)

    table = simulated_table(100_000)
    from_rows_s = from_rows_seconds(table, args.repeat)
    excluded = frozenset({2})
    report_s, report = best_of(
        args.repeat,
        lambda: project_report(table, excluded=excluded, overlap=3, use_strength=True, n_boot=1000, seed=0),
    )
    head = report["headline"]["without_excluded"]
    result = {
        "machine": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "cpus": os.cpu_count(),
            "python_loop_ms": speed,
        },
        "alpha": {
            "judgments": len(item),
            "items": int(len(np.unique(item))),
            "raters": int(len(np.unique(rater))),
            "alpha": alpha,
            "seconds": round(alpha_s, 4),
            "alpha_on_coded_seconds": round(alpha_only_s, 4),
            "from_python_triples_seconds": round(triples_s, 4),
            "target_seconds": ALPHA_TARGET_S,
            "pass": alpha_s < ALPHA_TARGET_S,
        },
        "project_report": {
            "judgments": len(table),
            "pairs": head["pairs"],
            "annotators": head["annotators"],
            "n_boot": 1000,
            "alpha": head["alpha"],
            "seconds": round(report_s, 4),
            "table_from_rows_seconds": round(from_rows_s, 4),
            "target_seconds": REPORT_TARGET_S,
            "pass": report_s < REPORT_TARGET_S,
        },
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"machine: python loop {speed} ms, {os.cpu_count()} CPUs")
    print(f"{'measure':<58}{'seconds':>9}{'target':>8}  result")
    a, r = result["alpha"], result["project_report"]
    print(
        f"{'alpha, 1M judgments / 333k items / 50 raters (code + alpha)':<58}{a['seconds']:>9}"
        f"{ALPHA_TARGET_S:>8}  {'PASS' if a['pass'] else 'FAIL'}"
    )
    print(f"{'  alpha alone on coded ratings':<58}{a['alpha_on_coded_seconds']:>9}")
    print(f"{'  from a list of Python triples (information)':<58}{a['from_python_triples_seconds']:>9}")
    print(f"{'project_report, 100k judgments, 1000 resamples':<58}{r['seconds']:>9}"
          f"{REPORT_TARGET_S:>8}  {'PASS' if r['pass'] else 'FAIL'}")  # fmt: skip
    print(
        f"{'  JudgmentTable.from_rows, 100k row tuples (information)':<58}{r['table_from_rows_seconds']:>9}"
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
