"""The review pages and services: numbers equal the pure statistics, exclusion, adjudication, send-back,
the disagreement queue, audit and leaderboard sections, caching, permissions and escaping."""

from __future__ import annotations

import html
import io
import json
import random
import re
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django.core.cache import cache, caches
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse

from labeling import agreement, review, review_stats, review_views
from labeling.assignment import claim_next_pair
from labeling.consensus import ConsensusRules
from labeling.judging import Verdict, submit_judgment
from labeling.models import Adjudication, Assignment, Judgment, Membership, Pair
from labeling.snapshots import export_preview
from labeling.templatetags.prefstudio_review import estimate, interval, number, percent, percent_interval
from tests.labeling.boards import LAYOUT, Board, build_pairs, make_board, raters, vote
from tests.labeling.xss import PAYLOADS, unsafe_markup

pytestmark = pytest.mark.django_db

HX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture(autouse=True)
def _quick_passwords(settings):
    """Users here sign in with force_login: hashing their passwords would only cost time."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def board(project, lead, make_user) -> Board:
    return make_board(project, lead, make_user)


@pytest.fixture
def lead_client(lead) -> Client:
    client = Client()
    client.force_login(lead)
    return client


def expected_report(board: Board, *, excluded: frozenset[int] = frozenset()) -> dict[str, Any]:
    """`review_stats.project_report` on the layout, built here from LAYOUT rather than read back."""
    rows = [
        {"item": pair.pk, "rater": board.raters[j].pk, "choice": choice, "a_on_left": (i + j) % 2 == 0,
         "len_a": len(pair.response_a), "len_b": len(pair.response_b), "gold": gold, "seconds": 10.0 + j}
        for i, (pair, (_, gold, votes)) in enumerate(zip(board.pairs, LAYOUT, strict=True))
        for j, choice in votes.items()
    ]  # fmt: skip
    return review_stats.project_report(
        review_stats.JudgmentTable.from_rows(rows), excluded=excluded, overlap=3, n_boot=0,
        min_shared=review.MIN_SHARED,
    )  # fmt: skip


def fragment(response) -> str:
    return response.content.decode()


def stats(body: str) -> dict[str, str]:
    """The headline numbers as shown: <dt> text -> the <dd>'s first text (before its interval)."""
    found = re.findall(r"<div><dt>(.*?)</dt><dd>(.*?)(?:<span|</dd>)", body, flags=re.S)
    return {html.unescape(re.sub(r"<[^>]+>", "", dt)).strip(): html.unescape(dd).strip() for dt, dd in found}


def annotator_rows(body: str) -> list[list[str]]:
    """The cells' text of each row of the annotator table."""
    table = re.search(r'<table class="list sortable" id="annotator-table">(.*?)</table>', body, re.S)
    assert table, "no annotator table"
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", table.group(1).split("<tbody>")[1], re.S)
    cells = [re.findall(r"<td[^>]*>(.*?)</td>", row, re.S) for row in rows]
    return [[html.unescape(re.sub(r"<[^>]+>|\s+", " ", c)).split()[0] if c.strip() else "" for c in row]
            for row in cells]  # fmt: skip


def names_in_table(body: str) -> list[str]:
    return [row[0] for row in annotator_rows(body)]


# Permissions


def review_urls(board: Board) -> list[tuple[str, str]]:
    pair, member = board.pairs[2].pk, board.membership(0).pk
    return [
        ("get", board.url("review-dashboard")),
        ("get", board.url("disagreement-list")),
        ("get", board.url("pair-adjudicate", pair)),
        ("post", board.url("pair-adjudicate", pair)),
        ("post", board.url("pair-send-back", pair)),
        ("post", board.url("member-exclude", member)),
        ("post", board.url("pairs-requeue")),
    ]


def test_annotators_get_403_and_foreign_leads_404_on_every_review_url(
    board, annotator, make_user, other_project
):
    stranger = make_user("otto", "lead")
    Membership.objects.create(project=other_project, user=stranger, role=Membership.Role.LEAD)
    data = {"label": "a", "note": "x", "excluded": "1"}
    for user, status in ((annotator, 403), (stranger, 404)):
        client = Client()
        client.force_login(user)
        for method, url in review_urls(board):
            response = getattr(client, method)(url, data) if method == "post" else client.get(url)
            assert response.status_code == status, (user.username, method, url)
    assert not Adjudication.objects.exists()
    assert Pair.objects.get(pk=board.pairs[2].pk).extra_wanted == 0
    assert not Membership.objects.filter(excluded=True).exists()


# The dashboard's numbers


def test_dashboard_numbers_equal_the_pure_statistics(board, lead_client):
    body = fragment(lead_client.get(board.url("review-dashboard")))
    shown = stats(body)
    h = expected_report(board)["headline"]["without_excluded"]
    # The layout by hand: 9 non-gold pairs judged, 7 with 3+ votes, 28 judgments by 4 annotators.
    assert (h["pairs"], h["complete_pairs"], h["judgments"], h["annotators"]) == (9, 7, 28, 4)
    assert shown["Pairs judged"] == "9"
    assert shown["Complete (k = 3)"] == "7"
    assert shown["Judgments"] == "28"
    assert shown["Active annotators"] == "4"
    assert shown["Krippendorff's α (nominal)"] == number(h["alpha"]["value"])
    assert shown["Fleiss' κ"] == number(h["fleiss_kappa"]["value"])
    assert shown["Percent agreement"] == percent(h["percent_agreement"]["value"])
    # And the pure functions on the same (non-gold) judgments, straight from the layout.
    triples = [
        (pair.pk, board.raters[j].pk, choice)
        for pair, (_, gold, votes) in zip(board.pairs, LAYOUT, strict=True)
        if not gold
        for j, choice in votes.items()
    ]
    assert h["alpha"]["value"] == pytest.approx(agreement.krippendorff_alpha(triples), abs=1e-9)
    assert h["percent_agreement"]["value"] == pytest.approx(agreement.percent_agreement(triples), abs=1e-9)
    assert h["fleiss_kappa"]["value"] == pytest.approx(agreement.fleiss_kappa(triples), abs=1e-9)
    # The annotator table: one row per annotator with their count and agreement.
    rows = {row[0]: row for row in annotator_rows(body)}
    for stat in expected_report(board)["annotators"]:
        name = next(u.username for u in board.raters if u.pk == stat["rater"])
        assert rows[name][1] == str(stat["judgments"])
        assert rows[name][3] == percent(stat["agreement"])


def intervals(body: str) -> dict[str, str]:
    """The headline's intervals as shown: <dt> text -> the text of the <dd>'s interval span."""
    found = re.findall(r'<div><dt>([^<]*)</dt><dd>[^<]*<span class="interval">([^<]*)</span>', body)
    return {html.unescape(dt).strip(): html.unescape(span).strip() for dt, span in found}


def test_fleiss_kappa_and_percent_agreement_show_their_intervals(board, lead_client):
    body = fragment(lead_client.get(board.url("review-dashboard")))
    h = review.review_report(board.project)["headline"]["without_excluded"]
    for name in ("alpha", "fleiss_kappa", "percent_agreement"):
        assert h[name]["low"] is not None and h[name]["low"] <= h[name]["value"] <= h[name]["high"], name
    shown = intervals(body)
    assert shown["Krippendorff's α (nominal)"] == interval(h["alpha"])
    assert shown["Fleiss' κ"] == interval(h["fleiss_kappa"]) != ""
    assert shown["Percent agreement"] == percent_interval(h["percent_agreement"])
    assert re.fullmatch(r"\[\d+%, \d+%\]", shown["Percent agreement"])
    # The pure bootstraps on the same counted votes (non-gold pairs), with the report's resamples.
    counts = {}
    for pair, (_, gold, votes) in zip(board.pairs, LAYOUT, strict=True):
        if not gold and votes:
            counts[pair.pk] = [list(votes.values()).count(c) for c in review_stats.CHOICES]
    boot = {"n": review.BOOTSTRAP_SAMPLES, "seed": 0}
    matrix = list(counts.values())
    assert (h["fleiss_kappa"]["low"], h["fleiss_kappa"]["high"]) == agreement.bootstrap_fleiss_kappa(
        matrix, **boot
    )
    assert (h["percent_agreement"]["low"], h["percent_agreement"]["high"]) == (
        agreement.bootstrap_percent_agreement(matrix, **boot)
    )


def test_the_refresh_returns_only_the_numbers(board, lead_client):
    response = lead_client.post(board.url("review-dashboard"), **HX)
    body = fragment(response).strip()
    assert response.status_code == 200
    assert body.startswith('<div id="review-numbers">') and body.endswith("</div>")
    assert "<html" not in body and "page-head" not in body
    assert stats(body)["Judgments"] == "28"
    assert '<button type="submit" class="small">Refresh</button>' in body  # it swaps with the numbers


def test_the_annotator_table_sorts_by_a_column(board, lead_client):
    url = board.url("review-dashboard")
    assert names_in_table(fragment(lead_client.get(url + "?sort=time", **HX))) == ["a0", "a1", "a2", "a3"]
    descending = fragment(lead_client.get(url + "?sort=-time", **HX))
    assert names_in_table(descending) == ["a3", "a2", "a1", "a0"]
    assert 'aria-sort="descending"><a href="?sort=time#annotators"' in descending  # a click turns it round
    # 10, 8, 8 and 2 judgments: equal counts keep their order.
    assert names_in_table(fragment(lead_client.get(url + "?sort=-judgments", **HX))) == [
        "a0",
        "a1",
        "a2",
        "a3",
    ]
    assert names_in_table(fragment(lead_client.get(url + "?sort=judgments", **HX))) == [
        "a3",
        "a1",
        "a2",
        "a0",
    ]
    assert names_in_table(fragment(lead_client.get(url + "?sort=nonsense", **HX))) == ["a0", "a1", "a2", "a3"]


# The kappa heatmap and the time per judgment


def heatmap_svg(body: str) -> str:
    found = re.search(
        r'<svg[^>]*aria-label="Pairwise Cohen(?:\'|&#x27;)s kappa between annotators".*?</svg>', body, re.S
    )
    assert found, "no kappa heatmap"
    return found.group(0)


def cell_titles(svg: str) -> dict[str, str]:
    """Each cell's title -> the text written in it."""
    cells = re.findall(r"<g><title>(.*?)</title>.*?<text[^>]*>(.*?)</text>", svg, re.S)
    return {html.unescape(title): html.unescape(text) for title, text in cells}


def test_an_undefined_kappa_says_why(project, lead, make_user, lead_client):
    """a0 and a1 share six pairs and both always chose A: no variation, so no kappa; a3 shares one."""
    users = raters(make_user, project, 4)
    layout = [
        (f"Q{i}", "", {0: "a", 1: "a", 2: "ab"[i % 2], **({3: "b"} if i == 0 else {})}) for i in range(6)
    ]
    build_pairs(project, layout, users)
    body = fragment(lead_client.get(reverse("labeling:review-dashboard", args=[project.slug])))
    cells = cell_titles(heatmap_svg(body))
    assert cells["a0 × a1: undefined: no variation (both chose one label on all 6 shared pairs)"] == "n/v"
    assert cells["a1 × a0: undefined: no variation (both chose one label on all 6 shared pairs)"] == "n/v"
    assert cells[f"a0 × a3: too few shared pairs (1 of the {review.MIN_SHARED} needed)"] == "–"
    assert cells["a0 × a2: 0.000"] == "0.00"  # one without variation beside one with: kappa is 0
    assert cells["a2 × a2: the same annotator"] == ""
    assert "n/v: undefined, no variation" in body and f"fewer than {review.MIN_SHARED}" in body
    kappa = review.review_report(project)["cohen_kappa"]
    assert kappa["undefined"][0][1] == "no_variation" and kappa["undefined"][0][3] == "too_few_shared"


def crowd(project, make_user, *, annotators: int, pairs: int, seed: int = 0) -> list[Any]:
    """`annotators` annotators who each judged the same `pairs` pairs, right 80% of the time."""
    rng = random.Random(seed)
    users = raters(make_user, project, annotators)
    truth = [rng.choice("ab") for _ in range(pairs)]
    layout = [
        (
            f"Q{i}",
            "",
            {j: truth[i] if rng.random() < 0.8 else rng.choice(["a", "b", "tie"]) for j in range(annotators)},
        )
        for i in range(pairs)
    ]
    build_pairs(project, layout, users)
    return users


def test_the_heatmap_of_30_annotators_fits_the_page_with_readable_cells(
    project, lead, make_user, lead_client
):
    crowd(project, make_user, annotators=30, pairs=6)
    body = fragment(lead_client.get(reverse("labeling:review-dashboard", args=[project.slug])))
    svg = heatmap_svg(body)
    width = float(re.search(r'width="([\d.]+)"', svg).group(1))
    sizes = {float(w) for w in re.findall(r'<rect [^>]*width="([\d.]+)"', svg)}
    assert len(re.findall(r"<rect ", svg)) == 30 * 30
    # Cells of 31 px with 10 px numbers, the whole matrix within the page (72rem less its padding).
    assert sizes == {31.0} and width <= 1100
    assert '<div class="chart-row stacked">' in body  # a whole row, not half of one
    assert all(f">a{i}</text>" in svg for i in range(30))
    # Every other cell shows its kappa, or says why it has none.
    matrix = review.review_report(project)["cohen_kappa"]["matrix"]
    defined = sum(value is not None for i, row in enumerate(matrix) for j, value in enumerate(row) if i != j)
    texts = list(cell_titles(svg).values())
    assert sum(1 for text in texts if re.fullmatch(r"-?\d\.\d\d", text)) == defined > 800
    assert texts.count("n/v") == 30 * 29 - defined


def test_a_few_annotators_keep_the_heatmap_beside_the_chart(board, lead_client):
    body = fragment(lead_client.get(board.url("review-dashboard")))
    assert '<div class="chart-row">' in body
    assert float(re.search(r'width="([\d.]+)"', heatmap_svg(body)).group(1)) <= 520
    assert cell_titles(heatmap_svg(body))[
        f"a0 × a3: too few shared pairs (2 of the {review.MIN_SHARED} needed)"
    ]


def test_the_heatmap_is_rendered_once_per_report_and_names(board, lead_client, monkeypatch):
    """Its cells are most of the page's rendering time: it is kept beside the report it shows."""
    rendered = []
    original = review_views.render_to_string

    def render_to_string(name, *args, **kwargs):
        rendered.append(name)
        return original(name, *args, **kwargs)

    monkeypatch.setattr(review_views, "render_to_string", render_to_string)
    url = board.url("review-dashboard")
    first = fragment(lead_client.get(url))
    assert heatmap_svg(fragment(lead_client.get(url, **HX))) == heatmap_svg(first)
    assert rendered == ["partials/_heatmap.html"]
    board.raters[0].username = "zed"
    board.raters[0].save()
    assert ">zed</text>" in heatmap_svg(fragment(lead_client.get(url)))
    lead_client.post(url, **HX)  # Refresh: a new report
    assert rendered == ["partials/_heatmap.html"] * 3


def test_median_seconds_and_the_pair_page_show_the_same_wall_time(board, lead_client):
    """The workbench stores wall time (lease to verdict, server clock) and active time (browser): the
    dashboard's median and the pair page both show wall time, and say so."""
    Judgment.objects.update(active_seconds=2.0)  # an active time unlike every wall time
    Judgment.objects.filter(annotator=board.raters[1], pair=board.pairs[0]).update(seconds_spent=95.4)
    url = board.url("review-dashboard")
    body = fragment(lead_client.get(url + "?refresh=1"))
    assert ">Median wall s</a></th>" in body and "by the server's clock, pauses included" in body
    rows = {row[0]: row for row in annotator_rows(body)}
    # a1's wall times: 95.4 on pair 0 and 11 on seven others.
    assert (rows["a0"][2], rows["a1"][2], rows["a2"][2], rows["a3"][2]) == ("10", "11", "12", "13")
    page = fragment(lead_client.get(board.url("pair-adjudicate", board.pairs[0].pk)))
    assert '<th class="num">Wall s</th>' in page and "by the server's clock, pauses included" in page
    votes = re.search(r'<table class="list" id="votes">(.*?)</table>', page, re.S).group(1)
    seconds = re.findall(r'<td class="num">([^<]*)</td>', votes)
    assert seconds == ["10", "95", "12"] and "2" not in seconds


# Leaving an annotator out of consensus


def test_exclude_and_include_again(board, lead_client):
    url = board.url("member-exclude", board.membership(3).pk)
    before = stats(fragment(lead_client.get(board.url("review-dashboard"))))
    rules = ConsensusRules()
    preview = export_preview(board.project, rules=rules, shape="standard")

    response = lead_client.post(url, {"excluded": "1"}, **HX)
    body = fragment(response).strip()
    assert response.status_code == 200 and body.startswith('<div id="review-numbers">')
    expected = expected_report(board, excluded=frozenset({board.raters[3].pk}))["headline"]
    without, everyone = expected["without_excluded"], expected["with_excluded"]
    shown = stats(body)
    assert shown["Judgments"] == str(without["judgments"]) == "26"
    assert shown["Krippendorff's α (nominal)"] == number(without["alpha"]["value"])
    assert shown["Krippendorff's α (nominal)"] != before["Krippendorff's α (nominal)"]
    assert "1 annotator excluded" in body
    # The old numbers, with the excluded annotator, are still shown beside them.
    assert f"Fleiss' κ {number(everyone['fleiss_kappa']['value'])}" in body
    assert f"over {everyone['judgments']} judgments" in body and everyone["judgments"] == 28
    assert "Include again" in body

    # Consensus leaves their votes out: pair 1 loses its third vote, pair 9's 2-2 split becomes 2-1 for B.
    left_out = export_preview(board.project, rules=rules, shape="standard")
    assert left_out.judgments == preview.judgments - 2
    assert left_out.dropped["too_few_votes"] == preview.dropped["too_few_votes"] + 1
    assert left_out.dropped["split"] == preview.dropped["split"] - 1
    assert left_out.kept == preview.kept
    assert review.vote_counts(review.pair_votes(board.project, board.pairs[9])) == {
        "a": 1, "b": 2, "tie": 0, "both_bad": 0,
    }  # fmt: skip

    body = fragment(lead_client.post(url, {"excluded": "0"}, **HX))
    assert stats(body) == before
    assert "excluded</span>" not in body
    again = export_preview(board.project, rules=rules, shape="standard")
    assert (again.kept, again.dropped, again.judgments) == (preview.kept, preview.dropped, preview.judgments)


def test_exclude_without_htmx_redirects_to_the_table(board, lead_client):
    response = lead_client.post(board.url("member-exclude", board.membership(3).pk), {"excluded": "1"})
    assert response.status_code == 302 and response["Location"].endswith("#annotators")
    assert board.membership(3).excluded
    page = fragment(lead_client.get(response["Location"]))
    assert "a3&#x27;s judgments are left out of agreement" in page


def test_an_htmx_exclusion_leaves_no_message_for_a_later_page(board, lead_client):
    lead_client.post(board.url("member-exclude", board.membership(3).pk), {"excluded": "1"}, **HX)
    assert "left out of agreement" not in fragment(lead_client.get(board.url("disagreement-list")))


def test_an_exclusion_in_another_project_is_404(board, lead_client, other_project, make_user):
    outsider = make_user("olga", "annotator")
    member = Membership.objects.create(project=other_project, user=outsider)
    assert lead_client.post(board.url("member-exclude", member.pk), {"excluded": "1"}).status_code == 404
    member.refresh_from_db()
    assert not member.excluded


# The cache


def as_of(body: str) -> str:
    """When the report shown was computed (the `datetime` of the "As of" line)."""
    found = re.search(r'<div class="as-of" id="as-of">\s*<p>As of <time datetime="([^"]+)">', body)
    assert found, "no as-of line"
    return found.group(1)


def age_report(project, seconds: float) -> None:
    """Make the kept report `seconds` older, as if it had been computed that long ago."""
    shared, key = caches["shared"], review._report_key(project.pk)
    entry = shared.get(key)
    then = datetime.fromisoformat(entry["report"]["computed_at"]) - timedelta(seconds=seconds)
    entry["report"]["computed_at"] = then.isoformat()
    shared.set(key, entry)


@pytest.fixture
def refresh_interval(settings) -> int:
    settings.PREFSTUDIO_REVIEW_REFRESH_SECONDS = 30
    return 30


def test_judgments_within_the_interval_keep_the_report_and_the_page_says_so(
    board, lead_client, refresh_interval
):
    url = board.url("review-dashboard")
    first = fragment(lead_client.get(url))
    assert stats(first)["Judgments"] == "28" and "newer judgment" not in first
    vote(board.pairs[5], board.raters[1], "a")
    vote(board.pairs[8], board.raters[1], "b")
    body = fragment(lead_client.get(url))
    assert stats(body)["Judgments"] == "28"  # the numbers kept, not recomputed
    assert as_of(body) == as_of(first)
    assert "<strong>2 newer judgments since</strong>" in body
    judgment = Judgment.objects.get(pair=board.pairs[0], annotator=board.raters[0])
    judgment.choice = "b"
    judgment.save()  # an edit: one more change, no more judgments
    assert "<strong>2 newer judgments since</strong>" in fragment(lead_client.get(url, **HX))
    assert review.review_report(board.project)["newer_judgments"] == 2
    assert caches["shared"].get(review._report_key(board.project.pk))["report"]["computed_at"] == as_of(first)


def test_an_edit_alone_says_newer_judgments_without_a_count(board, lead_client, refresh_interval):
    url = board.url("review-dashboard")
    lead_client.get(url)
    judgment = Judgment.objects.get(pair=board.pairs[0], annotator=board.raters[0])
    judgment.choice = "b"
    judgment.save()
    assert "<strong>newer judgments since</strong>" in fragment(lead_client.get(url))


def test_after_the_interval_the_report_is_recomputed(board, lead_client, settings):
    url = board.url("review-dashboard")
    first = fragment(lead_client.get(url))
    vote(board.pairs[5], board.raters[1], "a")
    settings.PREFSTUDIO_REVIEW_REFRESH_SECONDS = 0
    body = fragment(lead_client.get(url))
    assert stats(body)["Judgments"] == "29" and "newer judgment" not in body
    assert as_of(body) > as_of(first)


def test_a_report_someone_watches_is_recomputed_after_their_page_is_sent(
    board, lead_client, refresh_interval
):
    """Under two intervals old, the page that finds it out of date still gets it at once, and has it
    recomputed once its response is sent; the next load gets the new report."""
    url = board.url("review-dashboard")
    first = fragment(lead_client.get(url))
    vote(board.pairs[5], board.raters[1], "a")
    age_report(board.project, 1.5 * refresh_interval)
    body = fragment(lead_client.get(url))
    assert stats(body)["Judgments"] == "28" and "<strong>1 newer judgment since</strong>" in body
    kept = review.review_report(board.project)
    assert kept["newer_judgments"] is None and kept["computed_at"] > as_of(first)
    assert kept["headline"]["without_excluded"]["judgments"] == 29
    assert caches["shared"].get(review._lock_key(board.project.pk)) is None  # the next one may start
    # The heatmap of the new report was rendered with it, so the next page does not wait for that either.
    assert kept["computed_at"] in caches["shared"].get(f"review:{board.project.pk}:heatmaps")
    body = fragment(lead_client.get(url))
    assert stats(body)["Judgments"] == "29" and "newer judgment" not in body and as_of(body) > as_of(first)


def test_a_report_nobody_watched_is_recomputed_before_it_is_shown(board, lead_client, refresh_interval):
    url = board.url("review-dashboard")
    lead_client.get(url)
    vote(board.pairs[5], board.raters[1], "a")
    age_report(board.project, 3600)  # the lead comes back an hour later
    body = fragment(lead_client.get(url))
    assert stats(body)["Judgments"] == "29" and "newer judgment" not in body
    assert caches["shared"].get(review._lock_key(board.project.pk)) is None


def test_one_recompute_at_a_time(board, lead_client, refresh_interval):
    url = board.url("review-dashboard")
    lead_client.get(url)
    vote(board.pairs[5], board.raters[1], "a")
    age_report(board.project, 3600)
    caches["shared"].add(review._lock_key(board.project.pk), 1, 60)  # another process is computing it
    body = fragment(lead_client.get(url))
    assert stats(body)["Judgments"] == "28" and "<strong>1 newer judgment since</strong>" in body
    assert review.review_report(board.project)["newer_judgments"] == 1  # nor after the page
    caches["shared"].delete(review._lock_key(board.project.pk))
    assert stats(fragment(lead_client.get(url)))["Judgments"] == "29"


def test_refresh_recomputes_at_once_with_and_without_htmx(board, lead_client, refresh_interval):
    url = board.url("review-dashboard")
    lead_client.get(url)
    vote(board.pairs[5], board.raters[1], "a")
    response = lead_client.post(url + "?sort=time")  # the form, without JavaScript
    assert response.status_code == 302 and response["Location"] == url + "?sort=time"
    page = fragment(lead_client.get(response["Location"]))
    assert stats(page)["Judgments"] == "29" and "newer judgment" not in page
    assert f'action="{url}?sort=time"' in page  # the next Refresh keeps the order too
    vote(board.pairs[8], board.raters[1], "b")
    assert "<strong>1 newer judgment since</strong>" in fragment(lead_client.get(url))
    body = fragment(lead_client.post(url, **HX))
    assert body.strip().startswith('<div id="review-numbers">') and stats(body)["Judgments"] == "30"


def test_an_exclusion_shows_at_once_while_judgments_stream_in(board, lead_client, refresh_interval):
    url = board.url("review-dashboard")
    lead_client.get(url)
    vote(board.pairs[5], board.raters[1], "a")
    assert "1 newer judgment since" in fragment(lead_client.get(url))
    response = lead_client.post(board.url("member-exclude", board.membership(3).pk), {"excluded": "1"})
    page = fragment(lead_client.get(response["Location"]))
    assert stats(page)["Judgments"] == "27"  # 28 + 1, less a3's 2
    assert "1 annotator excluded" in page and "newer judgment" not in page
    body = fragment(
        lead_client.post(board.url("member-exclude", board.membership(3).pk), {"excluded": "0"}, **HX)
    )
    assert stats(body)["Judgments"] == "29" and "excluded</span>" not in body


def test_the_projects_settings_show_at_once(board, refresh_interval):
    review.review_report(board.project)
    vote(board.pairs[5], board.raters[1], "a")
    assert review.review_report(board.project)["newer_judgments"] == 1
    board.project.overlap = 2
    board.project.save()
    report = review.review_report(board.project)
    assert report["newer_judgments"] is None and report["settings"]["overlap"] == 2
    # Pairs 5 and 8 now have their two votes: 0-5, 7, 8 and 9 are complete.
    assert report["headline"]["without_excluded"]["complete_pairs"] == 9


def test_an_adjudication_leaves_the_report_alone_and_shows_in_the_queue(board, lead_client, refresh_interval):
    """The report does not read adjudications (they decide the export), so it is not recomputed; the queue
    reads them on every load."""
    first = review.review_report(board.project)
    review.pair_adjudicate(pair=board.pairs[2], label="a", note="", user=board.lead)
    assert review.review_report(board.project)["computed_at"] == first["computed_at"]
    body = fragment(lead_client.get(board.url("disagreement-list")))
    row = next(r for r in body.split("<tr")[1:] if board.url("pair-adjudicate", board.pairs[2].pk) in r)
    assert '<span class="badge">set</span>' in row


def test_the_report_is_kept_for_every_process(board, refresh_interval):
    """It lives in the shared cache (Redis), not in this process's memory."""
    first = review.review_report(board.project)
    cache.clear()  # this process's own cache
    assert review.review_report(board.project)["computed_at"] == first["computed_at"]
    kept = caches["shared"].get(review._report_key(board.project.pk))
    assert kept["report"]["computed_at"] == first["computed_at"]


def test_without_the_shared_cache_the_page_still_renders(board, lead_client, settings):
    shared = {**settings.CACHES["shared"], "LOCATION": "redis://127.0.0.1:1/0"}  # nothing listens there
    settings.CACHES = {**settings.CACHES, "shared": shared}
    url = board.url("review-dashboard")
    response = lead_client.get(url)
    assert response.status_code == 200 and stats(fragment(response))["Judgments"] == "28"
    vote(board.pairs[5], board.raters[1], "a")
    body = fragment(lead_client.get(url))  # nothing was kept: computed again
    assert stats(body)["Judgments"] == "29" and "newer judgment" not in body
    assert lead_client.post(url, **HX).status_code == 200


def test_as_of_is_the_servers_local_time(board, lead_client, settings):
    settings.TIME_ZONE = "Asia/Kolkata"  # UTC+05:30: never the UTC clock
    body = fragment(lead_client.get(board.url("review-dashboard")))
    computed = datetime.fromisoformat(review.review_report(board.project)["computed_at"])
    local = computed.astimezone(ZoneInfo("Asia/Kolkata"))
    assert f'">{local:%H:%M:%S}</time>' in body and f"{local:%H:%M:%S}" != f"{computed:%H:%M:%S}"


# Adjudication


def test_adjudicate_set_change_clear_and_a_bad_label(board, lead_client):
    pair = board.pairs[2]
    url = board.url("pair-adjudicate", pair.pk)
    page = fragment(lead_client.get(url))
    assert "No final label" in page and page.count("<tr") == 4  # a header and three votes
    response = lead_client.post(url, {"label": "b", "note": "  B cites its source.  "})
    assert response.status_code == 302 and response["Location"] == url
    adjudication = Adjudication.objects.get(pair=pair)
    assert (adjudication.label, adjudication.note, adjudication.decided_by) == (
        "b",
        "B cites its source.",
        board.lead,
    )
    page = fragment(lead_client.get(url))
    assert "Set to <strong>B is better</strong> by leah" in page and "Remove final label" in page

    lead_client.post(url, {"label": "tie", "note": "On reflection."})
    assert Adjudication.objects.get(pair=pair).label == "tie" and Adjudication.objects.count() == 1

    for bad in ({"label": "c", "note": ""}, {"note": "no label"}):
        response = lead_client.post(url, bad)
        assert response.status_code == 400 and 'class="field-error"' in fragment(response)
        assert Adjudication.objects.get(pair=pair).label == "tie"
    with pytest.raises(ValueError, match="label"):
        review.pair_adjudicate(pair=pair, label="c", note="", user=board.lead)

    response = lead_client.post(url, {"action": "clear"})
    assert response.status_code == 302 and not Adjudication.objects.filter(pair=pair).exists()
    assert review.pair_adjudication_clear(pair=pair) is False


def test_an_adjudication_overrides_the_votes_in_the_export_preview(board):
    rules = ConsensusRules()
    before = export_preview(board.project, rules=rules, shape="standard")
    # Pair 1's votes chose A (2 of 3), pair 2's were split, pair 8 has too few votes.
    review.pair_adjudicate(pair=board.pairs[1], label="b", note="", user=board.lead)
    review.pair_adjudicate(pair=board.pairs[2], label="a", note="", user=board.lead)
    review.pair_adjudicate(pair=board.pairs[8], label="b", note="", user=board.lead)
    after = export_preview(board.project, rules=rules, shape="standard")
    assert after.kept == before.kept + 2
    assert after.dropped["split"] == before.dropped["split"] - 1
    assert after.dropped["too_few_votes"] == before.dropped["too_few_votes"] - 1
    samples = {row["id"]: row for row in after.samples}
    assert samples["p1"]["chosen"] == "A longer answer B1" and samples["p1"]["meta"]["adjudicated"] is True
    assert samples["p2"]["chosen"] == "Answer A2" and samples["p2"]["meta"]["votes"]["tie"] == 1
    # Without the override, the votes decide again.
    votes_only = export_preview(
        board.project, rules=ConsensusRules(adjudication_overrides=False), shape="standard"
    )
    assert (votes_only.kept, votes_only.dropped) == (before.kept, before.dropped)


# Sending a pair back


def test_send_back_makes_a_complete_pair_claimable_again(board, lead_client, make_user):
    pair = board.pairs[0]  # 3 of 3 judgments
    early, late = (make_user(name, "annotator") for name in ("early", "late"))
    for user in (early, late):
        Membership.objects.create(project=board.project, user=user)
    assert claim_next_pair(board.project, early).pair != pair
    response = lead_client.post(board.url("pair-send-back", pair.pk))
    assert response.status_code == 302
    assert Pair.objects.get(pk=pair.pk).extra_wanted == 1
    page = fragment(lead_client.get(response["Location"]))
    assert "3 judgments of 4 wanted (k 3 + 1 sent back)" in page
    assert "now wants 4 judgments" in page
    assert claim_next_pair(board.project, late).pair == pair
    # Annotators who judged it are never handed it again.
    assert all(
        (a := claim_next_pair(board.project, board.raters[j])) is None or a.pair != pair for j in range(3)
    )


def test_send_back_on_a_pair_everyone_has_seen_says_no_one_is_left(board, lead_client, make_user):
    pair9, pair0 = board.pairs[9], board.pairs[0]  # judged by all four annotators; by a0-a2
    page = fragment(lead_client.get(board.url("pair-adjudicate", pair0.pk)))
    assert "1 annotator has not seen it yet" in page and "no-one-left" not in page
    # Seen counts a skip or a lease too, and annotators who are inactive or excluded judge nothing.
    Membership.objects.filter(user=board.raters[3]).update(excluded=True)
    assert review.annotators_left(pair0) == 0
    Membership.objects.filter(user=board.raters[3]).update(excluded=False, active=False)
    assert review.annotators_left(pair0) == 0
    Membership.objects.filter(user=board.raters[3]).update(active=True)
    Assignment.objects.filter(pair=pair0, annotator=board.raters[0]).update(state="skipped")
    Judgment.objects.filter(pair=pair0, annotator=board.raters[0]).delete()
    assert review.annotators_left(pair0) == 1  # a3; a0 skipped it and is never handed it again

    page = fragment(lead_client.get(board.url("pair-adjudicate", pair9.pk)))
    invite = reverse("labeling:project-detail", args=[board.project.slug]) + "#invitations"
    assert 'id="no-one-left"' in page and "No one is left to judge this pair" in page
    assert f'<a href="{invite}">Invite more annotators</a>' in page
    body = fragment(lead_client.post(board.url("pair-send-back", pair9.pk), follow=True))
    assert 'class="msg warning"' in body
    # Pair 9 already has 4 judgments (k = 3): one more is its fifth.
    assert "now wants 5 judgments, but no one is left to judge it" in body
    assert Pair.objects.get(pk=pair9.pk).extra_wanted == 2  # it waits for a new annotator
    assert 'id="invitations"' in fragment(lead_client.get(invite))  # the link leads to the invitations
    # Whoever joins gets it first.
    newcomer = make_user("newcomer", "annotator")
    Membership.objects.create(project=board.project, user=newcomer)
    page = fragment(lead_client.get(board.url("pair-adjudicate", pair9.pk)))
    assert "1 annotator has not seen it yet" in page
    assert claim_next_pair(board.project, newcomer).pair == pair9
    assert review.annotators_left(pair9) == 0


def test_excluding_an_annotator_offers_to_requeue_the_pairs_left_under_k(board, lead_client, make_user):
    """a3 judged pairs 1 and 9. Without a3, pair 1 has 2 counted judgments of k = 3 and no slot left;
    pair 9 still has 3. One click re-queues pair 1, which then wants one more judgment."""
    url = board.url("review-dashboard")
    assert "Re-queue" not in fragment(lead_client.get(url))
    body = fragment(
        lead_client.post(board.url("member-exclude", board.membership(3).pk), {"excluded": "1"}, **HX)
    )
    assert 'id="requeue"' in body and "keeps <strong>1 pair</strong> under k = 3" in body
    assert '<button type="submit">Re-queue 1 pair</button>' in body
    assert list(review.pairs_left_under_k(board.project)) == [board.pairs[1]]

    body = fragment(lead_client.post(board.url("pairs-requeue"), **HX)).strip()
    assert body.startswith('<div id="review-numbers">')
    assert "1 pair re-queued: it goes first to annotators who have not seen it, until 3 of its" in body
    assert 'id="requeue"' not in body
    assert Pair.objects.get(pk=board.pairs[1].pk).extra_wanted == 1
    assert Pair.objects.get(pk=board.pairs[9].pk).extra_wanted == 0
    assert review.pairs_requeue(project=board.project) == 0  # nothing more to re-queue

    # It is handed out first, as a sent-back pair is, and its next judgment makes it complete.
    newcomer = make_user("newcomer", "annotator")
    Membership.objects.create(project=board.project, user=newcomer)
    lease = claim_next_pair(board.project, newcomer)
    assert lease.pair == board.pairs[1]
    verdict = Verdict(choice="left" if lease.a_on_left else "right")  # A
    submit_judgment(assignment_id=lease.pk, annotator=newcomer, project=board.project, verdict=verdict)
    pair = review.review_report(board.project, refresh=True)
    assert not review.pairs_left_under_k(board.project).exists()
    assert review.vote_counts(review.pair_votes(board.project, board.pairs[1]))["a"] == 3
    assert pair["headline"]["without_excluded"]["complete_pairs"] == 7  # 0-4, 7 and 9, as before a3 left


def test_requeue_without_htmx_and_what_it_leaves_alone(board, lead_client):
    response = lead_client.post(board.url("member-exclude", board.membership(0).pk), {"excluded": "1"})
    page = fragment(lead_client.get(response["Location"]))
    # a0 judged pairs 0-5 and 7-9 (6 is gold): without a0, pairs 0-4 and 7 keep 2 of 3, 5 and 8 fewer,
    # and pair 9 keeps 3.
    assert "a0&#x27;s judgments are left out of agreement and consensus. 8 pairs now stay under k" in page
    assert "Re-queue 8 pairs" in page
    gold = board.pairs[6]
    response = lead_client.post(board.url("pairs-requeue"))
    assert response.status_code == 302 and response["Location"].endswith("#headline")
    assert "8 pairs re-queued: they go first" in fragment(lead_client.get(response["Location"]))
    wanted = dict(Pair.objects.filter(project=board.project).values_list("pk", "extra_wanted"))
    assert [wanted[p.pk] for p in board.pairs] == [1, 1, 1, 1, 1, 1, 0, 1, 1, 0, 0]
    assert wanted[gold.pk] == 0  # gold pairs are not capped by k
    assert lead_client.put(board.url("review-dashboard")).status_code == 405


def test_requeue_is_refused_to_annotators_and_foreign_leads(board, annotator, make_user, other_project):
    review.membership_set_excluded(membership=board.membership(3), excluded=True)
    stranger = make_user("otto", "lead")
    Membership.objects.create(project=other_project, user=stranger, role=Membership.Role.LEAD)
    for user, status in ((annotator, 403), (stranger, 404)):
        client = Client()
        client.force_login(user)
        assert client.post(board.url("pairs-requeue")).status_code == status
    assert Pair.objects.get(pk=board.pairs[1].pk).extra_wanted == 0
    assert review.pairs_left_under_k(board.project).count() == 1


# The disagreement queue, audit and leaderboard


def test_the_disagreement_queue_lists_split_pairs_most_split_first(board, lead_client):
    body = fragment(lead_client.get(board.url("disagreement-list")))
    listed = [int(pk) for pk in re.findall(r"/review/pairs/(\d+)/", body)]
    by_pk = {pair.pk: i for i, pair in enumerate(board.pairs)}
    # Pair 2 (1 of 3 for its top label), pair 9 (2 of 4), pair 8 (1 of 2), pair 1 (2 of 3); gold pair 6
    # is not an agreement question.
    assert [by_pk[pk] for pk in listed] == [2, 9, 8, 1]
    assert "33%" in body and 'href="/projects/alpha/review/pairs/' in body
    # The adjudication page walks the same queue.
    page = fragment(lead_client.get(board.url("pair-adjudicate", board.pairs[2].pk)))
    assert board.url("pair-adjudicate", board.pairs[9].pk) in page and "Next disagreement" in page


def test_the_audit_section_appears_for_imported_labels(board, lead_client):
    url = board.url("review-dashboard")
    assert "Audit of the imported dataset" not in fragment(lead_client.get(url))
    Pair.objects.filter(pk__in=[board.pairs[0].pk, board.pairs[1].pk]).update(original_label="a")
    Pair.objects.filter(pk=board.pairs[7].pk).update(original_label="a")  # its annotators chose B
    body = fragment(lead_client.post(url, **HX))  # imported labels are not in the version: Refresh
    assert "Audit of the imported dataset" in body
    assert "On 3 of 3 audited pairs with a majority" in body and "67% of the time" in body
    assert board.url("pair-adjudicate", board.pairs[7].pk) in body.split("Audit of")[1]


def test_the_leaderboard_appears_when_pairs_name_their_models(board, lead_client):
    url = board.url("review-dashboard")
    assert "Model leaderboard" not in fragment(lead_client.get(url))
    Pair.objects.update(model_a="alpaca-7b", model_b="vicuna-13b")
    body = fragment(lead_client.post(url, **HX))  # model names are not in the version: Refresh
    assert "Model leaderboard" in body
    board_section = body.split("Model leaderboard")[1]
    assert "alpaca-7b" in board_section and "vicuna-13b" in board_section


# Hostile text


def test_model_output_is_escaped_on_every_review_page(project, lead, make_user, lead_client):
    users = raters(make_user, project, 3)
    project.criteria = [{"name": PAYLOADS[0], "question": "?"}]
    project.save()
    layout = [
        ([{"role": "user", "content": p}] if i % 2 else p, "", {0: "a", 1: "b", 2: "a"})
        for i, p in enumerate(PAYLOADS)
    ]
    pairs = build_pairs(project, layout, users)
    for i, (pair, payload) in enumerate(zip(pairs, PAYLOADS, strict=True)):
        Pair.objects.filter(pk=pair.pk).update(
            response_a=payload, response_b=f"{payload} (b)", model_a=payload, model_b=f"m{i}",
            metadata={"note": payload}, original_label="a",
        )  # fmt: skip
        Judgment.objects.filter(pair=pair).update(rationale=payload, criteria={PAYLOADS[0]: "a"})
    dangerous = [p for p in PAYLOADS if set(p) & set("<>")]  # quotes in text are inert
    pages = [
        reverse("labeling:review-dashboard", args=[project.slug]),
        reverse("labeling:disagreement-list", args=[project.slug]),
        reverse("labeling:export", args=[project.slug]),
    ]
    for pair in pairs:
        url = reverse("labeling:pair-adjudicate", args=[project.slug, pair.pk])
        pages += [url, f"{url}?plain=1"]
    for url in pages:
        body = fragment(lead_client.get(url))
        assert unsafe_markup(body) == [], url
        for payload in dangerous:
            assert payload not in body, (url, payload)
    report = review.review_report(project)
    assert report["leaderboard"] and report["audit"]  # the model names and audit were on the page


# The command


def test_agreement_report_prints_the_numbers(board):
    out = io.StringIO()
    call_command("agreement_report", board.project.slug, stdout=out)
    text = out.getvalue()
    h = review.review_report(board.project)["headline"]["without_excluded"]
    assert "28 judgments on 9 pairs, 7 complete (k = 3), 4 annotators" in text
    assert f"Krippendorff's alpha (nominal): {estimate(h['alpha'])}\n" in text
    assert f"Fleiss' kappa: {estimate(h['fleiss_kappa'])}\n" in text and h["fleiss_kappa"]["low"] is not None
    assert f"percent agreement: {estimate(h['percent_agreement'])}\n" in text
    assert "Split pairs: 4" in text
    assert all(f"\n{u.username} " in text for u in board.raters)


def test_agreement_report_json_is_the_report(board):
    out = io.StringIO()
    call_command("agreement_report", board.project.slug, "--json", stdout=out)
    data = json.loads(out.getvalue())
    report = review.review_report(board.project)
    assert data == json.loads(json.dumps(report))
    assert data["headline"]["without_excluded"]["judgments"] == 28


def test_agreement_report_refuses_an_unknown_slug(db):
    with pytest.raises(CommandError, match="No project with slug 'nope'"):
        call_command("agreement_report", "nope")
