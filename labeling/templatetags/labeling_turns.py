"""Pairs as text in Django templates (the turns themselves: templates/labeling/partials/_turns.html)."""

from __future__ import annotations

from django import template

from labeling import conversations

register = template.Library()


@register.filter
def readable(value: str | list) -> str:
    """A prompt or a stored response as plain text for a short preview (labeling.conversations.readable)."""
    return conversations.readable(value)
