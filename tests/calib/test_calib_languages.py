"""The first-token language filter, on hand-picked tokens and on the tiny vocabulary."""

import pytest
import torch

from normtweak.calib.generate import draw_first_tokens
from normtweak.calib.languages import (
    DEFAULT_LANGUAGES,
    in_languages,
    parse_languages,
    token_languages,
)


@pytest.mark.parametrize("token, langs", [
    ("the", {"en"}), (" the", {"en"}), ("house", {"en"}), ("também", {"pt"}),
    ("ción", {"es"}), ("的", {"zh"}), ("语言", {"zh"}),
])
def test_known_words_get_their_language(token, langs):
    assert langs <= token_languages(token)
    assert in_languages(token, DEFAULT_LANGUAGES)


@pytest.mark.parametrize("token", ["€", "123", "7", ".", "!", ",", " ", "", "\n", "a1", "ab_",
                                   "\ufffd", "a的", "the.", "<|endoftext|>", "Ωmega"])
def test_non_letters_and_mixed_scripts_are_rejected(token):
    assert token_languages(token) == frozenset()
    assert not in_languages(token, DEFAULT_LANGUAGES)


def test_language_choice_is_respected():
    assert not in_languages("的", ("en", "fr"))
    assert not in_languages("the", ("zh",))
    assert in_languages("привет", ("ru",)) and not in_languages("привет", DEFAULT_LANGUAGES)
    # langdetect is confident this word is German: rejected unless German is chosen
    assert not in_languages("Wasser", DEFAULT_LANGUAGES)
    assert in_languages("Wasser", ("de",))
    # 1-3 letters: langdetect is not consulted, the Latin script decides
    assert in_languages("a", ("fr",)) and in_languages("x", ("en",))


def test_parse_languages():
    assert parse_languages(None) == ("en", "es", "pt", "zh", "fr")
    assert parse_languages(" en, ZH,en ") == ("en", "zh")
    with pytest.raises(ValueError, match="xx"):
        parse_languages("en,xx")
    with pytest.raises(ValueError, match="empty"):
        parse_languages(",")


def _is_han(ch):
    return 0x4E00 <= ord(ch) <= 0x9FFF or 0x3400 <= ord(ch) <= 0x4DBF


def _is_latin(ch):
    return ch.isascii() and ch.isalpha() or 0xC0 <= ord(ch) <= 0x24F and ch not in "\u00d7\u00f7"


def test_draws_from_tiny_vocab_obey_the_filter(tokenizer):
    specials = set(tokenizer.all_special_ids)
    gen = torch.Generator().manual_seed(0)
    zh = draw_first_tokens(tokenizer, 20, ("zh",), gen)
    assert zh.dtype == torch.int64 and zh.shape == (20,)
    for t in zh.tolist():
        text = tokenizer.decode([t]).strip()
        assert t not in specials and text and all(_is_han(c) for c in text)
    latin = draw_first_tokens(tokenizer, 50, ("en", "es", "pt", "fr"), gen)
    for t in latin.tolist():
        text = tokenizer.decode([t]).strip()
        assert t not in specials and text.isalpha() and all(_is_latin(c) for c in text)


def test_impossible_language_is_a_clear_error(tokenizer):
    # the tiny tokenizer was trained without Korean text: no Hangul token exists
    with pytest.raises(ValueError, match="choose other languages"):
        draw_first_tokens(tokenizer, 1, ("ko",), torch.Generator().manual_seed(0), max_draws=2000)
