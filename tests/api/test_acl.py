"""Access control never leaks: random keys × random collections × 1,000 questions over HTTP.

Four collections hold distinctive facts. Each request comes from a random employee key
with random grants and names a random set of collections (sometimes none, sometimes one
it may not read). Whatever the path — retrieval, citations, answer text, the response
cache (questions repeat, so many answers are cache hits) — nothing from a collection
outside the key's grants may come back, and naming such a collection is a 403 that
reads the same whether or not the collection exists.
"""

from __future__ import annotations

import random
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.bootstrap import Components
from app.settings import Settings
from tests.servers import api_client

FACTS: dict[str, dict[str, str]] = {
    "hr": {
        "What is the top of the senior analyst salary band?": "The senior analyst salary band tops out at 91,500 EUR.",
        "When are salary bands reviewed?": "Salary bands are reviewed every April by the pay committee.",
        "Who approves a pay rise above ten percent?": "Rises above ten percent need the Chief People Officer.",
    },
    "eng": {
        "Which database does the billing service use?": "Billing stores invoices in PostgreSQL 16 on pg-billing-3.",
        "How often is the staging cluster rebuilt?": "Staging is rebuilt from scratch every Sunday at 02:00.",
        "What is the deploy freeze window?": "Deploys are frozen from 20 December to 3 January every year.",
    },
    "legal": {
        "How long do we keep signed contracts?": "Signed contracts are archived for eleven years in the vault.",
        "Who may sign a non-disclosure agreement?": "Only directors may sign a non-disclosure agreement.",
        "Which court handles our disputes?": "Disputes are settled by the district court of Rotterdam.",
    },
}
HANDBOOK_QUESTIONS = ["How many days of annual leave do I get?", "What is the hotel limit per night?"]
COLLECTIONS = ["handbook", *FACTS]


@pytest.fixture(scope="module")
def acl_data_dir(tmp_path_factory: pytest.TempPathFactory, handbook_data_dir: Path, embedder) -> Path:  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("acl")
    data_dir = root / "data"
    shutil.copytree(handbook_data_dir, data_dir)
    components = Components(Settings(_env_file=None, data_dir=data_dir), embedder=embedder)  # type: ignore[call-arg]
    for collection, facts in FACTS.items():
        folder = root / collection
        folder.mkdir()
        for i, sentence in enumerate(facts.values()):
            (folder / f"{collection}-{i}.md").write_text(f"# {collection} policy {i}\n\n{sentence}\n", encoding="utf-8")
        report = components.ingest_pipeline.ingest([folder], collection)
        assert report.added == 3 and not report.failed
    components.close()
    return data_dir


@pytest.fixture
def acl_components(acl_data_dir: Path, tmp_path: Path, embedder) -> Iterator[Components]:  # type: ignore[no-untyped-def]
    data_dir = tmp_path / "data"
    shutil.copytree(acl_data_dir, data_dir)
    settings = Settings(_env_file=None, data_dir=data_dir)  # type: ignore[call-arg]
    settings.limits.requests_per_minute = 0  # this test is about access, not rate limits
    components = Components(settings, embedder=embedder)
    yield components
    components.close()


def _leaks(body: dict, allowed: set[str]) -> list[str]:
    """Everything in a 200 answer that came from outside ``allowed``."""
    problems = [f"searched {c}" for c in body["collections"] if c not in allowed]
    problems += [
        f"retrieved {r['chunk_id']} of {r['collection']}" for r in body["retrieved"] if r["collection"] not in allowed
    ]
    retrieved_ids = {r["chunk_id"] for r in body["retrieved"]}
    problems += [f"cited {c['chunk_id']}" for c in body["citations"] if c["chunk_id"] not in retrieved_ids]
    for collection, facts in FACTS.items():
        if collection in allowed:
            continue
        for sentence in facts.values():
            for text in [body["answer"], *(c["text"] + c["snippet"] for c in body["citations"])]:
                if sentence[:40] in text:
                    problems.append(f"text of {collection}: {sentence[:40]!r}")
    return problems


@pytest.mark.slow
def test_random_keys_never_see_outside_their_collections(acl_components: Components) -> None:
    rng = random.Random(20261122)
    questions = HANDBOOK_QUESTIONS + [q for facts in FACTS.values() for q in facts]
    keys = []
    for i in range(8):
        grants = tuple(sorted(rng.sample(COLLECTIONS, rng.randint(1, 3))))
        token = acl_components.keys.create(f"employee-{i}", "employee", list(grants)).token
        keys.append((token, set(grants)))
    stats = {"ok": 0, "forbidden": 0, "cached": 0, "grounded": 0}
    with api_client(acl_components) as admin:
        for _ in range(1000):
            token, allowed = rng.choice(keys)
            question = rng.choice(questions)
            choice = rng.random()
            if choice < 0.35:
                requested: list[str] = []  # all the key may read
            elif choice < 0.8:
                requested = rng.sample(sorted(allowed), rng.randint(1, len(allowed)))
            else:  # includes a collection it may not read (or one that does not exist)
                outside = [c for c in [*COLLECTIONS, "finance"] if c not in allowed]
                requested = [*rng.sample(sorted(allowed), 1), rng.choice(outside)]
            r = admin.post(
                "/chat",
                json={"question": question, "collections": requested},
                headers={"Authorization": f"Bearer {token}"},
            )
            if set(requested) - allowed:
                assert r.status_code == 403, r.text
                error = r.json()["error"]
                assert error["code"] == "collection_forbidden" and "may not read" in error["message"]
                stats["forbidden"] += 1
                continue
            assert r.status_code == 200, r.text
            body = r.json()
            assert set(body["collections"]) == (set(requested) or allowed)
            assert not _leaks(body, allowed), (question, allowed, _leaks(body, allowed))
            stats["ok"] += 1
            stats["cached"] += body["cached"]
            stats["grounded"] += body["grounded"]
    # The run exercised every path: answers, refusals of access, cache hits, grounded answers.
    assert stats["forbidden"] > 100 and stats["ok"] > 600 and stats["cached"] > 100 and stats["grounded"] > 200, stats


def test_forbidden_and_missing_collections_look_the_same(acl_components: Components) -> None:
    with api_client(acl_components, role="employee", collections=("handbook",)) as employee:
        existing = employee.post("/chat", json={"question": "Salary bands?", "collection": "hr"})
        missing = employee.post("/chat", json={"question": "Salary bands?", "collection": "finance"})
        assert existing.status_code == missing.status_code == 403
        assert existing.json()["error"]["message"].replace("'hr'", "X") == missing.json()["error"]["message"].replace(
            "'finance'", "X"
        )
        names = [c["name"] for c in employee.get("/collections").json()]
        assert names == ["handbook"]
        models = [m["id"] for m in employee.get("/v1/models").json()["data"]]
        assert models == ["kb", "kb:handbook"]
        search = employee.post("/search", json={"query": "salary band"}).json()
        assert {hit["collection"] for hit in search["results"]} <= {"handbook"}


def test_a_cached_answer_is_not_served_across_scopes(acl_components: Components) -> None:
    """Same question, same passages, different grants: the second scope must not hit the first's cache entry."""
    question = {"question": "How many days of annual leave do I get?", "collection": "handbook"}
    with (
        api_client(acl_components, role="employee", collections=("handbook", "hr")) as wide,
        api_client(acl_components, role="employee", collections=("handbook",)) as narrow,
    ):
        first = wide.post("/chat", json={"question": question["question"]}).json()
        again = wide.post("/chat", json={"question": question["question"]}).json()
        assert first["cached"] is False and again["cached"] is True
        other = narrow.post("/chat", json={"question": question["question"]}).json()
        assert other["cached"] is False and other["collections"] == ["handbook"]
        assert narrow.post("/chat", json={"question": question["question"]}).json()["cached"] is True


def test_keys_are_checked(acl_components: Components) -> None:
    with api_client(acl_components, role="employee", collections=("eng",)) as employee:
        url = str(employee.base_url)
        assert (
            httpx.post(f"{url}/chat", json={"question": "Deploy freeze?"}).json()["error"]["code"] == "missing_api_key"
        )
        bad = httpx.post(
            f"{url}/chat", json={"question": "Deploy freeze?"}, headers={"Authorization": "Bearer kb_nope"}
        )
        assert bad.status_code == 401 and bad.json()["error"]["code"] == "invalid_api_key"
        ok = employee.post("/chat", json={"question": "What is the deploy freeze window?"})
        assert ok.status_code == 200 and ok.json()["collections"] == ["eng"]
        acl_components.keys.revoke("test-employee")
        revoked = employee.post("/chat", json={"question": "What is the deploy freeze window?"})
        assert revoked.status_code == 401 and revoked.json()["error"]["code"] == "invalid_api_key"
