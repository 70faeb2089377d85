"""Filters for the review pages: statistics shown with the precision they deserve, and undefined
values (None) shown as a dash rather than as 0."""

from __future__ import annotations

import math
from typing import Any

from django import template

from labeling.models import Choice

register = template.Library()
DASH = "–"


def _defined(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@register.filter
def number(value: Any, digits: int = 3) -> str:
    """A statistic with `digits` decimals; a dash when undefined."""
    return f"{value:.{int(digits)}f}" if _defined(value) else DASH


@register.filter
def percent(value: Any) -> str:
    """A share in [0, 1] as a whole percentage; a dash when undefined."""
    return f"{100 * value:.0f}%" if _defined(value) else DASH


@register.filter
def pvalue(value: Any) -> str:
    """A p-value: two significant digits, "< 0.001" below that."""
    if not _defined(value):
        return DASH
    return "< 0.001" if value < 0.001 else f"{value:.2g}"


@register.filter
def estimate(value: Any) -> str:
    """`{"value", "low", "high"}` as "0.612 [0.551, 0.670]" (the interval when there is one)."""
    if not isinstance(value, dict) or not _defined(value.get("value")):
        return DASH
    text = number(value["value"])
    if _defined(value.get("low")) and _defined(value.get("high")):
        text += f" [{number(value['low'])}, {number(value['high'])}]"
    return text


@register.filter
def interval(value: Any) -> str:
    """The 95% interval of `{"value", "low", "high"}` as "[0.551, 0.670]"; empty without one."""
    if isinstance(value, dict) and _defined(value.get("low")) and _defined(value.get("high")):
        return f"[{number(value['low'])}, {number(value['high'])}]"
    return ""


@register.filter
def choice_label(value: Any) -> str:
    """A stored label ("a", "b", "tie", "both_bad") in words; a dash for none."""
    return Choice(value).label if value in Choice.values else DASH


@register.filter
def get_metric(metrics: Any, name: str) -> Any:
    """`metrics[name]` for names with a slash (TRL's `rewards/accuracies`), None when missing."""
    return metrics.get(name) if isinstance(metrics, dict) else None


@register.filter
def duration(seconds: Any) -> str:
    """Seconds as "1 h 02 min", "3 min 05 s" or "42 s"; a dash when undefined."""
    if not _defined(seconds):
        return DASH
    total = int(round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


@register.filter
def percent_interval(value: Any) -> str:
    """The 95% interval of a share `{"value", "low", "high"}` as "[55%, 67%]"; empty without one."""
    if isinstance(value, dict) and _defined(value.get("low")) and _defined(value.get("high")):
        return f"[{percent(value['low'])}, {percent(value['high'])}]"
    return ""
