"""`manage.py eval_report PROJECT [--json]`: the evaluation numbers of a project, as its pages show them."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from evaluation import services
from evaluation.models import EvaluationRound
from labeling.models import Project


class Command(BaseCommand):
    help = (
        "Print the blind evaluation results of PROJECT (its rounds, or the rounds judged in it): each "
        "round's win rate with its 95% interval and sentence, per criterion, agreement; the Bradley–Terry "
        "leaderboard (--style for the answer-length covariate); the runs compared. --json for machines."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("project", help="a project's slug: the evaluation project or the source project")
        parser.add_argument("--json", action="store_true", dest="as_json")
        parser.add_argument(
            "--style", action="store_true", help="style control: answer length as a covariate"
        )

    def handle(self, *args: Any, project: str, as_json: bool, style: bool, **options: Any) -> None:
        found = Project.objects.filter(slug=project).first()
        if found is None:
            raise CommandError(f"No project {project!r}.")
        rounds = list(
            EvaluationRound.objects.filter(project=found).select_related(
                "run__snapshot__project", "generation_job"
            )
            | EvaluationRound.objects.filter(source_project=found).select_related("run__snapshot__project")
        )
        report = {"project": found.slug, "rounds": [], "leaderboards": {}, "runs": []}
        for round_ in rounds:
            results = services.round_results(round_)
            rate = results["win_rate"]
            report["rounds"].append({
                "round": round_.pk, "models": round_.model_refs, "project": round_.project.slug,
                "prompts": round_.prompts_note, "pairs": results["pairs"], "judgments": results["judgments"],
                "win_rate": rate.to_dict() if rate else None, "sentence": results.get("sentence", ""),
                "criteria": {name: c.to_dict() for name, c in results["criteria"].items()},
                "alpha": results["alpha"],
            })  # fmt: skip
        for target in {r.project for r in rounds}:
            report["leaderboards"][target.slug] = services.project_leaderboard(target, style=style)
        for row in services.runs_comparison(rounds):
            run, rate, outcome = row["run"], row["win_rate"], row["outcome"]
            report["runs"].append({
                "run": run.pk, "method": run.config.get("loss_type"), "beta": run.config.get("beta"),
                "learning_rate": run.config.get("learning_rate"), "steps": run.step,
                "share_change": outcome.change if outcome else None,
                "win_rate_over_base": rate.to_dict() if rate else None,
            })  # fmt: skip
        if as_json:
            self.stdout.write(json.dumps(report, indent=2, default=str))
            return
        self._print(report)

    def _print(self, report: dict[str, Any]) -> None:
        out = self.stdout.write
        if not report["rounds"]:
            out(f"No evaluation rounds in or from {report['project']}.")
            return
        for r in report["rounds"]:
            out(f"Round {r['round']}: {' vs '.join(r['models'])} in {r['project']} ({r['prompts']})")
            out(f"  {r['pairs']} pairs, {r['judgments']} judgments" + (
                f", Krippendorff's alpha {r['alpha']:.2f}" if r["alpha"] is not None else ""))  # fmt: skip
            if r["sentence"]:
                out(f"  {r['sentence']}")
            for name, c in r["criteria"].items():
                out(f"  {name}: {c['rate']:.0%} of prompts")
        for slug, board in report["leaderboards"].items():
            if not board:
                continue
            out(f"Leaderboard of {slug}:")
            for i, m in enumerate(board["models"], 1):
                bounds = (
                    f"{m['low']:.0f} to {m['high']:.0f}" if m.get("low") is not None else m.get("note", "")
                )
                out(f"  {i}. {m['model']}: {m['rating']:.0f} ({bounds}), {m['battles']} battles")
        for run in report["runs"]:
            rate, change = run["win_rate_over_base"], run["share_change"]
            settings = f"{run['method']} beta {run['beta']} lr {run['learning_rate']} {run['steps']} steps"
            share = f"{change:+.2f}" if change is not None else "-"
            verdict = f"win rate over base {rate['rate']:.0%}" if rate else "not judged yet"
            out(f"Run {run['run']}: {settings}; held-out share change {share}; {verdict}")
