"""Small text helpers shared by the extractive provider and citation snippets.

Deliberately simple and deterministic: a stop-word list, suffix stemming, and a
sentence splitter that undoes PDF line wrapping.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

_STOPWORDS = frozenset(
    (
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "can",
        "do",
        "does",
        "for",
        "from",
        "has",
        "have",
        "how",
        "i",
        "if",
        "in",
        "is",
        "it",
        "its",
        "me",
        "my",
        "of",
        "on",
        "or",
        "our",
        "should",
        "so",
        "that",
        "the",
        "their",
        "them",
        "there",
        "these",
        "they",
        "this",
        "to",
        "was",
        "we",
        "what",
        "when",
        "where",
        "which",
        "who",
        "why",
        "will",
        "with",
        "you",
        "your",
        "am",
        "any",
        "get",
        "got",
        "much",
        "many",
        "per",
        "than",
        "then",
        "into",
        "about",
        "after",
        "before",
        "also",
        "must",
        "need",
        "needs",
        "may",
        "might",
        "could",
        "would",
        "shall",
        "not",
        "no",
        "yes",
        "tell",
        "know",
    )
)
_WORD = re.compile(r"[a-z0-9]+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(*])")
_LIST_ITEM = re.compile(r"^\s*([-*+•]|\d+[.)])\s+")


@lru_cache(maxsize=65536)  # words repeat across passages and requests: ~1 µs a lookup instead of a suffix loop
def _stem(word: str) -> str:
    for suffix in ("ing", "ies", "ed", "es", "s"):
        if len(word) > len(suffix) + 2 and word.endswith(suffix):
            return word[: -len(suffix)] + ("y" if suffix == "ies" else "")
    return word


def terms(text: str) -> list[str]:
    return [_stem(w) for w in _WORD.findall(text.lower()) if w not in _STOPWORDS]


def _looks_like_heading(line: str) -> bool:
    return len(line) <= 60 and not line.endswith((".", "!", "?", ")", ",", ";"))


def _unwrap(text: str) -> list[str]:
    """Re-join lines that a PDF or a text editor wrapped mid-sentence; keep list items apart."""
    blocks: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            blocks.append("")
            continue
        prev = blocks[-1] if blocks else ""
        wrapped = prev and not prev.endswith((".", "!", "?", ":")) and not _looks_like_heading(prev)
        if wrapped and not _LIST_ITEM.match(line):
            blocks[-1] += " " + line
        else:
            blocks.append(line)
    return [b for b in blocks if b]


def split_sentences(text: str) -> list[str]:
    """Sentences of a passage; a short lead-in ("Phishing.") is kept with the sentence it labels."""
    sentences = []
    for block in _unwrap(text):
        block = _LIST_ITEM.sub("", block).replace("**", "")
        lead = ""
        for sentence in _SENTENCE_END.split(block):
            sentence = f"{lead} {sentence.strip()}".strip()
            lead = ""
            if len(sentence) <= 20:
                lead = sentence
            elif not _looks_like_heading(sentence):
                sentences.append(sentence)
    return sentences


def escape_fence(text: str, fence: re.Pattern[str]) -> str:
    """Escape the tags that would open or close a prompt's fence (``<sources>``) inside untrusted text.

    NFKC first: a model reads the fullwidth ``＜/sources＞`` as the tag it looks like, so look-alikes
    must not pass the escaping (the text the model sees is the normalised one).
    """
    return fence.sub(
        lambda m: m.group(0).replace("<", "&lt;").replace(">", "&gt;"), unicodedata.normalize("NFKC", text)
    )
