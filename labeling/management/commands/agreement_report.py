"""`manage.py agreement_report SLUG [--json]`: the numbers of the Review page, on the command line."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from labeling.models import Membership, Project
from labeling.review import review_report


def _num(value: Any, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _estimate(value: dict | None) -> str:
    if not value or value.get("value") is None:
        return "–"
    text = _num(value["value"])
    if value.get("low") is not None:
        text += f" [{_num(value['low'])}, {_num(value['high'])}]"
    return text


class Command(BaseCommand):
    help = "Print a project's agreement report: the same numbers as its Review page (--json for all of them)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("project", help="the project's slug")
        parser.add_argument("--json", action="store_true", help="the whole report as JSON")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            project = Project.objects.get(slug=options["project"])
        except Project.DoesNotExist:
            raise CommandError(f"No project with slug '{options['project']}'.") from None
        report = review_report(project, refresh=True)  # a script wants the numbers as of now
        if options["json"]:
            self.stdout.write(json.dumps(report, indent=2, ensure_ascii=False))
            return
        names = dict(Membership.objects.filter(project=project).values_list("user_id", "user__username"))
        h = report["headline"]["without_excluded"]
        out = self.stdout.write
        out(
            f"{project.name} ({project.slug}): {h['judgments']} judgments on {h['pairs']} pairs, "
            f"{h['complete_pairs']} complete (k = {project.overlap}), {h['annotators']} annotators"
        )
        out(f"  Krippendorff's alpha (nominal): {_estimate(h['alpha'])}")
        if h.get("alpha_ordinal"):
            out(f"  Krippendorff's alpha (ordinal): {_estimate(h['alpha_ordinal'])}")
        out(f"  Fleiss' kappa: {_estimate(h['fleiss_kappa'])}")
        out(f"  percent agreement: {_estimate(h['percent_agreement'])}")
        if report["settings"]["excluded"]:
            w = report["headline"]["with_excluded"]
            kappa = _estimate(w["fleiss_kappa"])
            out(f"  with excluded annotators: alpha {_estimate(w['alpha'])}, Fleiss' kappa {kappa}")
        for name, c in report["criteria"].items():
            out(f"  criterion {name}: alpha {_estimate(c['without_excluded']['alpha'])}")
        out("")
        widths = [("annotator", -16), ("judg.", 6), ("agree", 7), ("gold", 7), ("left", 7), ("p", 9),
                  ("longer", 8), ("tie", 6), ("DS acc", 8)]  # fmt: skip
        out("".join(f"{name:<{-w}}" if w < 0 else f"{name:>{w}}" for name, w in widths))
        for a in report["annotators"]:
            flag = " position bias" if a["position_bias"] else ""
            flag += " (excluded)" if a["excluded"] else ""
            rates = [_num(a[key], 2) for key in ("agreement", "gold_accuracy", "left_rate")]
            cells = [a["judgments"], *rates, _num(a["left_p"], 4)]
            cells += [_num(a[key], 2) for key in ("longer_rate", "tie_rate", "ds_accuracy")]
            row = f"{names.get(a['rater'], a['rater'])!s:<16}"
            row += "".join(f"{cell!s:>{w}}" for cell, (_, w) in zip(cells, widths[1:], strict=True))
            out(row + flag)
        out("")
        out(f"Split pairs: {report['disagreements']['total']}")
        if report["leaderboard"]:
            out("Leaderboard (Bradley–Terry, 95% bootstrap interval):")
            for m in report["leaderboard"]["models"]:
                interval = f"[{_num(m['low'], 0)}, {_num(m['high'], 0)}]"
                out(f"  {m['model']:<24}{m['rating']:>8.0f}  {interval}  {m['battles']} battles")
