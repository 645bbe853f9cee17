"""Property-based API fuzzing with schemathesis against our own OpenAPI spec: zero 5xx.

The real app runs under uvicorn over a private copy of the handbook data dir (the run
uploads and deletes: it must not touch shared fixtures), with the rate limit off so
every generated request reaches its handler. schemathesis reads ``/openapi.json`` and,
for every operation, sends valid and invalid requests (``not_a_server_error``: any 5xx
fails the operation, with the request to reproduce it). Once with an admin key (every
operation, /admin included) and once with an employee key that may read ``handbook``
only (so access control paths are fuzzed as well). Bounded and derandomized: the same
cases every run, well under a minute.
"""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok

from app.bootstrap import Components
from app.settings import LimitSettings, Settings
from tests.servers import serve_app

pytestmark = pytest.mark.slow  # ~10 s per key on two cores
MAX_EXAMPLES = 20  # per operation and key, shared by valid, invalid and the spec's example requests
FUZZ = settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)


class Api:
    def __init__(self, url: str, admin: str, employee: str):
        self.url = url
        self.admin = {"Authorization": f"Bearer {admin}"}
        self.employee = {"Authorization": f"Bearer {employee}"}


@pytest.fixture(scope="module")
def api(handbook_data_dir: Path, tmp_path_factory: pytest.TempPathFactory, embedder) -> Iterator[Api]:  # type: ignore[no-untyped-def]
    from app.api.main import create_app

    data_dir = tmp_path_factory.mktemp("fuzz") / "data"
    shutil.copytree(handbook_data_dir, data_dir)
    limits = LimitSettings(requests_per_minute=0)  # type: ignore[call-arg]
    components = Components(Settings(_env_file=None, data_dir=data_dir, limits=limits), embedder=embedder)  # type: ignore[call-arg]
    admin = components.keys.create("fuzz-admin", "admin", ["*"]).token
    employee = components.keys.create("fuzz-employee", "employee", ["handbook"]).token
    try:
        with serve_app(create_app(components.settings, components=components)) as url:
            yield Api(url, admin, employee)
    finally:
        components.close()


@pytest.fixture(scope="module")
def operations(api: Api) -> list[schemathesis.APIOperation]:
    loaded = schemathesis.openapi.from_url(f"{api.url}/openapi.json", timeout=30)
    found = []
    for result in loaded.get_all_operations():
        assert isinstance(result, Ok), result  # an operation schemathesis cannot read is a spec bug
        found.append(result.ok())
    assert len(found) >= 13, [op.label for op in found]
    return sorted(found, key=lambda op: op.method.lower() == "delete")  # deletes last: the rest keeps its data


def strategies(operation: schemathesis.APIOperation) -> st.SearchStrategy[schemathesis.Case]:
    """Generated valid and invalid requests, the spec's own examples (they name the real ``handbook``
    collection, so some requests reach retrieval and the model), and, for the collection routes that
    do not delete, requests about ``handbook`` itself."""
    found = [operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE)]
    found += operation.get_strategies_from_examples()
    if "{collection}" in operation.path and operation.method.lower() != "delete":
        found.append(operation.as_strategy(path_parameters={"collection": "handbook"}))
    return st.one_of(found)


def fuzz(api: Api, operation: schemathesis.APIOperation, headers: dict[str, str], seen: Counter[str]) -> None:
    """Requests for one operation; raises on the first 5xx (after Hypothesis shrinks it)."""

    @FUZZ
    @given(case=strategies(operation))
    def run(case: schemathesis.Case) -> None:
        response = case.call(base_url=api.url, headers=headers, timeout=60)
        seen[f"{operation.label} {response.status_code}"] += 1
        case.validate_response(response, checks=[not_a_server_error])

    run()


def fuzz_all(api: Api, operations: list[schemathesis.APIOperation], headers: dict[str, str]) -> Counter[str]:
    """Fuzz every operation; returns how often each "METHOD /path status" was answered."""
    seen: Counter[str] = Counter()
    failures = []
    for operation in operations:
        try:
            fuzz(api, operation, headers, seen)
        except Exception as exc:  # every operation is fuzzed; all their failures are reported together
            failures.append(f"{operation.label}: {exc}")
    assert not failures, "\n\n".join(failures)
    return seen


def test_no_server_error_with_an_admin_key(api: Api, operations: list[schemathesis.APIOperation]) -> None:
    seen = fuzz_all(api, operations, api.admin)
    # The run got past auth and validation into the handlers, so it tested something.
    assert sum(seen.values()) >= 150, seen
    for answered in ("POST /chat 200", "POST /v1/chat/completions 200", "POST /search 200", "GET /collections 200",
                     "POST /admin/collections/{collection}/documents 202",
                     "GET /admin/collections/{collection}/documents 200"):  # fmt: skip
        assert seen[answered] >= 1, (answered, seen)


def test_no_server_error_with_an_employee_key(api: Api, operations: list[schemathesis.APIOperation]) -> None:
    seen = fuzz_all(api, operations, api.employee)
    assert seen["POST /chat 200"] >= 1 and seen["POST /chat 403"] >= 1, seen  # handbook answered, others refused
    assert seen["GET /admin/collections 403"] >= 1, seen
