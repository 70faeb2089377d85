"""The README's Python example, run as written against a live server: it imports a file, waits for the
import, prints alpha, exports a snapshot and starts a run. (httpx is not among our requirements; the
httpx2 fork the openai package brings has the same API and stands in for it.)"""

from __future__ import annotations

import contextlib
import io
import json
import re
import sys

import pytest

from labeling.models import Judgment, Membership, Pair, Project
from tests.labeling.test_assignment import make_pairs
from tests.workers import ROOT

pytestmark = pytest.mark.django_db(transaction=True)


def readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## The JSON API") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_example_runs_as_written(
    live_server, make_user, tiny_model_dir, settings, tmp_path, monkeypatch
):
    import httpx2

    from api.tokens import create_token

    settings.PREFSTUDIO_BASE_MODELS = {"smollm2-135m-instruct": str(tiny_model_dir)}
    admin = make_user("root", "admin", is_staff=True)
    demo = Project.objects.create(slug="demo", name="Demo", overlap=1)
    Membership.objects.create(project=demo, user=admin, role=Membership.Role.LEAD)
    for pair in make_pairs(demo, 20):  # what people already judged in the project
        Judgment.objects.create(pair=pair, annotator=admin, choice="a")
    pairs = tmp_path / "pairs.jsonl"
    rows = [
        {"prompt": f"Question {i}?", "chosen": f"A careful answer {i}.", "rejected": f"No {i}."}
        for i in range(9)
    ]
    pairs.write_text("".join(json.dumps(row) + "\n" for row in rows))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "httpx", httpx2)
    code = readme_example().replace("http://127.0.0.1:8000", live_server.url)
    out = io.StringIO()
    namespace = {"TOKEN": create_token(admin, name="readme")[0]}

    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - our own README's example
    printed = out.getvalue().splitlines()
    assert printed[0].startswith("alpha: ")
    assert re.fullmatch(r"\d+ queued", printed[1]), printed
    assert Pair.objects.filter(project=demo).count() == 29
