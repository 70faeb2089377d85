from __future__ import annotations

from django.urls import path

from labeling import views

app_name = "labeling"

urlpatterns = [
    path("label/", views.label_index, name="label-index"),
    path("review/", views.review_index, name="review-index"),
    path("export/", views.export_index, name="export-index"),
    path("projects/new/", views.project_create, name="project-create"),
    path("projects/rubric-preview/", views.rubric_preview, name="rubric-preview"),
    path("projects/<slug:slug>/", views.project_detail, name="project-detail"),
    path("projects/<slug:slug>/edit/", views.project_edit, name="project-edit"),
    path("projects/<slug:slug>/archive/", views.project_archive, name="project-archive"),
    path("projects/<slug:slug>/import/", views.batch_upload, name="batch-upload"),
    path("projects/<slug:slug>/batches/<uuid:batch>/", views.batch_detail, name="batch-detail"),
    path("projects/<slug:slug>/batches/<uuid:batch>/import/", views.batch_commit, name="batch-commit"),
    path("projects/<slug:slug>/batches/<uuid:batch>/delete/", views.batch_remove, name="batch-delete"),
    path("projects/<slug:slug>/batches/<uuid:batch>/report/", views.batch_report, name="batch-report"),
]
