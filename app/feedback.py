"""Feedback on answers: the employee who received an answer says whether it helped.

A thumbs up or down, an optional comment and an optional corrected answer, given by request id
(``POST /feedback``). Only the credential that received the answer may judge it (its key id, or
``sso:<subject>`` for a signed-in user, is on the answer's audit row), or an admin. The row copies
what it judges from the audit row (question, prompt version, provider/model, collections, cited
chunks, grounded), so the down-votes of a prompt version can be counted and turned into eval cases
without the audit log, and with ``KB_AUDIT__STORE_TEXT`` off the question text stays out here too.
A second verdict on the same answer by the same credential replaces the first.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import Engine, func, insert, select, update

from app.auth import Principal
from app.db.schema import audit, feedback
from app.db.writer import flush_pending
from app.errors import AnswerNotFoundError, ForbiddenError, InvalidRequestError, PayloadTooLargeError

log = logging.getLogger(__name__)

Verdict = Literal["up", "down"]
VERDICTS: tuple[str, ...] = ("up", "down")


@dataclass(frozen=True)
class FeedbackRecord:
    id: int
    request_id: str
    verdict: Verdict
    prompt: str
    replaced: bool  # an earlier verdict of the same credential on this answer was replaced


class FeedbackStore:
    def __init__(self, engine: Engine, *, max_comment_chars: int = 2000, max_correction_chars: int = 8000):
        self._engine = engine
        self.max_comment_chars = max_comment_chars
        self.max_correction_chars = max_correction_chars

    def give(
        self,
        who: Principal,
        request_id: str,
        verdict: str,
        comment: str | None = None,
        correction: str | None = None,
        *,
        out_of_scope: bool = False,
    ) -> FeedbackRecord:
        """``out_of_scope`` (admins only): the question is not one kb should answer from its documents; an eval
        case made from it expects a refusal."""
        request_id = request_id.removeprefix("chatcmpl-")  # an OpenAI-compatible response's id names it too
        if out_of_scope and not who.is_admin:
            raise ForbiddenError("only an admin may mark a question out of scope", code=ForbiddenError.ADMIN_REQUIRED)
        if verdict not in VERDICTS:
            raise InvalidRequestError(f"verdict must be one of {', '.join(VERDICTS)}, not {verdict!r}")
        comment, correction = (comment or "").strip() or None, (correction or "").strip() or None
        for what, text, limit, code in (
            ("comment", comment, self.max_comment_chars, PayloadTooLargeError.COMMENT_TOO_LONG),
            ("correction", correction, self.max_correction_chars, PayloadTooLargeError.CORRECTION_TOO_LONG),
        ):
            if text is not None and len(text) > limit:
                raise PayloadTooLargeError(f"the {what} is {len(text)} characters; the limit is {limit}", code=code)
        flush_pending(self._engine)  # a cache hit's audit row may still be in the deferred writer
        with self._engine.begin() as conn:
            answer = conn.execute(
                select(audit.c.key_id, audit.c.question, audit.c.question_sha256, audit.c.prompt, audit.c.provider,
                       audit.c.model, audit.c.collections, audit.c.cited, audit.c.grounded)
                .where(audit.c.request_id == request_id).order_by(audit.c.id.desc()).limit(1)
            ).first()  # fmt: skip
            if answer is None:
                raise AnswerNotFoundError(
                    f"no answer with request id {request_id!r} (answers are found by the request_id kb returned "
                    "with them, while the audit log keeps them)"
                )
            if not who.is_admin and answer.key_id != who.key_id:
                raise ForbiddenError(
                    "only the credential that received this answer (or an admin) may give feedback on it",
                    code=ForbiddenError.FEEDBACK_FORBIDDEN,
                )
            values: dict[str, Any] = {
                "ts": time.time(), "key_id": who.key_id, "key_name": who.name, "verdict": verdict,
                "comment": comment, "correction": correction, "question": answer.question,
                "question_sha256": answer.question_sha256, "prompt": answer.prompt, "provider": answer.provider,
                "model": answer.model, "collections": answer.collections, "cited": answer.cited,
                "grounded": answer.grounded, "out_of_scope": int(out_of_scope),
            }  # fmt: skip
            mine = (feedback.c.request_id == request_id) & (feedback.c.key_id == who.key_id)
            earlier = conn.execute(select(feedback.c.id).where(mine).limit(1)).scalar()
            if earlier is not None:
                conn.execute(update(feedback).where(feedback.c.id == earlier).values(**values))
                row_id = int(earlier)
            else:
                added = conn.execute(insert(feedback).values(request_id=request_id, **values))
                row_id = int(added.inserted_primary_key[0])  # type: ignore[index]
        log.info("feedback %s on %s (%s) by %s", verdict, request_id, answer.prompt, who.name)
        return FeedbackRecord(row_id, request_id, verdict, answer.prompt, earlier is not None)  # type: ignore[arg-type]

    def rows(self, since_ts: float = 0.0) -> list[dict[str, Any]]:
        """Feedback at or after ``since_ts``, oldest first, JSON lists decoded."""
        query = select(feedback).where(feedback.c.ts >= since_ts).order_by(feedback.c.ts, feedback.c.id)
        with self._engine.connect() as conn:
            found = [dict(r) for r in conn.execute(query).mappings()]
        for row in found:
            row["collections"], row["cited"] = json.loads(row["collections"]), json.loads(row["cited"])
            row["grounded"], row["out_of_scope"] = bool(row["grounded"]), bool(row["out_of_scope"])
        return found

    def rates(self, since_ts: float = 0.0) -> list[dict[str, Any]]:
        """Up and down counts per prompt version (how users judge an A/B split), most judged first."""
        query = (
            select(feedback.c.prompt, feedback.c.verdict, func.count())
            .where(feedback.c.ts >= since_ts)
            .group_by(feedback.c.prompt, feedback.c.verdict)
        )
        with self._engine.connect() as conn:
            counts = conn.execute(query).all()
        by_prompt: dict[str, dict[str, int]] = {}
        for prompt, verdict, n in counts:
            by_prompt.setdefault(prompt, {"up": 0, "down": 0})[verdict] = int(n)
        out: list[dict[str, Any]] = []
        for prompt, c in by_prompt.items():
            total = c["up"] + c["down"]
            out.append({"prompt": prompt, **c, "total": total, "down_rate": c["down"] / total if total else 0.0})
        return sorted(out, key=lambda r: (-r["total"], r["prompt"]))
