"""The API's interactive documentation (Swagger UI) under the site's Content-Security-Policy.

django-ninja renders its own template only when "ninja" is in INSTALLED_APPS, and otherwise one that loads
Swagger UI from a CDN with an inline script. `DOCS` renders templates/api/docs.html instead, always: the
Swagger UI files django-ninja ships (static/ninja/, found by staticfiles because "ninja" is an installed
app), started by its own swagger-ui-init.js, with the settings in a `json_script` block: no CDN, no
inline script or style.

Used as `NinjaAPI(docs=DOCS, docs_url="/docs")`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from ninja.openapi.docs import Swagger

if TYPE_CHECKING:
    from ninja import NinjaAPI


class LocalSwagger(Swagger):
    template = "api/docs.html"

    def render_page(self, request: HttpRequest, api: NinjaAPI, **kwargs: Any) -> HttpResponse:
        swagger_settings = {**self.settings, "url": self.get_openapi_url(api, kwargs)}
        return render(request, self.template, {"api": api, "swagger_settings": swagger_settings})


# No validator: Swagger UI would otherwise send the schema to validator.swagger.io.
DOCS = LocalSwagger(settings={"validatorUrl": None})
