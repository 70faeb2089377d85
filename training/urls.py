from __future__ import annotations

from django.urls import path

from training import views

app_name = "training"

urlpatterns = [
    path("", views.run_index, name="run-index"),
]
