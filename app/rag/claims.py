"""What a sentence claims, in the parts a check can compare: its words, numbers, names and polarity.

The support check (support.py) asks whether a passage says what an answer sentence says. Word
overlap and embeddings alone cannot see the errors that matter most to a reader: "27 days" against
"25 days" shares every word but one, and "is not" against "is" shares all of them. So the parts a
wrong answer usually gets wrong are extracted exactly here and compared exactly there.

Sentence boundaries keep character offsets, because a citation's supporting span is shown by
offset inside the passage text (the web page highlights ``text[start:end]``).
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache

from app.text import terms

MARKER = re.compile(r"(?<!\s)\s*\[(\d{1,3})\]")  # (?<!\s): a run of blanks is tried once, not at each blank
_MARKER_LIST = re.compile(r"\[(\d{1,3}(?:\s*,\s*\d{1,3})+)\]")  # "[1, 2]": models drift from "[1][2]"
# A sentence ends at . ! ? (then any [n] markers that belong to it) before white space and a capital,
# a digit, a quote, a bracket or a list bullet; or at a line break.
# A marker followed by a capital ends one too: the extractive provider cites a heading line as "2.5.1 How can R
# be installed [1] Otherwise, ..." with no period, and its two claims cite two passages.
_ANSWER_END = re.compile(
    r"(?<![.!?])[.!?]+(?:\s*\[\d{1,3}\])*(?=\s+[A-Z0-9\"'(\[*•-]|\s*$)|(?:\[\d{1,3}\])+(?=\s+[A-Z])|\n+"
)
_PASSAGE_END = re.compile(r"(?<![.!?])[.!?]+(?=\s+[A-Z0-9\"'(*•-])|\n\s*\n|\n(?=\s*(?:[-*+•]|\d+[.)])\s)")
_ABBREVIATION = re.compile(r"(?:\b(?:e\.g|i\.e|etc|vs|cf|approx|no|fig|dr|mr|mrs|ms|st)|\b[A-Za-z])\.$", re.I)
_NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d+(?:[.,:/]\d+)*|\.\d+)")
_WORD = re.compile(r"[A-Za-z0-9_][\w'’+.-]*[\w+]|[A-Za-z0-9]")
# fmt: off
_SMALL = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
          "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty"]
_NUMBER_WORDS = {w: str(i) for i, w in enumerate(_SMALL)} | {
    "thirty": "30", "forty": "40", "fifty": "50", "sixty": "60", "seventy": "70", "eighty": "80", "ninety": "90",
    "hundred": "100", "thousand": "1000", "million": "1000000", "once": "1", "twice": "2", "single": "1",
    "double": "2", "half": "0.5", "first": "1", "second": "2", "third": "3",
}
NEGATIONS = frozenset(["not", "no", "never", "cannot", "none", "nor", "neither", "without", "nothing", "nobody",
                       "nowhere", "unable", "impossible"])
# fmt: on


@dataclass(frozen=True)
class Claim:
    """The comparable parts of one piece of text (an answer sentence or a passage window)."""

    terms: frozenset[str]  # stemmed content words
    bigrams: frozenset[tuple[str, str]]
    numbers: tuple[str, ...]  # each occurrence, sorted and normalised: "1,000" -> "1000", "three" -> "3"
    names: frozenset[str]  # lower-cased names and identifiers: SQLite, Ross Ihaka, sqlite3_open
    words: frozenset[str]  # every lower-cased word, to look names up in
    negations: int  # "not", "never", "cannot", "n't", ...: "not ... nor" is two


def _number(token: str) -> str:
    token = token.lstrip("+")
    if re.fullmatch(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?", token):
        token = token.replace(",", "")
    if token.startswith("."):
        token = "0" + token
    if re.fullmatch(r"-?\d+\.\d+", token):
        token = token.rstrip("0").rstrip(".")
    return token


def _is_name(word: str, first: bool) -> bool:
    """A capitalised word inside a sentence, a mixed-case or all-caps word, or an identifier."""
    if word in ("I", "I'm", "I've") or (len(word) < 2 and not word.isupper()):
        return False
    inner_caps = any(c.isupper() for c in word[1:])
    code_like = "_" in word or (any(c.isdigit() for c in word) and any(c.isalpha() for c in word))
    if inner_caps or code_like:
        return True
    return not first and word[0].isupper()


@lru_cache(maxsize=8192)  # a passage is analysed once per answer sentence that may cite it
def analyse(text: str) -> Claim:
    plain = MARKER.sub(" ", text)
    stems = terms(plain)
    words = _WORD.findall(plain)
    lower = [w.lower().replace("’", "'") for w in words]
    numbers = [_number(m.group(0)) for m in _NUMBER.finditer(plain)]
    numbers += [_NUMBER_WORDS[w] for w in lower if w in _NUMBER_WORDS]
    names = set()
    for i, word in enumerate(words):
        word = word.rstrip(".")
        if _is_name(word, first=i == 0 or words[i - 1].endswith((".", ":"))) and not word.isdigit():
            names.add(word.lower().removesuffix("'s").removesuffix("’s"))
    vocabulary = set(lower) | {w.rstrip(".") for w in lower} | {w.removesuffix("'s") for w in lower}
    for w in lower:  # "R-admin" is found by its parts too, "sqlite3_open()" by its name
        vocabulary.update(p for p in re.split(r"[-_./+()]", w) if p)
    negations = sum(1 for w in lower if w in NEGATIONS or w.endswith("n't"))
    return Claim(
        terms=frozenset(stems),
        bigrams=frozenset(itertools.pairwise(stems)),
        numbers=tuple(sorted(n for n in numbers if n)),
        names=frozenset(names),
        words=frozenset(vocabulary),
        negations=negations,
    )


def missing_numbers(claim: Claim, source: Claim) -> bool:
    """Whether the claim has a number the source lacks, counted: "2 x 3 x 3" is not "2 x 3 x 1"."""
    return bool(Counter(claim.numbers) - Counter(source.numbers))


def missing_names(claim: Claim, source: Claim) -> set[str]:
    """The claim's names the source does not mention (a plural or possessive of a name counts)."""
    missing = set()
    for name in claim.names:
        parts = [p for p in re.split(r"[-_./+()]", name) if p]
        if (
            name in source.words
            or name.rstrip("s") in source.words
            or (parts and all(p in source.words for p in parts))
        ):
            continue
        missing.add(name)
    return missing


def _spans(text: str, boundary: re.Pattern[str]) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    start = 0
    for match in boundary.finditer(text):
        end = match.end()
        if match.group(0)[0] in ".!?" and _ABBREVIATION.search(text[max(0, match.start() - 8) : match.start() + 1]):
            continue  # "e.g. Windows" is not the end of a sentence
        spans.append((start, end))
        start = end
    spans.append((start, len(text)))
    trimmed = []
    for s, e in spans:  # without the white space around them, and never empty
        while s < e and text[s].isspace():
            s += 1
        while e > s and text[e - 1].isspace():
            e -= 1
        if e > s:
            trimmed.append((s, e))
    return trimmed


def answer_sentences(text: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence of an answer, its trailing [n] markers included."""
    return _spans(text, _ANSWER_END)


def strip_markers(text: str) -> str:
    return MARKER.sub("", text)


def normalize_markers(text: str, n_passages: int) -> str:
    """``[1, 2]`` written as ``[1][2]``, and without the markers that name no passage (``[0]``, ``[9]`` of
    five): repeated until nothing changes, so removing ``[9]`` from ``[[9]5]`` cannot leave a ``[5]``."""
    while True:
        expanded = _MARKER_LIST.sub(lambda m: "".join(f"[{n.strip()}]" for n in m.group(1).split(",")), text)
        cleaned = MARKER.sub(lambda m: m.group(0) if 1 <= int(m.group(1)) <= n_passages else "", expanded)
        if cleaned == text:
            return text
        text = cleaned


_HEADING_LINE = re.compile(r"^[^\n]{1,60}(?<![.!?,;:)])\n(?=[A-Z0-9])", re.M)


def passage_sentences(text: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence of a passage; a line wrapped by a PDF does not end one, a heading's
    line does ("HR Policy: Time Off" is not part of the first sentence under it)."""
    spans = []
    for start, end in _spans(text, _PASSAGE_END):
        for heading in _HEADING_LINE.finditer(text, start, end):
            spans.append((start, heading.end() - 1))
            start = heading.end()
        spans.append((start, end))
    return spans


def markers(sentence: str) -> list[int]:
    """The [n] numbers a sentence carries, in order, each once."""
    return list(dict.fromkeys(int(m.group(1)) for m in MARKER.finditer(sentence)))


_POLITE = re.compile(r"^\W*(?:i hope|hope this|let me know|feel free|happy to help|please (?:ask|let|contact))\b", re.I)


def is_claim(claim: Claim, text: str) -> bool:
    """Whether a sentence states something a source must back ("Here is what I found:", a question back to
    the reader or "I hope this helps." do not)."""
    plain = strip_markers(text).strip()
    if plain.endswith((":", "?")) or _POLITE.match(plain):
        return False
    return len(claim.terms) >= 2 or bool(claim.numbers) or bool(claim.names)
