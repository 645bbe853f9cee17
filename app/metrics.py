"""Every Prometheus metric of the process, in one place.

Metric objects are process-global by nature (prometheus-client's default registry),
so they live in one module rather than scattered through the code that records
them: the names and labels are the contract with dashboards, and keeping them
together keeps that contract visible. Labels are low-cardinality on purpose
(route templates, provider and model names, error codes), never request ids.
"""

from __future__ import annotations

import logging

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Histogram, generate_latest

log = logging.getLogger(__name__)

# Model calls take 0.1-30 s; cache hits and the extractive provider take milliseconds.
_LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

HTTP_REQUESTS = Counter("kb_http_requests_total", "HTTP requests served.", ["method", "route", "status"])
HTTP_LATENCY = Histogram(
    "kb_http_request_duration_seconds", "HTTP request latency.", ["method", "route"], buckets=_LATENCY_BUCKETS
)

LLM_CALLS = Counter(
    "kb_llm_calls_total", "Model call attempts (each retry and fallback counts).", ["provider", "model", "status"]
)
LLM_TOKENS = Counter("kb_llm_tokens_total", "Tokens used by model calls.", ["provider", "model", "kind"])
LLM_COST = Counter("kb_llm_cost_usd_total", "Cost of model calls in USD (priced models only).", ["provider", "model"])
LLM_LATENCY = Histogram(
    "kb_llm_call_duration_seconds",
    "Latency of one model call attempt.",
    ["provider", "model"],
    buckets=_LATENCY_BUCKETS,
)
PROVIDER_ERRORS = Counter(
    "kb_llm_provider_errors_total", "Failed model call attempts by error code.", ["provider", "code"]
)
LLM_RETRIES = Counter("kb_llm_retries_total", "Model calls repeated after a retryable error.", ["provider"])
LLM_FALLBACKS = Counter("kb_llm_fallbacks_total", "Calls handed to the next provider of the chain.", ["from_provider"])

CACHE_HITS = Counter("kb_cache_hits_total", "Response cache hits.")
CACHE_MISSES = Counter("kb_cache_misses_total", "Response cache misses (cacheable calls only).")
FEEDBACK = Counter(
    "kb_feedback_total",
    "Feedback given on answers, by verdict and the prompt version that answered.",
    ["verdict", "prompt"],
)
ANSWER_CACHE_HITS = Counter("kb_answer_cache_hits_total", "Answers served from the in-process answer cache.")
SUPPORT_SENTENCES = Counter(
    "kb_support_sentences_total",
    "Claims of freshly generated answers by support outcome (supported, unsupported, dropped, withheld).",
    ["policy", "outcome"],
)
SUPPORT_REFUSALS = Counter(
    "kb_support_refusals_total",
    "Answers replaced by the refusal for lack of support (refuse, or drop of every sentence).",
    ["policy"],
)


def render_latest() -> tuple[bytes, str]:
    """The exposition text of the default registry and its content type."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
