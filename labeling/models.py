"""Labeling data: projects and who works on them."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.urls import reverse


class Project(models.Model):
    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    rubric = models.TextField(blank=True, help_text="Markdown shown to annotators beside every pair.")
    archived = models.BooleanField(default=False)
    members = models.ManyToManyField(settings.AUTH_USER_MODEL, through="Membership", related_name="projects")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        permissions = [
            ("label_pairs", "Can judge pairs"),
            ("review_project", "Can review agreement and adjudicate"),
            ("export_data", "Can export preference data"),
            ("manage_training", "Can launch and cancel training runs"),
        ]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("labeling:project-detail", kwargs={"slug": self.slug})


class Membership(models.Model):
    class Role(models.TextChoices):
        ANNOTATOR = "annotator", "Annotator"
        LEAD = "lead", "Lead"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.ANNOTATOR)
    active = models.BooleanField(
        default=True, help_text="Inactive members keep their history but get no work."
    )
    joined_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["project", "user"], name="membership_unique_user")]
        ordering = ["project", "user__username"]

    def __str__(self) -> str:
        return f"{self.user} in {self.project} as {self.role}"
