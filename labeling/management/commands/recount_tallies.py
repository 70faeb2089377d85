"""Rebuild annotators' progress tallies from their assignments (after data was written around the app)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from labeling import tally
from labeling.models import Project


class Command(BaseCommand):
    help = (
        "Recount every annotator's judged and skipped assignments per project (the workbench's progress). "
        "Run it while nobody judges in the projects it recounts."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("slugs", nargs="*", metavar="SLUG", help="projects to recount (default: all)")

    def handle(self, *args: Any, slugs: list[str], **options: Any) -> None:
        projects = Project.objects.order_by("slug")
        if slugs:
            projects = projects.filter(slug__in=slugs)
            if missing := sorted(set(slugs) - set(projects.values_list("slug", flat=True))):
                raise CommandError(f"No project with slug: {', '.join(missing)}.")
        for project in projects:
            counted = tally.recount(project.pk)
            self.stdout.write(f"{project.slug}: {counted} annotator(s) with finished work.")
