"""What the workbench shows: sides as dealt, plain or sanitized markdown, HTML rendered once per pair."""

from __future__ import annotations

import io
import json

import django_rq
import pytest
import redis
from rq import SimpleWorker

from labeling import display
from labeling.batches import _enqueue_render, import_stream
from labeling.display import render_missing, shown
from labeling.models import ImportBatch, Pair
from labeling.rendering import RENDER_VERSION
from tests.conftest import worker_for
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


def test_imports_render_their_pairs_in_a_worker(project, django_capture_on_commit_callbacks):
    batch = ImportBatch.objects.create(project=project, source_name="t.jsonl")
    rows = [{"prompt": f"Q{i}", "response_a": f"**A{i}**", "response_b": f"B{i}"} for i in range(3)]
    data = "\n".join(json.dumps(r) for r in rows).encode()
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        import_stream(batch=batch, stream=io.BytesIO(data))
    assert callbacks and not Pair.objects.exclude(rendered=None).exists()  # nothing rendered in the request
    worker_for("default", worker_class=SimpleWorker).work(burst=True)
    expected = [f"<p><strong>A{i}</strong></p>\n" for i in range(3)]
    assert [p.rendered["a"] for p in Pair.objects.order_by("id")] == expected


def test_render_missing_renders_only_what_has_no_current_html(project, renders):
    pairs = make_pairs(project, 3)
    current = {"v": RENDER_VERSION, "prompt": "", "a": "", "b": ""}
    Pair.objects.filter(pk=pairs[0].pk).update(rendered=current)
    Pair.objects.filter(pk=pairs[1].pk).update(rendered={"v": RENDER_VERSION - 1})
    assert render_missing(Pair.objects.all(), chunk=1) == 2
    assert render_missing(Pair.objects.all()) == 0
    assert len(renders) == 2 and Pair.objects.get(pk=pairs[0].pk).rendered["a"] == ""


def test_without_a_queue_pairs_are_rendered_when_first_shown(project, monkeypatch, caplog):
    def unreachable(name):
        raise redis.exceptions.ConnectionError("Connection refused")

    monkeypatch.setattr(django_rq, "get_queue", unreachable)
    batch = ImportBatch.objects.create(project=project, source_name="t.jsonl")
    _enqueue_render(batch)
    assert "rendered when first shown" in caplog.text
