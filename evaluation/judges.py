"""An AI judge's prompt and its verdicts in both orders, pure (no Django; the backend is passed in).

The judging prompt carries the project's rubric and criteria, the conversation's prompt and two answers,
and asks for exactly one of A, B or tie. A local backend reads the verdict's probabilities from the
next-token distribution (`LocalBackend.choice_probabilities`); every pair is judged twice, as written and
with its sides swapped (evaluation.judge_stats averages the orders and counts the inconsistent pairs).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

OPTIONS = ("A", "B", "tie")

DEFAULT_TEMPLATE = """You compare two answers to the same request, as a careful annotator would.

Rubric:
{rubric}
{criteria}
Request:
{prompt}

Answer A:
{first}

Answer B:
{second}

Which answer is better under the rubric? Reply with exactly one of: A, B, tie."""


def _text(prompt: Any) -> str:
    if isinstance(prompt, str):
        return prompt
    return "\n".join(f"{m.get('role', 'user')}: {m.get('content', '')}" for m in prompt)


def judge_messages(
    *,
    prompt: Any,
    first: str,
    second: str,
    rubric: str = "",
    criteria: Sequence[dict] = (),
    template: str = DEFAULT_TEMPLATE,
) -> list[dict[str, str]]:
    """The judging prompt for one order of one pair, as a user message. `criteria`: the project's
    [{"name", "question"}]; `template`: placeholders {rubric}, {criteria}, {prompt}, {first}, {second}."""
    listed = "".join(f"- {c['name']}: {c.get('question', '')}\n" for c in criteria)
    text = template.format(
        rubric=rubric.strip() or "Prefer the answer that is more helpful, correct and honest.",
        criteria=f"\nCriteria to weigh:\n{listed}" if listed else "",
        prompt=_text(prompt), first=first, second=second,
    )  # fmt: skip
    return [{"role": "user", "content": text}]


def judge_both_orders(
    backend: Any,
    pairs: Sequence[tuple[Any, str, str]],
    *,
    rubric: str = "",
    criteria: Sequence[dict] = (),
    template: str = DEFAULT_TEMPLATE,
    adapter: str | None = None,
) -> tuple[Any, Any]:
    """(shown, swapped): each of shape (N, 3), the probabilities of A, B, tie for `pairs` (prompt,
    response_a, response_b) as written and with the sides swapped (its columns naming what was shown
    first and second), from one `choice_probabilities` call over the 2N prompts (batched)."""
    context = {"rubric": rubric, "criteria": criteria, "template": template}
    prompts = [judge_messages(prompt=p, first=a, second=b, **context) for p, a, b in pairs]
    prompts += [judge_messages(prompt=p, first=b, second=a, **context) for p, a, b in pairs]
    kwargs = {"adapter": adapter} if adapter is not None else {}
    probabilities = backend.choice_probabilities(prompts, list(OPTIONS), **kwargs)
    return probabilities[: len(pairs)], probabilities[len(pairs) :]
