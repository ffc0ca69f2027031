"""Transcript normalisation before alignment: what a recogniser can be asked to find in the audio.

Annotated transcripts (MELD, IEMOCAP) are written for readers: digits ("I'm 25", "$5", "3:30", "90s"),
curly apostrophes, ellipses, dashes, mixed case. A recogniser's lexicon (pocketsphinx) or token stream
(Whisper) is spoken words, so a true transcript could fail alignment only because it is written
differently from how it is said. :func:`spoken_words` turns it into lowercase spoken words:

* numbers to words with ``num2words`` (cardinals, ordinals "21st", years "1994", decades "90s",
  decimals "3.5", thousands separators "1,000", currency "$5"/"£5", percent, clock times "3:30");
* symbols said aloud ("&" -> and, "%" -> percent, "+" -> plus, "@" -> at);
* apostrophes straightened, contractions kept as one word ("can't": lexicons list them); informal forms
  a lexicon may lack are expanded on request (:data:`INFORMAL`, used for out-of-vocabulary words);
* punctuation dropped, hyphenated words split.

:func:`display_text` keeps case and punctuation but expands numbers the same way, for recognisers that
score written text (Whisper). Reference: the text normalisers of OpenAI Whisper (``EnglishTextNormalizer``)
and NVIDIA NeMo text processing do the same job at larger scale.
"""
from __future__ import annotations

import re
import unicodedata

_QUOTES = str.maketrans({"\u2019": "'", "\u2018": "'", "`": "'", "\u00b4": "'", "\u201c": '"', "\u201d": '"',
                         "\u2026": " ... ", "\u2014": " - ", "\u2013": " - ", "\u0092": "'", "\u0091": "'",
                         "\u0085": " ... ", "\u0097": " - ", "\u0096": " - "})
_SYMBOLS = {"&": " and ", "%": " percent ", "+": " plus ", "@": " at ", "=": " equals ", "#": " number "}
_CURRENCY = {"$": ("dollar", "dollars", "cent", "cents"), "£": ("pound", "pounds", "penny", "pence"),
             "€": ("euro", "euros", "cent", "cents")}
# informal spellings pocketsphinx's en-us dictionary lacks, spelled as said (used only for OOV words)
INFORMAL = {"y'know": "you know", "c'mon": "come on", "'cause": "because", "cause": "because",
            "ya": "you", "'em": "them", "gotta": "got to", "wanna": "want to", "gonna": "going to",
            "kinda": "kind of", "sorta": "sort of", "outta": "out of", "lemme": "let me", "gimme": "give me",
            "dunno": "don't know", "y'all": "you all", "ok": "okay", "'til": "until", "til": "until",
            "'bout": "about", "nothin'": "nothing", "somethin'": "something", "doin'": "doing",
            "goin'": "going", "ma'am": "madam", "o'clock": "o'clock", "yknow": "you know"}
_NUMBER = re.compile(
    r"(?P<h>\b\d{1,2}):(?P<m>\d{2})(?!\d)"
    r"|(?P<cur>[$£€])?(?P<num>\d+(?:,\d{3})*(?:\.\d+)?)(?P<suf>st|nd|rd|th|s|'s|%)?(?![\w])", re.IGNORECASE)
_NOT_WORD = re.compile(r"[^\w']+")


def _n2w(value: str, to: str = "cardinal") -> str:
    from num2words import num2words
    try:
        return num2words(float(value) if "." in value else int(value), to=to, lang="en")
    except (ValueError, OverflowError, NotImplementedError):
        return value


def _number(m: re.Match) -> str:
    if m.group("h") is not None:  # clock time 3:30 -> three thirty, 3:00 -> three o'clock
        h, mm = int(m.group("h")), int(m.group("m"))
        return f" {_n2w(str(h))} " + ("o'clock " if mm == 0 else ("oh " if mm < 10 else "") + _n2w(str(mm)) + " ")
    cur, num, suf = m.group("cur"), m.group("num").replace(",", ""), (m.group("suf") or "").lower()
    if cur:
        one, many, sub_one, sub_many = _CURRENCY[cur]
        whole, _, frac = num.partition(".")
        words = f"{_n2w(whole)} {one if whole == '1' else many}"
        if frac and int(frac):
            cents = frac[:2].ljust(2, "0")
            words += f" and {_n2w(str(int(cents)))} {sub_one if int(cents) == 1 else sub_many}"
        return f" {words} "
    if suf in ("st", "nd", "rd", "th"):
        return f" {_n2w(num, 'ordinal')} "
    if suf in ("s", "'s") and "." not in num:  # 90s -> nineties, 1990s -> nineteen nineties
        words = _n2w(num, "year" if len(num) == 4 else "cardinal")
        head, _, last = words.rpartition(" ")
        last = last.split("-")[-1]
        plural = (last[:-1] + "ies") if last.endswith("y") else last + "s"
        prefix = words[: len(words) - len(words.split(" ")[-1])] + ("-".join(words.split(" ")[-1].split("-")[:-1])
                                                                    + "-" if "-" in words.split(" ")[-1] else "")
        return f" {prefix}{plural} "
    if suf == "%":
        return f" {_n2w(num)} percent "
    if len(num) == 4 and "." not in num and 1100 <= int(num) <= 2099 and not num.endswith("000"):
        return f" {_n2w(num, 'year')} "
    return f" {_n2w(num)} "


def expand_numbers(text: str) -> str:
    return _NUMBER.sub(_number, text)


def _clean(text: str) -> str:
    text = unicodedata.normalize("NFKC", (text or "").translate(_QUOTES))
    return text.translate(_QUOTES)


def display_text(text: str) -> str:
    """Written form for a recogniser that scores text (Whisper): case and punctuation kept, quotes
    straightened, ellipses/dashes spaced, numbers and symbols written as words, spaces collapsed."""
    text = expand_numbers(_clean(text))
    for sym, word in _SYMBOLS.items():
        text = text.replace(sym, word)
    text = re.sub(r"\s+([,.!?;:])", r"\1", text)
    return " ".join(text.split())


def spoken_words(text: str, *, expand_informal: bool = False) -> list[str]:
    """Lowercase spoken words of ``text`` (see the module docstring); punctuation and hyphens dropped."""
    text = expand_numbers(_clean(text))
    for sym, word in _SYMBOLS.items():
        text = text.replace(sym, word)
    words = [w for w in _NOT_WORD.sub(" ", text.lower().replace("_", " ")).split()]
    out: list[str] = []
    for w in words:
        if expand_informal and w in INFORMAL:
            out.extend(INFORMAL[w].split())
            continue
        w = w if w in INFORMAL else w.strip("'")  # keep 'cause / nothin' as keys; strip quote marks
        if w:
            out.append(w)
    return out
