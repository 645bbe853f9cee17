"""Conversations: the turns of a chat, stored so a follow-up question can be understood.

Each conversation belongs to the API key that started it: another key asking with
the same id gets "not found", exactly as for an id that never existed, so ids cannot
be probed. Only the last few turns are read back (the condenser needs no more).

Conversations and their turns are tables of the shared SQL database (``app.db``), so a
follow-up may reach any replica. Appending a turn is one transaction: an UPDATE of the
conversation (owner check and lock) and an INSERT numbering the turn ``MAX(seq) + 1``.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, func, insert, literal, select, update
from sqlalchemy.exc import IntegrityError

from app.db import engine_for
from app.db.engine import transactional
from app.db.schema import conversations, turns
from app.errors import KbError

log = logging.getLogger(__name__)


class ConversationNotFoundError(KbError):
    code = "conversation_not_found"
    http_status = 404


@dataclass(frozen=True)
class Turn:
    """One exchange; ``standalone`` is the question as retrieval saw it (after condensing)."""

    question: str
    answer: str
    standalone: str = ""

    @property
    def resolved(self) -> str:
        return self.standalone or self.question


_APPEND_ATTEMPTS = 5


class ConversationStore:
    def __init__(self, db: Engine | str | Path):
        self._engine, self._owned = engine_for(db)
        self._transactional = transactional(self._engine)

    def start(self, owner: str) -> str:
        conversation_id = uuid.uuid4().hex
        now = time.time()
        with self._engine.begin() as conn:
            conn.execute(
                conversations.insert(), {"id": conversation_id, "owner": owner, "created_at": now, "updated_at": now}
            )
        return conversation_id

    @staticmethod
    def _not_found(conversation_id: str) -> ConversationNotFoundError:
        return ConversationNotFoundError(
            f"no conversation {conversation_id!r} for this API key; omit conversation_id to start a new one"
        )

    def _check_owner(self, conversation_id: str, owner: str) -> None:
        with self._engine.connect() as conn:
            found = conn.execute(select(conversations.c.owner).where(conversations.c.id == conversation_id)).first()
        if found is None or found[0] != owner:
            raise self._not_found(conversation_id)

    def history(self, conversation_id: str, owner: str, *, last: int = 6) -> list[Turn]:
        """The last ``last`` turns, oldest first; raises if the id is unknown or not the caller's."""
        self._check_owner(conversation_id, owner)
        query = (
            select(turns.c.question, turns.c.answer, turns.c.standalone)
            .where(turns.c.conversation_id == conversation_id)
            .order_by(turns.c.seq.desc())
            .limit(last)
        )
        with self._engine.connect() as conn:
            rows = conn.execute(query).all()
        return [Turn(r[0], r[1], r[2]) for r in reversed(rows)]

    def append(self, conversation_id: str, owner: str, turn: Turn, request_id: str) -> None:
        """Add a turn, numbered after the last one; raises if the id is unknown or not the caller's."""
        now = time.time()
        # The UPDATE comes first: it checks the owner and locks the conversation's row (PostgreSQL)
        # or the database (SQLite) until commit, so concurrent appends to one conversation queue up
        # and each INSERT numbers its turn after the committed ones.
        touch = (
            update(conversations)
            .where(conversations.c.id == conversation_id, conversations.c.owner == owner)
            .values(updated_at=now)
        )
        next_seq = (
            select(
                literal(conversation_id), func.coalesce(func.max(turns.c.seq), 0) + 1, literal(turn.question),
                literal(turn.resolved), literal(turn.answer), literal(request_id), literal(now, turns.c.ts.type),
            )
            .where(turns.c.conversation_id == conversation_id)
        )  # fmt: skip
        add = insert(turns).from_select(
            ["conversation_id", "seq", "question", "standalone", "answer", "request_id", "ts"], next_seq
        )
        for attempt in range(1, _APPEND_ATTEMPTS + 1):
            try:
                with self._transactional.begin() as conn:
                    if conn.execute(touch).rowcount == 0:
                        raise self._not_found(conversation_id)
                    conn.execute(add)
                return
            except IntegrityError:  # only if a database lets two appends interleave after all
                if attempt == _APPEND_ATTEMPTS:
                    raise
                log.info("conversation %s: turn number taken by a concurrent append, retrying", conversation_id)

    def close(self) -> None:
        if self._owned:
            self._engine.dispose()
