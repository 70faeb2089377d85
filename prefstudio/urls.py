from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from api.v1 import api
from prefstudio import views
from prefstudio.roles import public, requires

admin.site.site_header = "prefstudio admin"
admin.site.site_title = "prefstudio"

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", views.healthz, name="healthz"),
    path("login/", public(auth_views.LoginView.as_view(redirect_authenticated_user=True)), name="login"),
    path("logout/", public(auth_views.LogoutView.as_view()), name="logout"),
    path("password/", requires()(auth_views.PasswordChangeView.as_view()), name="password_change"),
    path(
        "password/done/", requires()(auth_views.PasswordChangeDoneView.as_view()), name="password_change_done"
    ),
    path("", include("labeling.urls")),
    path("training/", include("training.urls")),
    path("generation/", include("generation.urls")),
    path("evaluation/", include("evaluation.urls")),
    path("account/api-tokens/", include("api.urls_account")),
    path("api/v1/", api.urls),
    # django-rq's dashboard: every view is staff_member_required; only admins are staff here.
    path("admin/rq/", include("django_rq.urls")),
    path("admin/", admin.site.urls),
]
