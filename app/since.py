"""``--since`` values as a point in time: a window back from now (``1h``, ``7d``) or an ISO date.

Windows are read by ``app.llm.usage_report.parse_since`` (the parser ``kb usage`` and
``GET /admin/usage`` use), so the forms accepted stay the same everywhere; dates
and times without an offset are taken as UTC, like the timestamps the stores keep.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from app.errors import InvalidRequestError
from app.llm.usage_report import parse_since


def since_timestamp(text: str, *, now: float | None = None) -> float:
    """'30m', '1d', '2w' → now minus that; '2026-11-20' or '2026-11-20T08:00[+01:00]' → that instant (epoch s)."""
    now = time.time() if now is None else now
    try:
        return now - parse_since(text)
    except InvalidRequestError:
        pass
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidRequestError(
            f"cannot read since={text!r}: use a window like 30m, 1h, 1d, 7d or an ISO date like 2026-11-20 "
            "or 2026-11-20T08:00 (UTC unless an offset is given)",
            code=InvalidRequestError.INVALID_SINCE,
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()
