"""Build the long-lived objects from Settings, once per process.

Entry points (API lifespan, CLI commands) call this; everything below receives
plain objects. The embedding model is the expensive part (seconds to load), so it
is built lazily and only by the commands that need it. The shared SQL database (ledger,
audit log, keys, conversations) is one engine per Components, migrated when first opened.
"""

from __future__ import annotations

import logging
import time
from functools import cached_property
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from app.audit import AuditLog
from app.auth import KeyStore
from app.db import open_database
from app.db.writer import DeferredWriter
from app.errors import ConfigurationError
from app.feedback import FeedbackStore
from app.llm.base import ChatModel
from app.llm.cache import CacheBackend, ResponseCache
from app.llm.costs import UsageLedger
from app.llm.registry import build_chat_model
from app.rag.answer_cache import AnswerCache
from app.rag.condense import Condenser
from app.rag.conversation import ConversationStore
from app.rag.retrieval import Retriever
from app.rag.service import RagConfig, RagService
from app.settings import Settings
from app.sso.groups import GroupStore
from app.sso.provider import OidcClient
from app.sso.sessions import SessionStore
from app.tokens import get_encoding
from ingest.admin import CollectionAdmin
from ingest.chunking import Chunker
from ingest.limits import FileLimits
from ingest.pipeline import IngestPipeline
from ingest.repair import sweep_abandoned
from ingest.types import Progress
from prompts.registry import PromptRegistry
from prompts.selection import PromptSelector, PromptSplitError
from vectorstore.embedding_cache import CachedEmbedder, EmbeddingCache
from vectorstore.embeddings import Embedder, load_embedder
from vectorstore.lexical import LexicalIndex
from vectorstore.manifest import Manifest
from vectorstore.onnx_backend import OnnxEmbedder
from vectorstore.store import StoreUnavailable, VectorStore
from vectorstore.writers import one_writing_process

log = logging.getLogger(__name__)


class Components:
    """Lazily built, process-wide objects. A prebuilt embedder can be shared (tests, workers)."""

    def __init__(self, settings: Settings, *, embedder: Embedder | OnnxEmbedder | None = None):
        self.settings = settings
        if embedder is not None:
            self.__dict__["embedder"] = embedder

    @cached_property
    def store(self) -> VectorStore:
        v = self.settings.vectorstore
        if v.mode == "embedded":
            return VectorStore.embedded(self.settings.chroma_dir)
        try:
            return VectorStore.http(
                v.host, v.port, ssl=v.ssl, headers=v.http_headers(), tenant=v.tenant, database=v.database,
                timeout_s=v.timeout_s,
            )  # fmt: skip
        except StoreUnavailable as exc:
            raise ConfigurationError(
                f"{exc}. Start the Chroma server (chroma run --path DIR --host HOST --port PORT) or fix "
                "KB_VECTORSTORE__HOST/PORT/SSL/AUTH_TOKEN, or set KB_VECTORSTORE__MODE=embedded"
            ) from exc

    @cached_property
    def embedder(self) -> Embedder | OnnxEmbedder:
        s = self.settings.embedding
        return load_embedder(
            s.model,
            backend=s.backend,
            batch_size=s.batch_size,
            device=s.device,
            cache_dir=s.export_dir(),
        )

    @cached_property
    def manifest(self) -> Manifest:
        """Live document versions and writers' claims, in the shared database (every host reads the same)."""
        return Manifest(self.db)

    @cached_property
    def lexical(self) -> LexicalIndex:
        """The BM25 chunks, in the shared database: every host builds the same matrix from them."""
        r = self.settings.retrieval
        return LexicalIndex(
            self.db, cache_dir=self.settings.data_dir / "cache" / "bm25", inline_below=r.lexical_background_from,
            rebuild_pause_s=r.lexical_rebuild_pause_s,
        )  # fmt: skip

    @cached_property
    def retriever(self) -> Retriever:
        return Retriever(self.store, self.embedder, self.lexical, self.manifest, self.settings.retrieval)

    @cached_property
    def embedding_cache(self) -> EmbeddingCache:
        return EmbeddingCache(self.settings.data_dir / "embeddings.sqlite3")

    @cached_property
    def db(self) -> Engine:
        """One engine (and connection pool) for the four shared stores; the schema is brought to head here."""
        return open_database(self.settings)

    @cached_property
    def writer(self) -> DeferredWriter | None:
        """Commits cache hits' bookkeeping rows after the response, in batches (None when turned off)."""
        linger_ms = self.settings.database.defer_writes_ms
        return DeferredWriter(self.db, linger_s=linger_ms / 1000) if linger_ms > 0 else None

    @cached_property
    def ledger(self) -> UsageLedger:
        return UsageLedger(self.db, writer=self.writer)

    @cached_property
    def cache(self) -> CacheBackend | None:
        c = self.settings.cache
        if not c.enabled:
            return None
        if c.backend == "redis":
            from app.llm.cache_redis import RedisResponseCache  # redis-py only when configured

            return RedisResponseCache(c.redis_url, ttl_s=c.ttl_s, max_entries=c.max_entries)
        return ResponseCache(self.settings.cache_db, ttl_s=c.ttl_s, max_entries=c.max_entries)

    @cached_property
    def chat_model(self) -> ChatModel:
        return build_chat_model(self.settings.llm, self.ledger, self.cache)

    @cached_property
    def prompts(self) -> PromptRegistry:
        return PromptRegistry()

    @cached_property
    def prompt_selector(self) -> PromptSelector:
        """Validates the A/B split against the prompt files (at start-up, not mid-request)."""
        try:
            return PromptSelector(self.settings.prompts.split, self.prompts)
        except PromptSplitError as exc:
            raise ConfigurationError(f"KB_PROMPTS__SPLIT: {exc}") from None

    @cached_property
    def audit(self) -> AuditLog | None:
        a = self.settings.audit
        if not a.enabled:
            return None
        return AuditLog(self.db, store_text=a.store_text, retention_days=a.retention_days, writer=self.writer)

    @cached_property
    def answer_cache(self) -> AnswerCache | None:
        c = self.settings.cache
        return AnswerCache(c.answer_entries, c.ttl_s) if c.enabled and c.answer_entries > 0 else None

    @cached_property
    def keys(self) -> KeyStore:
        return KeyStore(self.db, cache_s=self.settings.auth.key_cache_s)

    @cached_property
    def feedback(self) -> FeedbackStore:
        n = self.settings.limits.max_feedback_comment_chars
        return FeedbackStore(self.db, max_comment_chars=n, max_correction_chars=4 * n)

    @cached_property
    def groups(self) -> GroupStore:
        """Identity-provider groups → collections (single sign-on); remembered as long as keys are."""
        return GroupStore(self.db, cache_s=self.settings.auth.key_cache_s)

    @cached_property
    def sessions(self) -> SessionStore:
        return SessionStore(
            self.db, ttl_s=self.settings.oidc.session_hours * 3600, cache_s=self.settings.auth.key_cache_s
        )

    @cached_property
    def oidc(self) -> OidcClient | None:
        """The OpenID provider's client, or None when single sign-on is not configured (KB_OIDC__ISSUER)."""
        s = self.settings.oidc
        if not s.enabled:
            return None
        if not s.client_id:
            raise ConfigurationError(
                "KB_OIDC__ISSUER is set but KB_OIDC__CLIENT_ID is not: register kb at the identity provider "
                "(docs/operations.md, single sign-on) and set both, or unset KB_OIDC__ISSUER"
            )
        return OidcClient(s)

    @cached_property
    def conversations(self) -> ConversationStore:
        return ConversationStore(self.db, writer=self.writer)

    @cached_property
    def rag(self) -> RagService:
        s = self.settings
        config = RagConfig.from_settings(s)
        self.prompts.get(config.default_prompt)  # fail at start-up, not on the first request
        get_encoding()  # load the token counter now: on first use it writes a cache file, which a full disk refuses
        condenser = Condenser(self.chat_model, self.prompts, s.prompts.condense)
        return RagService(
            self.store, self.embedder, self.chat_model, self.prompts, config, retriever=self.retriever,
            manifest=self.manifest, condenser=condenser, selector=self.prompt_selector,
            answer_cache=self.answer_cache, hit_ledger=self.ledger,
        )  # fmt: skip

    @cached_property
    def ingest_pipeline(self) -> IngestPipeline:
        return self.new_ingest_pipeline()

    def new_ingest_pipeline(self) -> IngestPipeline:
        """A pipeline of its own (a run keeps state: one per thread) over this process's shared stores and model."""
        c, lim = self.settings.chunking, self.settings.limits
        chunker = Chunker(c.chunk_tokens, c.overlap_tokens, c.encoding)
        return IngestPipeline(
            self.store,
            CachedEmbedder(self.embedder, self.embedding_cache),
            chunker,
            self.manifest,
            max_file_bytes=int(self.settings.limits.max_file_mb * 1024 * 1024),
            batch_chunks=self.settings.embedding.batch_size * 8,
            lexical=self.lexical,
            claim_ttl_s=self.settings.queue.claim_ttl_s,
            exclusive=(lambda: one_writing_process(self.settings.chroma_dir / ".kb-ingest.lock"))
            if self.settings.vectorstore.mode == "embedded"
            else None,
            limits=FileLimits(
                max_pages=lim.max_pages_per_file,
                max_text_chars=int(lim.max_text_mb_per_file * 1_000_000),
                max_chunks=lim.max_chunks_per_file,
                max_unzipped_bytes=int(lim.max_unzipped_mb * 1024 * 1024),
                max_compression_ratio=lim.max_compression_ratio,
            ),
        )

    @cached_property
    def admin(self) -> CollectionAdmin:
        return CollectionAdmin(self.store, self.manifest, self.lexical)

    def sweep_abandoned(self) -> None:
        """Sweep the chunks of ingestions killed with the last server, which never went live (ingest/repair.py).
        Never a reason not to start: the next ingestion or `kb collections repair` sweeps them too."""
        try:
            sweep_abandoned(self.store, self.manifest, self.lexical)
        except Exception:
            log.warning("could not sweep abandoned ingestion leftovers at start", exc_info=True)

    def ingest_folder(self, folder: Path, collection: str, progress: Progress | None = None) -> dict[str, Any]:
        """Ingest one folder (an admin upload) and return the JSON summary."""
        return self.ingest_pipeline.ingest([folder], collection, progress=progress).as_dict()

    def warm(self) -> None:
        """Open every collection's indexes before the first question (a server's start): the BM25 snapshots
        (mapped from the local cache, or built), and the vector index Chroma otherwise loads on the first query
        (seconds at a million chunks). A failure is logged; the first query tries again.

        The vector index first: a BM25 snapshot older than its collection starts a rebuild in a child process,
        which took the two cores from Chroma's load (restart to ready at 1M: 8-20 s, against 4-6 s alone)."""
        started = time.perf_counter()
        try:
            vector = self.embedder.embed_query("warm-up")
            for info in self.store.list_collections():
                self.store.query(info.name, vector, 1, with_records=False)
        except Exception:
            log.warning("could not open the vector index at start", exc_info=True)
        self.lexical.warm()
        log.info("indexes opened in %.2f s", time.perf_counter() - started)

    def close(self) -> None:
        stores = (
            "writer", "ledger", "cache", "manifest", "embedding_cache", "lexical", "keys", "conversations", "audit",
        )  # fmt: skip
        for name in stores:
            obj = self.__dict__.pop(name, None)  # reopened lazily if used again
            if obj is not None:
                obj.close()
        held = ("retriever", "chat_model", "rag", "ingest_pipeline", "admin", "groups", "sessions", "feedback")
        for name in held:  # they hold the closed stores
            self.__dict__.pop(name, None)
        engine = self.__dict__.pop("db", None)
        if engine is not None:
            engine.dispose()
