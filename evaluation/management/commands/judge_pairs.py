"""`manage.py judge_pairs PROJECT --model MODEL [--only-unsettled]`: an AI judge over a project's pairs, here
and now (or on the workers with --enqueue), then its calibration against the project's people."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from evaluation import judge_jobs
from evaluation.calibration import judge_calibration
from evaluation.judges import DEFAULT_TEMPLATE
from evaluation.models import Judge
from labeling.models import Project
from prefstudio.jobs import QueueUnavailable


def _interval(block: dict[str, Any], *, percent: bool = False) -> str:
    if block["value"] is None:
        return "undefined"
    scale, unit = (100, "%") if percent else (1, "")
    digits = 1 if percent else 3
    text = f"{block['value'] * scale:.{digits}f}{unit}"
    if block["low"] is not None:
        text += f" [{block['low'] * scale:.{digits}f}, {block['high'] * scale:.{digits}f}]"
    return text


def calibration_lines(judge: Judge, c: dict[str, Any]) -> list[str]:
    """The calibration numbers as the command prints them, one fact a line."""
    lines = [
        f"Judge {judge.pk} ({judge.name}, {judge.model_ref}): {c['judged']} pairs judged in both "
        f"orders, {c['unparseable']} unparseable."
    ]
    if c["position_consistency"] is not None:
        lines.append(
            f"Position consistency: {c['position_consistency']:.1%} ({c['inconsistent']} of "
            f"{c['readable']} pairs changed with the sides swapped)."
        )
    for name, what in (("left", "picked the answer shown first"), ("longer", "picked the longer answer")):
        r = c[name]
        if r["n"]:
            flag = " (biased, p < 0.01)" if r["biased"] else ""
            lines.append(
                f"{name.capitalize()} rate: {r['rate']:.1%} of {r['n']} {what}; "
                f"binomial p = {r['p']:.3g}{flag}."
            )
    a = c["agreement"]
    lines.append(
        f"Agreement with the people's consensus on {c['shared']} pairs: "
        f"{_interval(a['percent'], percent=True)}, Cohen's kappa {_interval(a['kappa'])} "
        "(95% bootstrap intervals)."
    )
    if c["people_agreement"]:
        p = c["people_agreement"]
        lines.append(f"The average annotator agrees with the others' majority {p['mean']:.1%} of the time "
                     f"({p['annotators']} annotators, {p['judgments']} judgments).")  # fmt: skip
    cal = c["calibration"]
    if cal["pairs"]:
        lines.append(f"Calibration on {cal['pairs']} pairs people decided A or B: Brier {cal['brier']:.3f}, "
                     f"expected calibration error {cal['ece']:.3f}.")  # fmt: skip
    for crit in c["criteria"]:
        lines.append(
            f"Criterion {crit['name']}: {crit['pairs']} pairs, agreement "
            f"{_interval(crit['percent'], percent=True)}, kappa {_interval(crit['kappa'])}."
        )
    return lines


class Command(BaseCommand):
    help = (
        "Judge the pairs of PROJECT with an AI judge, each pair in both orders, and print its calibration "
        "against the project's people. MODEL is a base model's name or folder, base:NAME, run:ID or "
        "endpoint:NAME (as for generate_pairs)."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("project", help="the project's slug")
        parser.add_argument("--model", required=True)
        parser.add_argument(
            "--only-unsettled", action="store_true", help="only pairs without a human consensus"
        )
        parser.add_argument("--name", default="", help="how the judge is shown (default: the model's name)")
        parser.add_argument("--template", type=Path, help="a file holding the judging prompt")
        parser.add_argument("--enqueue", action="store_true", help="hand the run to the workers and return")

    def handle(self, *args: Any, **o: Any) -> None:
        project = Project.objects.filter(slug=o["project"]).first()
        if project is None:
            raise CommandError(f"No project {o['project']!r}.")
        model = f"path:{o['model']}" if Path(o["model"]).is_dir() else o["model"]
        template = DEFAULT_TEMPLATE
        if o["template"]:
            try:
                template = o["template"].read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise CommandError(f"{o['template']}: {exc}") from None
        scope = Judge.Scope.UNSETTLED if o["only_unsettled"] else Judge.Scope.ALL
        try:
            judge = judge_jobs.judge_create(
                project=project, user=None, model_ref=model, name=o["name"], template=template, scope=scope,
                enqueue=o["enqueue"], allow_paths=not o["enqueue"],
            )  # fmt: skip
        except (ValueError, QueueUnavailable) as exc:
            raise CommandError(str(exc)) from None
        if o["enqueue"]:
            self.stdout.write(f"Queued judge {judge.pk} on {project.name}.")
            return
        scope_words = judge.get_scope_display().lower()
        self.stdout.write(f"Judge {judge.pk}: {judge.name} on {project.name} ({scope_words}) ...")
        try:
            outcome = judge_jobs.execute(judge.pk, worker="manage.py judge_pairs")
        except Exception as exc:
            judge.refresh_from_db()
            raise CommandError(judge.error or f"{type(exc).__name__}: {exc}") from None
        judge.refresh_from_db()
        self.stdout.write(f"Judge {judge.pk}: {outcome}.")
        for line in calibration_lines(judge, judge_calibration(judge)):
            self.stdout.write(line)
