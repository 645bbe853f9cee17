"""Sentence-support benchmark: does the verifier tell a supported sentence from an unsupported one?

Built from the shared datasets' answers (written by the manuals' authors) and their gold passages:
- positive: each answer sentence with its gold passage (in these datasets every answer sentence
  appears in its gold section, so positives are verbatim: paraphrases are measured separately by
  the flag rates of generative providers in the eval suites);
- hard negative: the sentence with the top BM25-ranked passage for that sentence from the same
  manual that is not its gold (skipped when the sentence appears verbatim in it);
- perturbed: the sentence with one number changed (the last digit of one number: 25 -> 27), one
  name replaced by another name of the same manual that its gold passage never mentions, or its
  polarity flipped ("is" -> "is not", "not" removed), each against its gold passage.
Prints ROC AUC (positives against each category's negatives, and all), the share of positives
passed and of each negative category flagged at the threshold, then the verification latency of
5-passage answers (extractive answers, and answers reworded so every pair takes the embedding path).

Usage: .venv/bin/python bench/support.py [--threshold 0.5] [--latency-only] [DATASET_DIR ...]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import bm25s
from sklearn.metrics import roc_auc_score

from app.llm.base import REFUSAL, SourcePassage
from app.llm.providers.extractive import ExtractiveChatModel
from app.rag import support as support_module
from app.rag.claims import analyse, answer_sentences, is_claim
from app.rag.support import Verifier
from app.rag.support_policy import verify_answer
from app.settings import Settings, SupportSettings
from vectorstore.embeddings import load_embedder
from vectorstore.store import Hit

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"
AUXILIARIES = re.compile(r"\b(is|are|was|were|can|will|should|must|does|do|has|have|may|could|would)\b")
NAME = re.compile(r"\b[A-Z][A-Za-z0-9_]+\b")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def manual_of(doc_id: str, row: dict[str, Any]) -> str:
    return str((row.get("metadata") or {}).get("file") or doc_id.split("#")[0])


def change_number(sentence: str, rng: random.Random) -> str | None:
    found = list(re.finditer(r"\d+", sentence))
    if not found:
        return None
    m = rng.choice(found)
    digits = m.group(0)
    changed = digits[:-1] + str((int(digits[-1]) + 2) % 10)
    return sentence[: m.start()] + changed + sentence[m.end() :]


def change_name(sentence: str, gold_words: frozenset[str], pool: list[str], rng: random.Random) -> str | None:
    names = [n for n in analyse(sentence).names if re.search(rf"\b{re.escape(n)}\b", sentence, re.I)]
    if not names:
        return None
    name = rng.choice(sorted(names))
    candidates = [p for p in pool if p.lower() not in gold_words and p.lower() != name]
    replacement = rng.choice(candidates)
    # The occurrence that made it a name: not the sentence's first word (a capital there says nothing).
    for m in re.finditer(rf"\b{re.escape(name)}\b", sentence, re.I):
        if m.start() > 0:
            return sentence[: m.start()] + replacement + sentence[m.end() :]
    return None


def flip_polarity(sentence: str) -> str | None:
    if re.search(r"\bnot\b", sentence):
        return re.sub(r"\bnot\s+", "", sentence, count=1)
    if "n't" in sentence:
        return sentence.replace("n't", "", 1)
    m = AUXILIARIES.search(sentence)
    return None if m is None else sentence[: m.end()] + " not" + sentence[m.end() :]


def build_pairs(dataset: Path, seed: int = 7) -> list[tuple[str, str, str]]:
    """(category, sentence, passage) pairs; category "positive" or the negative's kind."""
    rng = random.Random(seed)
    corpus = {row["_id"]: row for row in read_jsonl(dataset / "corpus.jsonl")}
    texts = {doc_id: row["text"] for doc_id, row in corpus.items()}
    by_manual: dict[str, list[str]] = defaultdict(list)
    for doc_id, row in corpus.items():
        by_manual[manual_of(doc_id, row)].append(doc_id)
    indexes = {}
    for manual, ids in by_manual.items():
        index = bm25s.BM25()
        index.index(bm25s.tokenize([texts[i] for i in ids], stopwords="en", show_progress=False), show_progress=False)
        indexes[manual] = (index, ids)
    pools = {m: sorted({n for i in ids for n in NAME.findall(texts[i]) if len(n) > 2}) for m, ids in by_manual.items()}
    pairs: list[tuple[str, str, str]] = []
    for row in read_jsonl(dataset / "answers.jsonl"):
        gold_ids = row["gold"] if isinstance(row["gold"], list) else json.loads(row["gold"].replace("'", '"'))
        gold = gold_ids[0]
        manual = manual_of(gold, corpus[gold])
        index, ids = indexes[manual]
        gold_words = analyse(texts[gold]).words
        for start, end in answer_sentences(row["answer"]):
            sentence = " ".join(row["answer"][start:end].split())
            if not is_claim(analyse(sentence), sentence):
                continue
            pairs.append(("positive", sentence, texts[gold]))
            ranked, _ = index.retrieve(bm25s.tokenize([sentence], stopwords="en", show_progress=False),
                                       k=min(5, len(ids)), show_progress=False)  # fmt: skip
            flat = " ".join(sentence.split())
            for i in ranked[0]:
                other = ids[int(i)]
                if other not in gold_ids:
                    if flat not in " ".join(texts[other].split()):
                        pairs.append(("hard_negative", sentence, texts[other]))
                    break
            for kind, changed in (
                ("number", change_number(sentence, rng)),
                ("name", change_name(sentence, gold_words, pools[manual], rng)),
                ("negation", flip_polarity(sentence)),
            ):
                if changed and changed != sentence:
                    pairs.append((kind, changed, texts[gold]))
    return pairs


def score_pairs(verifier: Verifier, pairs: list[tuple[str, str, str]]) -> list[float]:
    scores = []
    for _, sentence, passage in pairs:
        _, checked = verifier.check(sentence + " [1]", [Hit("p", passage, {"source": "bench"}, 1.0)])
        scores.append(min((s.score for s in checked if s.claim), default=1.0))
    return scores


def report(pairs: list[tuple[str, str, str]], scores: list[float], threshold: float) -> None:
    positives = [s for (kind, _, _), s in zip(pairs, scores, strict=True) if kind == "positive"]
    passed = sum(s >= threshold for s in positives) / len(positives)
    print(f"  positives {len(positives)}, passed at {threshold}: {passed:.3f}")
    negatives_all: list[float] = []
    for kind in ("hard_negative", "number", "name", "negation"):
        negatives = [s for (k, _, _), s in zip(pairs, scores, strict=True) if k == kind]
        negatives_all += negatives
        if negatives:
            auc = roc_auc_score([1] * len(positives) + [0] * len(negatives), positives + negatives)
            flagged = sum(s < threshold for s in negatives) / len(negatives)
            print(f"  {kind:13s} n={len(negatives):4d}  AUC {auc:.3f}  flagged {flagged:.3f}")
    auc = roc_auc_score([1] * len(positives) + [0] * len(negatives_all), positives + negatives_all)
    tp = sum(s >= threshold for s in positives)
    fp = sum(s >= threshold for s in negatives_all)
    precision = tp / (tp + fp) if tp + fp else 0.0
    print(f"  all           n={len(negatives_all):4d}  AUC {auc:.3f}  supported: precision {precision:.3f} "
          f"recall {tp / len(positives):.3f}")  # fmt: skip


def latency(verifier: Verifier, dataset: Path, force_embedding: bool) -> list[float]:
    """ms to verify a 5-passage answer (the policy included), per question of the dataset."""
    corpus = {row["_id"]: row["text"] for row in read_jsonl(dataset / "corpus.jsonl")}
    ids = list(corpus)
    index = bm25s.BM25()
    index.index(bm25s.tokenize([corpus[i] for i in ids], stopwords="en", show_progress=False), show_progress=False)
    extractive = ExtractiveChatModel()
    timings = []
    saved = support_module.UNDECIDED
    if force_embedding:
        support_module.UNDECIDED = (0.0, 2.0)
    try:
        for row in read_jsonl(dataset / "answers.jsonl"):
            ranked, _ = index.retrieve(bm25s.tokenize([row["question"]], stopwords="en", show_progress=False),
                                       k=5, show_progress=False)  # fmt: skip
            hits = [
                Hit(ids[int(i)], corpus[ids[int(i)]][:1200], {"source": "bench", "page": 1}, 1.0) for i in ranked[0]
            ]
            answer = extractive.answer_text(
                row["question"], tuple(SourcePassage(n, h.text) for n, h in enumerate(hits, 1))
            )
            if answer == REFUSAL:
                continue
            started = time.perf_counter()
            verify_answer(verifier, answer, hits, refusal=REFUSAL)
            timings.append((time.perf_counter() - started) * 1000)
    finally:
        support_module.UNDECIDED = saved
    return timings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("datasets", nargs="*", type=Path, default=[SHARED / "r-manuals", SHARED / "sqlite-docs"])
    parser.add_argument("--threshold", type=float, default=SupportSettings().threshold)
    parser.add_argument("--latency-only", action="store_true")
    args = parser.parse_args(argv)
    settings = Settings()
    e = settings.embedding
    embedder = load_embedder(e.model, backend=e.backend, batch_size=e.batch_size, cache_dir=e.export_dir())
    verifier = Verifier(embedder, SupportSettings(threshold=args.threshold))
    embedder.embed_documents(["warm up the model"] * 4)
    print(f"embedding backend {e.backend}, threshold {args.threshold}")
    if not args.latency_only:
        every_pair: list[tuple[str, str, str]] = []
        every_score: list[float] = []
        for dataset in args.datasets:
            pairs = build_pairs(dataset)
            scores = score_pairs(verifier, pairs)
            print(f"{dataset.name}:")
            report(pairs, scores, args.threshold)
            every_pair += pairs
            every_score += scores
        print("both datasets:")
        report(every_pair, every_score, args.threshold)
    for force in (False, True):
        timings = sorted(t for dataset in args.datasets for t in latency(verifier, dataset, force))
        label = "reworded: every undecided pair offered to the embedding model" if force else "extractive answers"
        p95 = timings[int(0.95 * (len(timings) - 1))]
        print(f"verify 5-passage answer ({label}): n={len(timings)} p50 {statistics.median(timings):.2f} ms "
              f"p95 {p95:.2f} ms")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
