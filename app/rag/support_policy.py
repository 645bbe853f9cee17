"""What an answer does with its unsupported sentences: flag them, drop them, or refuse.

- ``flag`` (default) returns the answer as written (less any marker that names no passage) and
  marks each unsupported sentence, for the reader to judge.
- ``drop`` removes the unsupported sentences and says how many; an answer left with nothing it can
  back becomes the refusal.
- ``refuse`` answers "not in the documents" when the core of the answer is unsupported: half or
  more of its claim text (by characters, so a long unsupported explanation outweighs a short
  supported aside).

The policy and its outcome travel with the answer, its audit row and the eval report.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from app.llm.base import ChatRequest
from app.rag.claims import normalize_markers
from app.rag.support import Policy, SentenceSupport, Verifier
from vectorstore.store import Hit


@dataclass(frozen=True)
class Checked:
    text: str  # the answer to return
    sentences: list[SentenceSupport] = field(default_factory=list)  # offsets inside ``text``
    policy: Policy = "flag"
    dropped: int = 0  # unsupported sentences removed (drop)
    refused: bool = False  # replaced by the refusal because its core was unsupported (refuse, or drop of all)
    judged: int = 0  # sentences the optional model judge decided
    withheld: tuple[int, int] = (0, 0)  # refused: the claims and unsupported sentences of the answer withheld

    @property
    def claims(self) -> int:
        return sum(1 for s in self.sentences if s.claim)

    @property
    def unsupported(self) -> int:
        return sum(1 for s in self.sentences if not s.supported)

    def summary(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "sentences": len(self.sentences),
            "claims": self.claims + self.withheld[0],
            "unsupported": self.unsupported + self.withheld[1],
            "dropped": self.dropped,
            "refused": self.refused,
            "judged": self.judged,
        }


def _without(text: str, sentences: Sequence[SentenceSupport], keep: Sequence[bool]) -> Checked:
    """The text of the kept sentences, each after the separator that preceded it (a paragraph break or a
    line break among the dropped ones is kept), offsets renumbered."""
    pieces: list[str] = []
    kept: list[SentenceSupport] = []
    gap = ""  # the text since the last kept sentence
    cursor = 0
    for sentence, keep_it in zip(sentences, keep, strict=True):
        gap += text[cursor : sentence.start]
        cursor = sentence.end
        if not keep_it:
            gap += " "
            continue
        if pieces:
            pieces.append("\n\n" if "\n\n" in gap else "\n" if "\n" in gap else " ")
        gap = ""
        at = sum(map(len, pieces))
        pieces.append(sentence.text)
        kept.append(dataclasses.replace(sentence, start=at, end=at + len(sentence.text)))
    return Checked("".join(pieces), kept)


class RefinesSupport(Protocol):
    def refine(
        self, sentences: list[SentenceSupport], hits: Sequence[Hit], *, threshold: float, context: ChatRequest | None
    ) -> tuple[list[SentenceSupport], int]: ...


def verify_answer(
    verifier: Verifier, text: str, hits: Sequence[Hit], *, refusal: str, policy: Policy | None = None,
    judge: RefinesSupport | None = None, context: ChatRequest | None = None,
) -> Checked:  # fmt: skip
    """Check ``text`` against ``hits`` (then, with a ``judge``, let it decide the undecided sentences) and
    apply ``policy`` (the verifier's configured one by default); ``context``: the answer's request."""
    policy = policy or verifier.config.policy
    if text.strip() == refusal:  # the model's own refusal: nothing to back ("I don't know, but..." is checked)
        return Checked(text, [], policy)
    cleaned, sentences = verifier.check(text, hits)
    judged = 0
    if judge is not None:
        sentences, judged = judge.refine(sentences, hits, threshold=verifier.config.threshold, context=context)
    return dataclasses.replace(_apply(cleaned, sentences, policy, refusal), judged=judged)


def _apply(cleaned: str, sentences: list[SentenceSupport], policy: Policy, refusal: str) -> Checked:
    if policy == "flag":
        return Checked(cleaned, sentences, policy)
    claim_chars = sum(len(s.text) for s in sentences if s.claim)
    unsupported_chars = sum(len(s.text) for s in sentences if not s.supported)
    if policy == "refuse":
        if claim_chars and unsupported_chars * 2 >= claim_chars:
            withheld = (sum(s.claim for s in sentences), sum(not s.supported for s in sentences))
            return Checked(refusal, [], policy, refused=True, withheld=withheld)
        return Checked(cleaned, sentences, policy)
    if all(s.supported for s in sentences):
        return Checked(cleaned, sentences, policy)
    kept = _without(cleaned, sentences, [s.supported for s in sentences])
    dropped = len(sentences) - len(kept.sentences)
    if not any(s.claim for s in kept.sentences):
        return Checked(refusal, [], policy, dropped=dropped, refused=bool(sentences))
    return dataclasses.replace(kept, policy=policy, dropped=dropped)


class MarkerFilter:
    """Streamed text without the markers that name no retrieved passage, as ``check`` removes them.

    The text is cleaned as a whole (``normalize_markers``) and a tail that may still become a marker
    (``[``, ``[1``, ``[1, 2``) is held back, so ``[9]`` for five passages never reaches a streaming
    client, not even split over tokens or formed by removing another (``[[9]5]``).
    """

    _OPEN = re.compile(r"\s*\[[\d,\s]{0,16}$")

    def __init__(self, n_passages: int):
        self.n_passages = n_passages
        self._held = ""

    def feed(self, delta: str) -> str:
        text = normalize_markers(self._held + delta, self.n_passages)
        tail = self._OPEN.search(text)
        cut = tail.start() if tail else len(text.rstrip())  # white space goes with what follows it
        text, self._held = text[:cut], text[cut:]
        return text

    def flush(self) -> str:
        held, self._held = self._held, ""
        return held
