"""What an annotator is shown of a pair: its prompt and responses on the sides they were dealt, as
plain text or as sanitized markdown that is rendered once per pair and kept on its row."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import QuerySet
from django.utils.safestring import SafeString, mark_safe

from labeling.models import Pair
from labeling.rendering import RENDER_VERSION, render_pair
from prefstudio import sql

_KEEP = f"UPDATE {Pair._meta.db_table} SET rendered = %s WHERE id = %s"


@dataclass(frozen=True)
class Shown:
    """Texts for the page: `str` is escaped by the template, `SafeString` is sanitized HTML."""

    plain: bool
    prompt: str | SafeString
    turns: list[tuple[str, str | SafeString]]  # (role, text) for a chat prompt, else empty
    left: str | SafeString
    right: str | SafeString


def shown(pair: Pair, *, a_on_left: bool, plain: bool) -> Shown:
    """The pair as one annotator sees it: response A on the left when `a_on_left`."""
    prompt, a, b = _texts(pair) if plain else _html(pair)
    turns = list(zip([t["role"] for t in pair.prompt], prompt, strict=True)) if pair.is_chat else []
    return Shown(
        plain=plain,
        prompt="" if pair.is_chat else prompt,
        turns=turns,
        left=a if a_on_left else b,
        right=b if a_on_left else a,
    )


def _texts(pair: Pair) -> tuple:
    prompt = [turn["content"] for turn in pair.prompt] if pair.is_chat else pair.prompt
    return prompt, pair.response_a, pair.response_b


def _html(pair: Pair) -> tuple:
    # Sanitized by nh3 with an allowlist in labeling.rendering: the only untrusted text marked safe.
    html, safe = rendered(pair), mark_safe
    prompt = [safe(turn) for turn in html["prompt"]] if pair.is_chat else safe(html["prompt"])
    return prompt, safe(html["a"]), safe(html["b"])


def rendered(pair: Pair) -> dict:
    """The pair's sanitized HTML (labeling.rendering.render_pair), rendered and kept on first use."""
    if not pair.rendered or pair.rendered.get("v") != RENDER_VERSION:
        pair.rendered = render_pair(pair.prompt, pair.response_a, pair.response_b)
        sql.execute(_KEEP, [sql.param(Pair, "rendered", pair.rendered), pair.pk])
    return pair.rendered


def render_missing(pairs: QuerySet[Pair], *, chunk: int = 500) -> int:
    """Render and keep the HTML of `pairs` that have none (or an older renderer's); how many.

    Runs after an import (labeling.tasks.render_batch), so annotators seldom wait on it.
    """
    done = 0
    stale = pairs.exclude(rendered__v=RENDER_VERSION).only("id", "prompt", "response_a", "response_b")
    while batch := list(stale.order_by("id")[:chunk]):
        for pair in batch:
            pair.rendered = render_pair(pair.prompt, pair.response_a, pair.response_b)
        Pair.objects.bulk_update(batch, ["rendered"])
        done += len(batch)
    return done
