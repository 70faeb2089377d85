from __future__ import annotations

from django.urls import path

from evaluation import views

app_name = "evaluation"

urlpatterns = [
    path("", views.round_index, name="round-index"),
    path("new/", views.round_create, name="round-create"),
    path("rounds/<int:round_id>/", views.round_detail, name="round-detail"),
    path("projects/<slug:slug>/leaderboard/", views.leaderboard, name="leaderboard"),
]
