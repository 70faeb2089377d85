"""The API tokens page: each signed-in user lists, makes and revokes their own tokens."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST

from api.models import ApiToken
from api.tokens import create_token, revoke, state
from prefstudio.roles import requires


class TokenForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="What will use it, e.g. “nightly export”.")
    expires_days = forms.IntegerField(
        required=False,
        min_value=1,
        max_value=3650,
        label="Expires after (days)",
        help_text="Leave empty for a token that works until you revoke it.",
    )


@requires()
@require_http_methods(["GET", "POST"])
@never_cache  # the answer to a POST holds the new token
def token_index(request: HttpRequest) -> HttpResponse:
    """GET: my tokens and the form; POST: make one and show it, this once, above the list."""
    form = TokenForm(request.POST) if request.method == "POST" else TokenForm()
    created = None
    if form.is_valid():
        raw, token = create_token(request.user, **form.cleaned_data)
        created, form = {"raw": raw, "token": token}, TokenForm()
    rows = [{"token": t, "state": state(t)} for t in ApiToken.objects.filter(user=request.user)]
    context = {"rows": rows, "form": form, "created": created}
    return render(request, "api/tokens.html", context, status=400 if form.errors else 200)


@requires()
@require_POST
def token_revoke(request: HttpRequest, token_id: int) -> HttpResponse:
    token = get_object_or_404(ApiToken, pk=token_id, user=request.user)
    revoke(token)
    messages.success(request, f"Token “{token.name}” revoked: it no longer works.")
    return redirect("api:token-index")
