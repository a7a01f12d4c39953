"""Which language a single vocabulary token belongs to, for choosing first tokens.

The rule, in order (`token_languages`):

1. Decode the token alone and strip surrounding whitespace. It must be non-empty and
   every character must be a letter (`str.isalpha`): digits, punctuation, symbols
   ('€'), byte fragments of multi-byte characters ('\\ufffd') and mixed strings are
   rejected outright.
2. Every letter must belong to one script, read from its Unicode name: LATIN, CJK
   (Han), HIRAGANA/KATAKANA, HANGUL, CYRILLIC, GREEK, ARABIC, HEBREW, DEVANAGARI, THAI.
   Mixed scripts are rejected. The script gives the candidate languages: Han -> zh
   (Japanese kanji are Han too and cannot be told apart from one token), Latin -> the
   Latin-script languages in `SCRIPT_LANGUAGES`, and so on.
3. Only for Latin-script fragments of at least `MIN_DETECT_LETTERS` letters, langdetect
   (seeded, so deterministic) narrows the candidates when it is confident (top
   probability >= `CONFIDENT`): the candidates become its top language. Shorter
   fragments keep every Latin-script language: langdetect cannot judge 1-3 letters
   ('a' comes back as Tagalog, 'x' as Somali).

Be honest about what this buys: langdetect is unreliable even on whole words (it calls
'très' Catalan and 'pero' Italian with >0.99 "confidence"), so the language label of a
Latin word is approximate. What the filter does guarantee is that a first token is a
run of letters in the script of a chosen language - never a digit, punctuation,
symbol, special token or byte fragment - and that a word langdetect confidently places
outside the chosen languages (e.g. German 'Wasser') is rejected.
"""

from __future__ import annotations

import functools
import unicodedata

DEFAULT_LANGUAGES = ("en", "es", "pt", "zh", "fr")
LATIN_LANGUAGES = ("en", "es", "pt", "fr", "de", "it", "nl", "ca", "pl", "sv", "tr", "vi", "id")
SCRIPT_LANGUAGES: dict[str, tuple[str, ...]] = {
    "LATIN": LATIN_LANGUAGES,
    "CJK": ("zh",),
    "HIRAGANA": ("ja",),
    "KATAKANA": ("ja",),
    "HANGUL": ("ko",),
    "CYRILLIC": ("ru", "uk", "bg"),
    "GREEK": ("el",),
    "ARABIC": ("ar", "fa"),
    "HEBREW": ("he",),
    "DEVANAGARI": ("hi",),
    "THAI": ("th",),
}
SUPPORTED_LANGUAGES = tuple(sorted({lang for langs in SCRIPT_LANGUAGES.values() for lang in langs}))
MIN_DETECT_LETTERS = 4
CONFIDENT = 0.9


def parse_languages(languages: str | tuple[str, ...] | list[str] | None) -> tuple[str, ...]:
    """Validate language codes ("en,zh" or a sequence); None gives DEFAULT_LANGUAGES."""
    if languages is None:
        return DEFAULT_LANGUAGES
    if isinstance(languages, str):
        languages = [part for part in languages.split(",")]
    codes = tuple(dict.fromkeys(code.strip().lower() for code in languages if code.strip()))
    if not codes:
        raise ValueError("languages is empty; give codes such as 'en,es,pt,zh,fr'")
    unknown = [code for code in codes if code not in SUPPORTED_LANGUAGES]
    if unknown:
        raise ValueError(f"unknown language code(s) {unknown}; supported: {', '.join(SUPPORTED_LANGUAGES)}")
    return codes


def char_script(char: str) -> str | None:
    """The script of one letter from its Unicode name ('LATIN', 'CJK', ...), or None."""
    name = unicodedata.name(char, "")
    for script in SCRIPT_LANGUAGES:
        if name.startswith(script):
            return script
    return None


@functools.lru_cache(maxsize=65536)
def _detect(text: str) -> tuple[str, float]:
    """langdetect's top (language, probability), deterministic; ('', 0) when it fails."""
    from langdetect import DetectorFactory, detect_langs
    from langdetect.lang_detect_exception import LangDetectException

    DetectorFactory.seed = 0  # langdetect samples n-grams; without a seed it is not repeatable
    try:
        best = detect_langs(text)[0]
    except LangDetectException:
        return "", 0.0
    return best.lang, float(best.prob)


def token_languages(text: str) -> frozenset[str]:
    """Candidate languages of a decoded token by the rule in the module docstring.

    An empty set means the token is rejected whatever the chosen languages.
    """
    word = text.strip()
    if not word or not word.isalpha():
        return frozenset()
    scripts = {char_script(c) for c in word}
    if len(scripts) != 1 or None in scripts:
        return frozenset()
    script = scripts.pop()
    candidates = frozenset(SCRIPT_LANGUAGES[script])
    if script == "LATIN" and len(word) >= MIN_DETECT_LETTERS:
        lang, prob = _detect(word)
        if prob >= CONFIDENT:
            return frozenset({lang})
    return candidates


def in_languages(text: str, languages: tuple[str, ...]) -> bool:
    """True when the decoded token `text` may belong to one of `languages`."""
    return not token_languages(text).isdisjoint(languages)
