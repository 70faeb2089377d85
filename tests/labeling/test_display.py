"""What the workbench shows: sides as given, plain or sanitized markdown, HTML rendered once per pair,
tool calls and several-turn responses as turns, empty answers visibly empty."""

from __future__ import annotations

import io
import json

import django_rq
import pytest
import redis
from rq import SimpleWorker

from labeling import display
from labeling.batches import _enqueue_render, import_stream
from labeling.conversations import response_text
from labeling.display import EMPTY_RESPONSE, Block, Turn, render_missing, shown
from labeling.models import ImportBatch, Pair
from labeling.rendering import RENDER_VERSION
from tests.conftest import worker_for
from tests.labeling.test_assignment import make_pairs

pytestmark = pytest.mark.django_db


@pytest.fixture
def renders(monkeypatch) -> list:
    calls: list = []
    real = display.render_pair

    def counting(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(display, "render_pair", counting)
    return calls


def text_of(turns: list[Turn]) -> str:
    return "".join(block.body for turn in turns for block in turn.blocks)


def test_html_is_rendered_once_and_kept_on_the_row(project, renders):
    (pair,) = make_pairs(project, 1)
    Pair.objects.filter(pk=pair.pk).update(response_a="**bold** A", response_b="`code` B")
    first = shown(Pair.objects.get(pk=pair.pk), a_on_left=True, plain=False)
    assert "<strong>bold</strong>" in text_of(first.left) and "<code>code</code>" in text_of(first.right)
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
    assert len(renders) == 1 and "<script>" not in text_of(view.prompt)
    assert Pair.objects.get(pk=pair.pk).rendered["v"] == RENDER_VERSION


def test_plain_text_is_not_rendered_and_stays_unsafe_for_the_template(project, renders):
    (pair,) = make_pairs(project, 1)
    Pair.objects.filter(pk=pair.pk).update(response_a="<b>A</b>")
    view = shown(Pair.objects.get(pk=pair.pk), a_on_left=True, plain=True)
    [[left]] = [turn.blocks for turn in view.left]
    assert view.plain and left.body == "<b>A</b>" and not hasattr(left.body, "__html__")  # escaped on output
    assert renders == [] and Pair.objects.get(pk=pair.pk).rendered is None


@pytest.mark.parametrize("plain", [True, False])
def test_chat_prompts_are_shown_as_turns(project, plain):
    (pair,) = make_pairs(project, 1)
    turns = [{"role": "system", "content": "Be *brief*."}, {"role": "user", "content": "Hi"}]
    Pair.objects.filter(pk=pair.pk).update(prompt=turns)
    view = shown(Pair.objects.get(pk=pair.pk), a_on_left=True, plain=plain)
    assert [(turn.role, turn.label) for turn in view.prompt] == [("system", "system"), ("user", "user")]
    assert ("<em>brief</em>" in view.prompt[0].blocks[0].body) is not plain


def test_imports_render_their_pairs_in_a_worker(project, django_capture_on_commit_callbacks):
    batch = ImportBatch.objects.create(project=project, source_name="t.jsonl")
    rows = [{"prompt": f"Q{i}", "response_a": f"**A{i}**", "response_b": f"B{i}"} for i in range(3)]
    data = "\n".join(json.dumps(r) for r in rows).encode()
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        import_stream(batch=batch, stream=io.BytesIO(data))
    assert callbacks and not Pair.objects.exclude(rendered=None).exists()  # nothing rendered in the request
    worker_for("default", worker_class=SimpleWorker).work(burst=True)
    expected = [f'<p dir="auto"><strong>A{i}</strong></p>\n' for i in range(3)]
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


CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city": "Bergen"}'},
}
TOOL_PROMPT = [
    {"role": "developer", "content": "Reply briefly."},
    {"role": "user", "content": "Umbrella in Bergen?"},
    {"role": "assistant", "content": "", "tool_calls": [CALL]},
    {"role": "tool", "tool_call_id": "call_1", "content": '{"rain_mm": 12}'},
]


@pytest.mark.parametrize("plain", [True, False])
def test_tool_calls_and_results_are_shown_as_written(project, plain):
    (pair,) = make_pairs(project, 1)
    Pair.objects.filter(pk=pair.pk).update(prompt=TOOL_PROMPT)
    view = shown(Pair.objects.get(pk=pair.pk), a_on_left=True, plain=plain)
    assert [turn.label for turn in view.prompt] == ["developer", "user", "assistant", "tool result · call_1"]
    call, result = view.prompt[2].blocks, view.prompt[3].blocks
    assert call == (Block("code", '{\n  "city": "Bergen"\n}', "Tool call: get_weather (call_1)"),)
    assert result == (Block("code", '{\n  "rain_mm": 12\n}', "Result"),)


def test_a_response_of_several_turns_is_shown_turn_by_turn(project):
    (pair,) = make_pairs(project, 1)
    turns = [
        {"role": "assistant", "content": "A **snake plant**."},
        {"role": "user", "content": "Thanks!"},
        {
            "role": "assistant",
            "content": "Booked.",
            "tool_calls": [{"function": {"name": "book", "arguments": {"n": 2}}}],
        },
    ]
    Pair.objects.filter(pk=pair.pk).update(response_a=response_text(turns))
    view = shown(Pair.objects.get(pk=pair.pk), a_on_left=True, plain=False)
    assert [turn.role for turn in view.left] == ["assistant", "user", "assistant"]
    assert "<strong>snake plant</strong>" in view.left[0].blocks[0].body
    assert view.left[2].blocks[1] == Block("code", '{\n  "n": 2\n}', "Tool call: book")
    assert Pair.objects.get(pk=pair.pk).rendered["a"][1] == '<p dir="auto">Thanks!</p>\n'


@pytest.mark.parametrize("plain", [True, False])
def test_empty_responses_are_shown_as_visibly_empty(project, plain):
    (pair,) = make_pairs(project, 1)
    Pair.objects.filter(pk=pair.pk).update(response_a=" \r\n ")
    view = shown(Pair.objects.get(pk=pair.pk), a_on_left=True, plain=plain)
    assert view.left == [Turn("", "", (Block("empty", EMPTY_RESPONSE),))]
    assert view.right[0].blocks[0].kind == "text"


def test_the_adjudication_page_shows_the_pair_as_annotators_see_it_and_its_metadata(project, lead):
    from django.test import Client

    (pair,) = make_pairs(project, 1)
    reply = response_text([{"role": "assistant", "content": "On it.", "tool_calls": [CALL]}])
    Pair.objects.filter(pk=pair.pk).update(prompt=TOOL_PROMPT, response_a=reply, metadata={"score_chosen": 7})
    client = Client()
    client.force_login(lead)
    page = client.get(f"/projects/{project.slug}/review/pairs/{pair.pk}/").content.decode()
    assert (
        page.count("<figcaption>Tool call: get_weather (call_1)</figcaption>") == 2
    )  # prompt and response A
    assert '<div class="turn-role">tool result · call_1</div>' in page
    assert "score_chosen" in page and "vendor/katex/katex.min.js" in page and "<script>" not in page
