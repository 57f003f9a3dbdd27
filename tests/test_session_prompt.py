"""The prompt builder and the protocol's [prompt] / [live] tables."""

from __future__ import annotations

import pytest

from edge_cer.errors import EdgeCerError
from edge_cer.session.prompt import PromptBuilder
from edge_cer.session.protocol import PromptSettings, load_protocol, parse_protocol


def test_fillers_stutters_punctuation_and_case_are_cleaned():
    build = PromptBuilder(PromptSettings())
    assert build("Um, they are, you know, actors actors on a set.") == "they are actors on a set"
    assert build("It looks like a film set, I mean, a staged one!") == "it looks like a film set a staged one"
    assert build("Hmm... uh") == "" and build("") == ""
    assert build("The doctor's arrived") == "the doctor's arrived"


def test_template_length_limit_and_negative_prompt():
    build = PromptBuilder(PromptSettings(template="a calm photo, {transcript}", max_words=4, negative_prompt="blood"))
    assert build("one two three four five six") == "a calm photo, one two three four"
    assert build.negative_prompt == "blood"
    assert PromptBuilder(PromptSettings()).negative_prompt is None


def test_speculative_prompts_wait_for_min_words():
    build = PromptBuilder(PromptSettings(min_words=3))
    assert build.speculative("they uh are") == ""
    assert build.speculative("they are actors") == "they are actors"


def test_default_protocol_has_the_tables_with_their_defaults():
    protocol = load_protocol()
    assert protocol.prompt == PromptSettings() and protocol.live.speculate and protocol.live.on_deadline == "best"


@pytest.mark.parametrize("table, message", [
    ('[prompt]\ntemplate = "a photo"', "{transcript}"),
    ('[prompt]\ntemplate = "{transcript} {transcript}"', "exactly once"),
    ('[prompt]\ntemplate = "{mood} {transcript}"', "no other braces"),
    ("[prompt]\nmin_words = 9\nmax_words = 4", "min_words <= max_words"),
    ('[prompt]\nfillers = ["um", " "]', "empty entry"),
    ("[prompt]\nmax_word = 4", "unknown key `max_word`"),
    ("[live]\ndeadline_s = 0", "deadline_s > 0"),
    ("[live]\ndebounce_s = -1", "debounce_s >= 0"),
    ('[live]\non_deadline = "stimulus"', '"best" or "none"'),
    ('[live]\nspeculate = "yes"', "must be bool"),
])
def test_bad_prompt_and_live_tables_are_refused_with_the_fix(table, message):
    with pytest.raises(EdgeCerError, match="study.toml") as info:
        parse_protocol(table, "study.toml")
    assert message in str(info.value)
