"""Knowledge gaps: what employees asked that the documents did not answer, grouped into topics.

The questions come from the audit log over a period: answers that were refusals ("the documents
don't cover this", grounded=false), answers the support check found weakly backed (a sentence
flagged or dropped), and answers an employee marked down (app/feedback.py). Their embeddings (the
same model as the documents') are clustered with scikit-learn's agglomerative clustering (average
linkage on cosine distance, no fixed number of topics: a topic is questions closer than
``distance``). Each topic gets its size, a trend over the period, the three questions nearest its
centre, the nearest documents that do exist (what to update, or proof nothing does) and a short
label (its most distinctive words by TF-IDF). Question text is needed: with
``KB_AUDIT__STORE_TEXT`` off the report says how many questions it cannot show.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np
from sqlalchemy import Engine, or_, select

from app.db.schema import audit, feedback
from app.db.writer import flush_pending

MAX_QUESTIONS = 5000  # the newest, beyond this: clustering is quadratic in memory


class _Embeds(Protocol):
    def embed_documents(self, texts: list[str]) -> list[list[float]]: ...


class _Searches(Protocol):
    def query(self, name: str, embedding: Any, k: int) -> list[Any]: ...


@dataclass(frozen=True)
class GapQuestion:
    request_id: str
    ts: float
    question: str
    reason: str  # refused | weak | down
    collections: tuple[str, ...]


@dataclass
class Topic:
    label: str
    size: int
    trend: str  # new | rising | steady | falling
    first_half: int
    second_half: int
    reasons: dict[str, int]
    examples: list[str]
    documents: list[dict[str, Any]]
    by_day: dict[str, int] = field(default_factory=dict)
    request_ids: list[str] = field(default_factory=list)


@dataclass
class GapReport:
    since_ts: float
    until_ts: float
    collections: list[str] | None
    questions: int
    hidden: int  # questions whose text was not stored
    topics: list[Topic]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def gap_questions(
    engine: Engine, since_ts: float, collections: list[str] | None = None
) -> tuple[list[GapQuestion], int]:
    """The period's refused, weakly supported and marked-down questions, and how many had no stored text."""
    flush_pending(engine)
    wanted = set(collections or [])
    with engine.connect() as conn:
        downs = {r[0] for r in conn.execute(select(feedback.c.request_id).where(
            feedback.c.ts >= since_ts, feedback.c.verdict == "down"))}  # fmt: skip
        rows = conn.execute(
            select(audit.c.request_id, audit.c.ts, audit.c.question, audit.c.collections, audit.c.grounded,
                   audit.c.unsupported, audit.c.dropped)
            .where(audit.c.ts >= since_ts, or_(audit.c.tool.is_(None), audit.c.tool == "mcp.ask"))
            .order_by(audit.c.ts.desc()).limit(MAX_QUESTIONS * 4)
        ).all()  # fmt: skip
    found: list[GapQuestion] = []
    hidden = 0
    for rid, ts, question, cols, grounded, unsupported, dropped in rows:
        names = tuple(json.loads(cols))
        if wanted and not wanted.intersection(names):
            continue
        if rid in downs:
            reason = "down"
        elif not grounded:
            reason = "refused"
        elif (unsupported or 0) + (dropped or 0) > 0:
            reason = "weak"
        else:
            continue
        if not question:
            hidden += 1
            continue
        found.append(GapQuestion(rid, float(ts), question, reason, names))
    return found[:MAX_QUESTIONS][::-1], hidden


def find_topics(
    questions: list[GapQuestion],
    embedder: _Embeds,
    store: _Searches | None,
    *,
    since_ts: float,
    until_ts: float,
    distance: float = 0.6,
) -> list[Topic]:
    """Cluster the questions into topics, largest first."""
    from sklearn.cluster import AgglomerativeClustering
    from sklearn.feature_extraction.text import TfidfVectorizer

    if not questions:
        return []
    texts = [q.question for q in questions]
    vectors = np.asarray(embedder.embed_documents(texts), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True) + 1e-12
    if len(questions) == 1:
        labels = np.zeros(1, dtype=int)
    else:
        clustering = AgglomerativeClustering(
            n_clusters=None, distance_threshold=distance, metric="cosine", linkage="average"
        )
        labels = clustering.fit_predict(vectors)
    tfidf = TfidfVectorizer(stop_words="english", ngram_range=(1, 2), min_df=1, sublinear_tf=True)
    try:
        weights = tfidf.fit_transform(texts)
        terms = np.asarray(tfidf.get_feature_names_out())
    except ValueError:  # only stop words
        weights, terms = None, np.asarray([])
    middle = since_ts + (until_ts - since_ts) / 2
    topics: list[Topic] = []
    for label in sorted(set(labels.tolist())):
        members = np.flatnonzero(labels == label)
        centre = vectors[members].mean(axis=0)
        centre /= np.linalg.norm(centre) + 1e-12
        nearest = members[np.argsort(-(vectors[members] @ centre))]
        first = sum(1 for i in members if questions[i].ts < middle)
        second = len(members) - first
        topics.append(
            Topic(
                label=_label(weights, terms, members) or texts[nearest[0]][:60],
                size=len(members),
                trend=_trend(first, second),
                first_half=first,
                second_half=second,
                reasons=dict(Counter(questions[i].reason for i in members)),
                examples=list(dict.fromkeys(texts[i] for i in nearest))[:3],
                documents=_nearest_documents(store, centre, {c for i in members for c in questions[i].collections}),
                by_day=dict(Counter(time.strftime("%Y-%m-%d", time.gmtime(questions[i].ts)) for i in members)),
                request_ids=[questions[i].request_id for i in members],
            )
        )
    return sorted(topics, key=lambda t: (-t.size, t.label))


def _label(weights: Any, terms: np.ndarray, members: np.ndarray) -> str:
    if weights is None or not len(terms):
        return ""
    scores = np.asarray(weights[members].mean(axis=0)).ravel()
    best = [terms[i] for i in np.argsort(-scores)[:6] if scores[i] > 0]
    picked: list[str] = []
    for term in best:  # "foreign key" makes "foreign" and "key" redundant
        if not any(term in p or p in term for p in picked):
            picked.append(str(term))
        if len(picked) == 3:
            break
    return " / ".join(picked)


def _trend(first: int, second: int) -> str:
    if first == 0:
        return "new"
    if second >= 2 and second >= 1.5 * first:
        return "rising"
    if first >= 2 and first >= 1.5 * second:
        return "falling"
    return "steady"


def _nearest_documents(store: _Searches | None, centre: np.ndarray, collections: set[str]) -> list[dict[str, Any]]:
    """The closest passages that exist (what an admin would update), best first, one per document."""
    if store is None:
        return []
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for name in sorted(collections):
        try:
            hits = store.query(name, centre.tolist(), 5)
        except Exception:  # a collection deleted since: nothing near in it
            continue
        for hit in hits:
            source = str(hit.metadata.get("source", ""))
            key = (name, source)
            if source and key not in found:
                meta = hit.metadata
                found[key] = {"collection": name, "source": source, "page": meta.get("page"),
                              "heading": meta.get("heading"), "similarity": round(float(hit.score), 3)}  # fmt: skip
    return sorted(found.values(), key=lambda d: -d["similarity"])[:3]


def gap_report(
    engine: Engine,
    embedder: _Embeds,
    store: _Searches | None,
    *,
    since_ts: float,
    collections: list[str] | None = None,
    distance: float = 0.6,
) -> GapReport:
    until = time.time()
    questions, hidden = gap_questions(engine, since_ts, collections)
    topics = find_topics(questions, embedder, store, since_ts=since_ts, until_ts=until, distance=distance)
    return GapReport(since_ts, until, collections, len(questions), hidden, topics)
