"""What the workbench shows: sides as dealt, plain or sanitized markdown, HTML rendered once per pair."""

from __future__ import annotations

import pytest

from labeling import display
from labeling.display import shown
from labeling.models import Pair
from labeling.rendering import RENDER_VERSION
from tests.labeling.test_assignment import make_pairs

pytestmark = pytest.mark.django_db


@pytest.fixture
def renders(monkeypatch) -> list:
    calls: list = []
    real = display.render_pair

    def counting(*args):
        calls.append(args)
        return real(*args)

    monkeypatch.setattr(display, "render_pair", counting)
    return calls


def test_html_is_rendered_once_and_kept_on_the_row(project, renders):
    (pair,) = make_pairs(project, 1)
    Pair.objects.filter(pk=pair.pk).update(response_a="**bold** A", response_b="`code` B")
    first = shown(Pair.objects.get(pk=pair.pk), a_on_left=True, plain=False)
    assert "<strong>bold</strong>" in first.left and "<code>code</code>" in first.right
    stored = Pair.objects.get(pk=pair.pk).rendered
    assert stored["v"] == RENDER_VERSION and "<strong>" in stored["a"]
    again = shown(Pair.objects.get(pk=pair.pk), a_on_left=False, plain=False)
    assert len(renders) == 1  # the second annotator's view came from the row
    assert (again.left, again.right) == (first.right, first.left)


def test_html_from_an_older_renderer_is_rendered_again(project, renders):
    (pair,) = make_pairs(project, 1)
    Pair.objects.filter(pk=pair.pk).update(
        rendered={"v": RENDER_VERSION - 1, "prompt": "<script>", "a": "", "b": ""}
    )
    view = shown(Pair.objects.get(pk=pair.pk), a_on_left=True, plain=False)
    assert len(renders) == 1 and "<script>" not in view.prompt
    assert Pair.objects.get(pk=pair.pk).rendered["v"] == RENDER_VERSION


def test_plain_text_is_not_rendered_and_stays_unsafe_for_the_template(project, renders):
    (pair,) = make_pairs(project, 1)
    Pair.objects.filter(pk=pair.pk).update(response_a="<b>A</b>")
    view = shown(Pair.objects.get(pk=pair.pk), a_on_left=True, plain=True)
    assert view.plain and view.left == "<b>A</b>" and not hasattr(view.left, "__html__")  # escaped on output
    assert renders == [] and Pair.objects.get(pk=pair.pk).rendered is None


@pytest.mark.parametrize("plain", [True, False])
def test_chat_prompts_are_shown_as_turns(project, plain):
    (pair,) = make_pairs(project, 1)
    turns = [{"role": "system", "content": "Be *brief*."}, {"role": "user", "content": "Hi"}]
    Pair.objects.filter(pk=pair.pk).update(prompt=turns)
    view = shown(Pair.objects.get(pk=pair.pk), a_on_left=True, plain=plain)
    assert [role for role, _ in view.turns] == ["system", "user"] and view.prompt == ""
    assert ("<em>brief</em>" in view.turns[0][1]) is not plain
