"""labeling.conversations: prompt splits that rebuild each side exactly, transcripts, stored responses of
several turns, and texts compared as annotators see them."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from labeling.conversations import (
    MESSAGES_MARK,
    comparable,
    content_hash,
    is_transcript,
    readable,
    response_key,
    response_messages,
    response_text,
    split_text,
    split_turns,
    transcript_text,
    transcript_turns,
)

# Few distinct values, so that generated conversations often share turns.
WORDS = st.sampled_from(["Hi", "Thanks!", "Sure.", "No", "tea", "", " x ", "שלום", "a\nb"])
TURNS = st.builds(
    lambda role, content: {"role": role, "content": content}, st.sampled_from(["user", "assistant"]), WORDS
)
CONVERSATIONS = st.lists(TURNS, min_size=1, max_size=6)


@settings(max_examples=150, deadline=None)
@given(st.lists(CONVERSATIONS, min_size=2, max_size=4), CONVERSATIONS)
def test_turn_split_rebuilds_each_side_exactly(sides, shared):
    sides = [shared + side for side in sides]
    prefix, rests = split_turns(sides)
    assert all(prefix + rest == side for rest, side in zip(rests, sides, strict=True))
    assert all(rest for rest in rests)  # every side keeps a response
    n = len(prefix)
    # the prefix is the longest one that leaves every side a turn
    assert n == min(map(len, sides)) - 1 or len({repr(side[n]) for side in sides}) > 1


@settings(max_examples=150, deadline=None)
@given(
    st.text(alphabet="ab \n", max_size=12),
    st.text(alphabet="ab c\n", max_size=12),
    st.text(alphabet="ab c", max_size=12),
)
def test_text_split_rebuilds_each_side_exactly_and_cuts_between_words(shared, chosen, rejected):
    chosen, rejected = shared + chosen, shared + rejected
    prompt, chosen_rest, rejected_rest = split_text(chosen, rejected)
    assert prompt + chosen_rest == chosen and prompt + rejected_rest == rejected
    assert prompt == "" or chosen_rest[:1].isspace()  # never inside a word


def test_text_split_is_trl_like():
    assert split_text("The sky is blue.", "The sky is green.") == ("The sky is", " blue.", " green.")
    assert split_text("The sky is blue.", "The sky is black.") == ("The sky is", " blue.", " black.")
    assert split_text("Yes.", "No.") == ("", "Yes.", "No.")


SAFE = st.text(alphabet=st.characters(blacklist_characters="\r"), max_size=20).filter(
    lambda t: "\n\nHuman:" not in t and "\n\nAssistant:" not in t
)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["user", "assistant"]), SAFE), min_size=1, max_size=5))
def test_transcripts_round_trip(turns):
    turns = [{"role": "user", "content": "start"}] + [{"role": r, "content": c} for r, c in turns]
    turns.append({"role": "assistant", "content": "end"})
    assert transcript_turns(transcript_text(turns)) == turns


def test_hh_transcripts():
    text = "\n\nHuman: Is tea ok for cats?\n\nAssistant: No, keep it away from them."
    assert is_transcript(text) and not is_transcript("Human: hi") and not is_transcript("Assistant: x")
    assert transcript_turns(text) == [
        {"role": "user", "content": "Is tea ok for cats?"},
        {"role": "assistant", "content": "No, keep it away from them."},
    ]


def test_responses_of_several_messages_are_marked_json():
    one = [{"role": "assistant", "content": "Yes."}]
    many = [*one, {"role": "user", "content": "Sure?"}, {"role": "assistant", "content": "Yes!"}]
    assert response_text(one) == "Yes." and response_messages("Yes.") is None
    assert response_text(many).startswith(MESSAGES_MARK) and response_messages(response_text(many)) == many
    call = [
        {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "f", "arguments": "{}"}}]}
    ]
    assert response_messages(response_text(call)) == call
    assert readable(response_text(many)) == "assistant: Yes.\nuser: Sure?\nassistant: Yes!"
    assert readable(response_text(call)) == "assistant → tool call f({})"


def test_comparable_text():
    assert comparable("a  b\t c   \r\nnext  line \r\n\r\n") == "a b c\nnext line"
    assert comparable("def f():\n    return 1") == "def f():\n    return 1"  # indentation kept
    assert comparable("e\u0301") == comparable("\u00e9")  # the same letter, composed or not
    assert comparable("a b") != comparable("ab")


SPACING = st.sampled_from(["\n", "\r\n"]), st.sampled_from(["", " ", "  \t"]), st.sampled_from([" ", "   "])


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.lists(st.sampled_from(["tea", "cats", "No", "x=1"]), min_size=1, max_size=4),
        min_size=1,
        max_size=4,
    ),
    *SPACING,
)
def test_hash_ignores_line_ends_trailing_and_repeated_spaces(lines, newline, trailing, space):
    canonical = "\n".join(" ".join(words) for words in lines)
    variant = newline.join(space.join(words) + trailing for words in lines)
    assert response_key(variant) == response_key(canonical)
    assert content_hash("p\r\n", variant, "other") == content_hash("p", "other", canonical)


def test_hash_of_a_single_user_turn_is_the_hash_of_its_text():
    assert content_hash([{"role": "user", "content": "Hi"}], "a", "b") == content_hash("Hi", "a", "b")
    system = [{"role": "system", "content": "S"}, {"role": "user", "content": "Hi"}]
    assert content_hash(system, "a", "b") != content_hash("Hi", "a", "b")


def test_hash_tells_tool_calls_apart():
    def reply(people: int) -> str:
        call = {"function": {"name": "book", "arguments": f'{{"people": {people}}}'}}
        return response_text([{"role": "assistant", "content": "Booking.", "tool_calls": [call]}])

    assert response_key(reply(2)) != response_key(reply(4))
    assert content_hash("p", reply(2), reply(4)) == content_hash("p", reply(4), reply(2))
