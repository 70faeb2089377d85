from __future__ import annotations

from django.urls import path

from generation import views

app_name = "generation"

urlpatterns = [
    path("", views.job_index, name="job-index"),
    path("new/", views.job_create, name="job-create"),
    path("jobs/<int:job_id>/", views.job_detail, name="job-detail"),
    path("jobs/<int:job_id>/cancel/", views.job_cancel, name="job-cancel"),
    path("jobs/<int:job_id>/resume/", views.job_resume, name="job-resume"),
    path("endpoints/new/", views.endpoint_create, name="endpoint-create"),
    path("endpoints/<int:endpoint_id>/delete/", views.endpoint_delete, name="endpoint-delete"),
    path("playground/", views.playground, name="playground"),
    path("playground/<int:job_id>/", views.playground_job, name="playground-job"),
    path("runs/<int:run_id>/next-round/", views.next_round, name="next-round"),
]
