"""Conversations: the turns of a chat, stored so a follow-up question can be understood.

Each conversation belongs to the API key that started it: another key asking with
the same id gets "not found", exactly as for an id that never existed, so ids cannot
be probed. Only the last few turns are read back (the condenser needs no more).
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from app.errors import KbError
from app.llm.sqlite_util import SqliteDb

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS turns (
    conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    question TEXT NOT NULL,
    standalone TEXT NOT NULL,
    answer TEXT NOT NULL,
    request_id TEXT NOT NULL,
    ts REAL NOT NULL,
    PRIMARY KEY (conversation_id, seq)
);
"""


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


class ConversationStore:
    def __init__(self, path: str | Path):
        self._db = SqliteDb(path, _SCHEMA)

    def start(self, owner: str) -> str:
        conversation_id = uuid.uuid4().hex
        now = time.time()
        with self._db.tx() as conn:
            conn.execute(
                "INSERT INTO conversations (id, owner, created_at, updated_at) VALUES (?, ?, ?, ?)",
                (conversation_id, owner, now, now),
            )
        return conversation_id

    def _check_owner(self, conversation_id: str, owner: str) -> None:
        with self._db.tx() as conn:
            row = conn.execute("SELECT owner FROM conversations WHERE id = ?", (conversation_id,)).fetchone()
        if row is None or row[0] != owner:
            raise ConversationNotFoundError(
                f"no conversation {conversation_id!r} for this API key; omit conversation_id to start a new one"
            )

    def history(self, conversation_id: str, owner: str, *, last: int = 6) -> list[Turn]:
        """The last ``last`` turns, oldest first; raises if the id is unknown or not the caller's."""
        self._check_owner(conversation_id, owner)
        with self._db.tx() as conn:
            rows = conn.execute(
                "SELECT question, answer, standalone FROM turns WHERE conversation_id = ? ORDER BY seq DESC LIMIT ?",
                (conversation_id, last),
            ).fetchall()
        return [Turn(r[0], r[1], r[2]) for r in reversed(rows)]

    def append(self, conversation_id: str, owner: str, turn: Turn, request_id: str) -> None:
        self._check_owner(conversation_id, owner)
        now = time.time()
        with self._db.tx() as conn:
            seq = conn.execute(
                "SELECT COALESCE(MAX(seq), 0) + 1 FROM turns WHERE conversation_id = ?", (conversation_id,)
            ).fetchone()[0]
            conn.execute(
                "INSERT INTO turns (conversation_id, seq, question, standalone, answer, request_id, ts) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (conversation_id, seq, turn.question, turn.resolved, turn.answer, request_id, now),
            )
            conn.execute("UPDATE conversations SET updated_at = ? WHERE id = ?", (now, conversation_id))

    def close(self) -> None:
        self._db.close()
