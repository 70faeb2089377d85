"""The turns of a pair in Django templates, with the workbench's own markup."""

from __future__ import annotations

from django import template
from django.template.loader import render_to_string
from django.utils.safestring import SafeString, mark_safe

from labeling import conversations
from labeling.display import Turn

register = template.Library()


@register.simple_tag
def turns(shown_turns: list[Turn], plain: bool) -> SafeString:
    """A prompt's or a response's turns (labeling.display) through templates/jinja2/labeling/turns.html,
    which escapes every text that is not sanitized HTML."""
    html = render_to_string("labeling/turns.html", {"turns": shown_turns, "plain": plain}, using="jinja2")
    return mark_safe(html)  # noqa: S308 - autoescaped by Jinja2; markdown sanitized by nh3


@register.filter
def readable(value: str | list) -> str:
    """A prompt or a stored response as plain text for a short preview (labeling.conversations.readable)."""
    return conversations.readable(value)
