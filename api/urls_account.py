"""The account pages of the api app, included under /account/api-tokens/."""

from __future__ import annotations

from django.urls import path

from api import views

app_name = "api"
urlpatterns = [
    path("", views.token_index, name="token-index"),
    path("<int:token_id>/revoke/", views.token_revoke, name="token-revoke"),
]
