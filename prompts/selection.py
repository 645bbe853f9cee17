"""Which prompt version answers a request: an explicit choice, a weighted A/B split, or the default.

The split is deterministic in the request id: the id is hashed to a number in [0, 1)
and that number falls into one version's share of the cumulative weights. A retried
request (same id) therefore gets the same version, any process or worker picks the
same one without shared state, and over many ids the shares match the weights.
Weights are relative (``{v2: 9, v3: 1}`` equals ``{v2: 0.9, v3: 0.1}``).
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Mapping

from prompts.registry import PromptLookupError, PromptRegistry, parse_ref

log = logging.getLogger(__name__)


class PromptSplitError(ValueError):
    """A split names a version that is not of its prompt, does not exist, or has a weight <= 0."""


def normalize_split(name: str, weights: Mapping[str, float]) -> dict[str, float]:
    """``{"v2": 0.9, "answer@v3": 0.1}`` for ``answer`` → ``{"answer@v2": 0.9, "answer@v3": 0.1}``, checked."""
    out: dict[str, float] = {}
    for key, weight in weights.items():
        ref = key if "@" in key else f"{name}@{key}"
        try:
            ref_name, version = parse_ref(ref)
        except PromptLookupError as exc:
            raise PromptSplitError(f"prompt split for {name!r}: {exc}") from None
        if ref_name != name or version is None:
            raise PromptSplitError(
                f"prompt split for {name!r} may only name versions of it, like {name}@v2; got {key!r}"
            )
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not math.isfinite(weight) or weight <= 0:
            raise PromptSplitError(f"prompt split for {name!r}: weight of {key!r} must be a number > 0, got {weight!r}")
        canonical = f"{name}@v{version}"
        if canonical in out:
            raise PromptSplitError(f"prompt split for {name!r} names {canonical} twice")
        out[canonical] = float(weight)
    return out


def bucket(name: str, request_id: str) -> float:
    """A uniform number in [0, 1) fixed by the prompt name and the request id."""
    digest = hashlib.sha256(f"{name}\x00{request_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


class PromptSelector:
    """Pick ``name@vN`` per request; build once at start-up (validation happens here, not mid-request)."""

    def __init__(self, split: Mapping[str, Mapping[str, float]] | None = None, registry: PromptRegistry | None = None):
        self.split: dict[str, list[tuple[str, float]]] = {}
        for name, weights in (split or {}).items():
            normalized = normalize_split(name, weights)
            if not normalized:
                continue  # an empty split means "no split": the default answers
            if registry is not None:
                for ref in normalized:
                    try:
                        registry.get(ref)
                    except PromptLookupError as exc:
                        raise PromptSplitError(f"prompt split for {name!r}: {exc}") from None
            total = sum(normalized.values())
            cumulative, edges = 0.0, []
            for ref in sorted(normalized, key=lambda r: parse_ref(r)[1] or 0):  # stable whatever the config order
                cumulative += normalized[ref] / total
                edges.append((ref, cumulative))
            self.split[name] = edges
            log.info("prompt split for %s: %s", name, ", ".join(f"{r} {normalized[r] / total:.0%}" for r, _ in edges))

    def choose(self, name: str, default_ref: str, request_id: str, requested: str | None = None) -> str:
        """The request's own choice wins; else the split (by request id); else ``default_ref``."""
        if requested:
            return requested
        edges = self.split.get(name)
        if not edges:
            return default_ref
        point = bucket(name, request_id)
        for ref, upper in edges:
            if point < upper:
                return ref
        return edges[-1][0]  # float rounding left the last edge a hair under 1.0

    def shares(self, name: str) -> dict[str, float]:
        """The configured share of each version (for `kb prompts list`); {} without a split."""
        previous, out = 0.0, {}
        for ref, upper in self.split.get(name, []):
            out[ref] = upper - previous
            previous = upper
        return out
