"""POST /search over real HTTP and ``kb search`` as a subprocess, on the ingested sample handbook."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.bootstrap import Components
from tests.cli.test_cli import run_kb
from tests.servers import api_client


@pytest.fixture
def client(handbook_components: Components) -> Iterator[httpx.Client]:
    with api_client(handbook_components) as api:
        yield api


def test_search_returns_ranked_chunks_with_scores_per_retriever(client: httpx.Client) -> None:
    body = {"query": "How much can I spend on a hotel per night?", "collection": "handbook", "top_k": 3}
    r = client.post("/search", json=body, timeout=60)
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["mode"] == "hybrid" and 1 <= len(data["results"]) <= 3
    top = data["results"][0]
    assert top["source"] == "expenses.html" and "180 EUR" in top["text"] and top["heading"]
    assert top["scores"]["dense"] > 0.4 and top["scores"]["lexical"] > 0 and top["ranks"] == {"dense": 1, "lexical": 1}
    scores = [hit["score"] for hit in data["results"]]
    assert scores == sorted(scores, reverse=True)

    lexical = client.post("/search", json={**body, "mode": "lexical"}, timeout=60).json()
    assert lexical["mode"] == "lexical" and lexical["results"][0]["scores"]["dense"] is None
    filtered = client.post(
        "/search",
        json={"query": "leave", "collections": ["handbook"], "mode": "dense", "page_min": 2, "page_max": 2},
        timeout=60,
    ).json()
    assert filtered["results"] and {hit["page"] for hit in filtered["results"]} == {2}


@pytest.mark.parametrize(
    ("payload", "status", "code"),
    [
        ({"query": "leave", "collection": "nope"}, 404, "collection_not_found"),
        ({"query": "leave", "collections": []}, 200, None),  # none named: every collection the key may read
        ({"query": "leave", "collection": "handbook", "mode": "fuzzy"}, 422, "invalid_request"),
        ({"query": "leave", "collection": "handbook", "top_k": 500}, 422, "top_k_out_of_range"),
        ({"query": "leave", "collection": "handbook", "page_min": 4, "page_max": 2}, 422, "page_range_invalid"),
    ],
)
def test_bad_searches_get_json_errors(client: httpx.Client, payload: dict, status: int, code: str | None) -> None:
    r = client.post("/search", json=payload, timeout=60)
    assert r.status_code == status, r.text
    if code is None:
        assert {hit["collection"] for hit in r.json()["results"]} == {"handbook"}
    else:
        assert r.json()["error"]["code"] == code


@pytest.mark.slow
def test_kb_search_prints_json(handbook_data_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(handbook_data_dir, data)
    done = run_kb(["search", "guest Wi-Fi network", "--collection", "handbook", "-k", "2", "--json"], data)
    assert done.returncode == 0, done.stderr
    hits = json.loads(done.stdout)
    assert len(hits) <= 2 and hits[0]["source"] == "office-faq.txt" and hits[0]["scores"]["lexical"] > 0
