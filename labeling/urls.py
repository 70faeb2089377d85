from __future__ import annotations

from django.urls import path

from labeling import views

app_name = "labeling"

urlpatterns = [
    path("label/", views.label_index, name="label-index"),
    path("review/", views.review_index, name="review-index"),
    path("export/", views.export_index, name="export-index"),
    path("projects/<slug:slug>/", views.project_detail, name="project-detail"),
]
