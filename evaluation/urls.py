from __future__ import annotations

from django.urls import path

from evaluation import views

app_name = "evaluation"

urlpatterns = [
    path("", views.round_index, name="round-index"),
    path("new/", views.round_create, name="round-create"),
    path("rounds/<int:round_id>/", views.round_detail, name="round-detail"),
    path("projects/<slug:slug>/leaderboard/", views.leaderboard, name="leaderboard"),
    path("judges/", views.judge_index, name="judge-index"),
    path("judges/new/", views.judge_create, name="judge-create"),
    path("judges/<int:judge_id>/", views.judge_detail, name="judge-detail"),
    path("judges/<int:judge_id>/cancel/", views.judge_cancel, name="judge-cancel"),
    path("judges/<int:judge_id>/resume/", views.judge_resume, name="judge-resume"),
]
