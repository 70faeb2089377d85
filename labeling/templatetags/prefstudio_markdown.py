from __future__ import annotations

from django import template
from django.utils.safestring import SafeString, mark_safe

from labeling.rendering import render_markdown

register = template.Library()


@register.filter(name="markdown")
def markdown_filter(text: str) -> SafeString:
    """Render untrusted markdown through the sanitizer; the only place its output is marked safe."""
    return mark_safe(render_markdown(text))  # noqa: S308 - sanitized by nh3 with an allowlist
