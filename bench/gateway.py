"""Gateway overhead: our wrapped call vs the bare openai SDK call, and cache-hit latency.

Run from the repository root: ``.venv/bin/python bench/gateway.py [--calls 1000]``.

Both paths call the same local OpenAI-compatible server (bench/servers.FixedAnswerModel on
127.0.0.1) through the same SDK; the wrapped path is the registry-built stack (hit
logger → cache (bypassed per request) → fallback → retry → attempt ledger → adapter)
writing to a real SQLite ledger. Calls are interleaved (bare, wrapped, bare, ...) so
the noise of a shared machine hits both alike; overhead is the difference of the
percentiles. Cache hits are then timed through the same stack with the cache on.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import openai  # noqa: E402
from servers import FixedAnswerModel  # noqa: E402

from app.llm.base import ChatRequest, GenerationParams, Message  # noqa: E402
from app.llm.cache import ResponseCache  # noqa: E402
from app.llm.costs import UsageLedger  # noqa: E402
from app.llm.registry import build_chat_model  # noqa: E402
from app.settings import LlmSettings  # noqa: E402


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ms(seconds: list[float]) -> str:
    v = [s * 1000 for s in seconds]
    return f"p50 {pct(v, 0.50):7.3f} ms   p95 {pct(v, 0.95):7.3f} ms   mean {statistics.fmean(v):7.3f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000)
    args = parser.parse_args()
    messages = [{"role": "system", "content": "Answer from the sources."}, {"role": "user", "content": "Leave days?"}]
    request = ChatRequest(
        messages=(Message("system", messages[0]["content"]), Message("user", messages[1]["content"])),
        params=GenerationParams(),
        prompt_id="answer@v1",
        request_id="bench",
        use_cache=False,
    )
    with FixedAnswerModel() as fake, tempfile.TemporaryDirectory() as tmp:
        bare = openai.OpenAI(base_url=fake.base_url, api_key="sk-bench", max_retries=0, timeout=10)
        ledger = UsageLedger(Path(tmp) / "usage.sqlite3")
        cache = ResponseCache(Path(tmp) / "cache.sqlite3", ttl_s=3600, max_entries=50_000)
        llm = LlmSettings(base_url=fake.base_url, api_key="sk-bench", model="gpt-4o-mini")  # type: ignore[call-arg]
        wrapped = build_chat_model(llm, ledger, cache)

        for _ in range(50):  # warm-up: connections, imports, SQLite pages
            bare.chat.completions.create(model="gpt-4o-mini", messages=messages, temperature=0, max_tokens=512)  # type: ignore[arg-type]
            wrapped.complete(request)

        t_bare: list[float] = []
        t_wrapped: list[float] = []
        for _ in range(args.calls):
            t0 = time.perf_counter()
            bare.chat.completions.create(model="gpt-4o-mini", messages=messages, temperature=0, max_tokens=512)  # type: ignore[arg-type]
            t1 = time.perf_counter()
            wrapped.complete(request)
            t2 = time.perf_counter()
            t_bare.append(t1 - t0)
            t_wrapped.append(t2 - t1)

        cached_request = ChatRequest(messages=request.messages, params=request.params, request_id="bench-hit")
        wrapped.complete(cached_request)  # prime
        t_hit: list[float] = []
        for _ in range(args.calls):
            t0 = time.perf_counter()
            completion = wrapped.complete(cached_request)
            t_hit.append(time.perf_counter() - t0)
            assert completion.cached
        served = fake.served

    print(f"{args.calls} calls each, interleaved, against a fixed-answer model on 127.0.0.1 ({served} requests served)")
    print(f"bare openai SDK        {ms(t_bare)}")
    print(f"gateway (cache bypass) {ms(t_wrapped)}")
    added50 = (pct(t_wrapped, 0.5) - pct(t_bare, 0.5)) * 1000
    added95 = (pct(t_wrapped, 0.95) - pct(t_bare, 0.95)) * 1000
    paired = statistics.median(w - b for w, b in zip(t_wrapped, t_bare, strict=True)) * 1000
    print(f"added by the gateway   p50 {added50:7.3f} ms   p95 {added95:7.3f} ms   (target: <= 1 ms at p50)")
    print(f"median of paired differences (wrapped - bare, same iteration): {paired:.3f} ms")
    print(f"cache hit              {ms(t_hit)}   (target: p95 <= 3 ms)")


if __name__ == "__main__":
    main()
