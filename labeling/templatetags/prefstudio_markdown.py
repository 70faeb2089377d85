from __future__ import annotations

from django import template
from django.utils.safestring import SafeString

from labeling.display import markdown_html

register = template.Library()


@register.filter(name="markdown")
def markdown_filter(text: str) -> SafeString:
    """Untrusted markdown through the sanitizer (labeling.rendering.render_markdown), rendered once per
    content and then taken from the cache: a rubric is shown on every workbench page."""
    return markdown_html(text)
