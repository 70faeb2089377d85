from __future__ import annotations

from django.urls import path

from labeling import export_views, invitation_views, review_views, views, workbench

app_name = "labeling"

urlpatterns = [
    path("label/", views.label_index, name="label-index"),
    path("review/", views.review_index, name="review-index"),
    path("export/", views.export_index, name="export-index"),
    path("projects/new/", views.project_create, name="project-create"),
    path("projects/rubric-preview/", views.rubric_preview, name="rubric-preview"),
    path("projects/<slug:slug>/", views.project_detail, name="project-detail"),
    path("projects/<slug:slug>/edit/", views.project_edit, name="project-edit"),
    path("projects/<slug:slug>/label/", workbench.workbench, name="workbench"),
    path("projects/<slug:slug>/label/<int:assignment_id>/judge/", workbench.judge, name="pair-judge"),
    path("projects/<slug:slug>/label/<int:assignment_id>/skip/", workbench.skip, name="pair-skip"),
    path("projects/<slug:slug>/recent/", workbench.recent, name="recent"),
    path(
        "projects/<slug:slug>/skipped/<int:assignment_id>/judge/",
        workbench.skipped_judge,
        name="skipped-judge",
    ),
    path(
        "projects/<slug:slug>/judgments/<int:judgment_id>/edit/",
        workbench.judgment_edit,
        name="judgment-edit",
    ),
    path("projects/<slug:slug>/review/", review_views.review_dashboard, name="review-dashboard"),
    path("projects/<slug:slug>/review/requeue/", review_views.pairs_requeue, name="pairs-requeue"),
    path(
        "projects/<slug:slug>/review/disagreements/",
        review_views.disagreement_list,
        name="disagreement-list",
    ),
    path(
        "projects/<slug:slug>/review/pairs/<int:pair_id>/",
        review_views.pair_adjudicate,
        name="pair-adjudicate",
    ),
    path(
        "projects/<slug:slug>/review/pairs/<int:pair_id>/send-back/",
        review_views.pair_send_back,
        name="pair-send-back",
    ),
    path(
        "projects/<slug:slug>/review/members/<int:member_id>/exclude/",
        review_views.member_exclude,
        name="member-exclude",
    ),
    path("projects/<slug:slug>/export/", export_views.export_page, name="export"),
    path("projects/<slug:slug>/export/new/", export_views.export_create, name="export-create"),
    path("projects/<slug:slug>/exports/<uuid:export>/", export_views.export_detail, name="export-detail"),
    path(
        "projects/<slug:slug>/exports/<uuid:export>/files/<str:name>",
        export_views.export_download,
        name="export-download",
    ),
    path(
        "projects/<slug:slug>/exports/<uuid:export>/delete/", export_views.export_delete, name="export-delete"
    ),
    path("projects/<slug:slug>/archive/", views.project_archive, name="project-archive"),
    path("projects/<slug:slug>/members/", views.member_add, name="member-add"),
    path("projects/<slug:slug>/members/<int:member_id>/", views.member_change, name="member-change"),
    path("projects/<slug:slug>/invitations/", invitation_views.invitation_new, name="invitation-create"),
    path(
        "projects/<slug:slug>/invitations/<int:invitation_id>/revoke/",
        invitation_views.invitation_remove,
        name="invitation-revoke",
    ),
    path("invite/<str:token>/", invitation_views.invitation_join, name="invitation-accept"),
    path("projects/<slug:slug>/import/", views.batch_upload, name="batch-upload"),
    path("projects/<slug:slug>/batches/<uuid:batch>/", views.batch_detail, name="batch-detail"),
    path("projects/<slug:slug>/batches/<uuid:batch>/import/", views.batch_commit, name="batch-commit"),
    path("projects/<slug:slug>/batches/<uuid:batch>/map/", views.batch_map, name="batch-map"),
    path("projects/<slug:slug>/batches/<uuid:batch>/delete/", views.batch_remove, name="batch-delete"),
    path("projects/<slug:slug>/batches/<uuid:batch>/report/", views.batch_report, name="batch-report"),
]
