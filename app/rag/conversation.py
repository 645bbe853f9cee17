"""Conversations: the turns of a chat, stored so a follow-up question can be understood.

Each conversation belongs to the API key that started it: another key asking with
the same id gets "not found", exactly as for an id that never existed, so ids cannot
be probed. Only the last few turns are read back (the condenser needs no more).

Conversations and their turns are tables of the shared SQL database (``app.db``), so a
follow-up may reach any replica. Appending a turn is one transaction: an UPDATE of the
conversation (owner check and lock) and an INSERT numbering the turn ``MAX(seq) + 1``.
Both statements are built once, with bound parameters: building them per call cost ~0.4 ms,
four times what SQLite spends executing them, on every answered request.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Double, Engine, Text, bindparam, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from app.db import engine_for
from app.db.engine import transactional
from app.db.schema import conversations, turns
from app.db.writer import DeferredWriter, Row, flush_pending
from app.errors import ConversationNotFoundError

log = logging.getLogger(__name__)


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
_NEW = conversations.insert()
_FIRST_TURN = turns.insert()
_OWNER = select(conversations.c.owner).where(conversations.c.id == bindparam("cid"))

# UPDATE first: it checks the owner and locks the conversation's row (PostgreSQL) or the
# database (SQLite) until commit, so concurrent appends to one conversation queue up and each
# INSERT numbers its turn after the committed ones.
_TOUCH = (
    update(conversations)
    .where(conversations.c.id == bindparam("cid"), conversations.c.owner == bindparam("by"))
    .values(updated_at=bindparam("now", type_=Double()))
)
_ADD_TURN = insert(turns).from_select(
    ["conversation_id", "seq", "question", "standalone", "answer", "request_id", "ts"],
    select(
        bindparam("cid", type_=Text()), func.coalesce(func.max(turns.c.seq), 0) + 1,
        bindparam("question", type_=Text()), bindparam("standalone", type_=Text()),
        bindparam("answer", type_=Text()), bindparam("request_id", type_=Text()), bindparam("now", type_=Double()),
    ).where(turns.c.conversation_id == bindparam("cid")),
)  # fmt: skip


class ConversationStore:
    def __init__(self, db: Engine | str | Path, *, writer: DeferredWriter | None = None):
        self._engine, self._owned = engine_for(db)
        self._transactional = transactional(self._engine)
        self.writer = writer  # for ``defer=True`` starts (a cache hit's conversation)

    def start(self, owner: str, first: tuple[Turn, str] | None = None, *, defer: bool = False) -> str:
        """A new conversation of ``owner``'s; with ``first`` (a turn and its request id), already holding it.

        Starting with the first turn is one transaction instead of two (every answer without a
        ``conversation_id`` starts a conversation). ``defer``: the deferred writer commits both rows
        after the response (a lookup of the id flushes it first, see ``_check_owner``)."""
        conversation_id = uuid.uuid4().hex
        now = time.time()
        rows: list[Row] = [(_NEW, {"id": conversation_id, "owner": owner, "created_at": now, "updated_at": now})]
        if first is not None:
            turn, request_id = first
            rows.append(
                (_FIRST_TURN, {"conversation_id": conversation_id, "seq": 1, "question": turn.question,
                               "standalone": turn.resolved, "answer": turn.answer, "request_id": request_id,
                               "ts": now})
            )  # fmt: skip
        if defer and self.writer is not None:
            self.writer.submit(rows)
            return conversation_id
        with (self._transactional if len(rows) > 1 else self._engine).begin() as conn:
            for statement, params in rows:
                conn.execute(statement, params)
        return conversation_id

    @staticmethod
    def _not_found(conversation_id: str) -> ConversationNotFoundError:
        return ConversationNotFoundError(
            f"no conversation {conversation_id!r} for this API key; omit conversation_id to start a new one"
        )

    def _owner(self, conversation_id: str) -> str | None:
        with self._engine.connect() as conn:
            found = conn.execute(_OWNER, {"cid": conversation_id}).first()
        return None if found is None else str(found[0])

    def _check_owner(self, conversation_id: str, owner: str) -> None:
        """Raises unless the conversation is ``owner``'s. An id not (yet) in the database may be a
        conversation whose rows a deferred writer still holds: this process's are flushed at once;
        another replica's are waited for once (two of its lingers) before the 404."""
        found = self._owner(conversation_id)
        if found is None:
            flush_pending(self._engine)
            found = self._owner(conversation_id)
        if found is None and self.writer is not None:
            time.sleep(2 * self.writer.linger_s)
            found = self._owner(conversation_id)
        if found != owner:
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
        params = {
            "cid": conversation_id, "by": owner, "now": time.time(), "question": turn.question,
            "standalone": turn.resolved, "answer": turn.answer, "request_id": request_id,
        }  # fmt: skip
        for attempt in range(1, _APPEND_ATTEMPTS + 1):
            try:
                with self._transactional.begin() as conn:
                    if conn.execute(_TOUCH, params).rowcount == 0:
                        raise self._not_found(conversation_id)
                    conn.execute(_ADD_TURN, params)
                return
            except IntegrityError:  # only if a database lets two appends interleave after all
                if attempt == _APPEND_ATTEMPTS:
                    raise
                log.info("conversation %s: turn number taken by a concurrent append, retrying", conversation_id)

    def close(self) -> None:
        if self._owned:
            self._engine.dispose()
