"""One error type for the whole product.

Library code raises a ``KbError`` subclass (all of them are here: the codes a client can see, in
one place); the API maps it to
``{"error": {"code", "message", "request_id"}}`` with ``http_status`` and the CLI
prints ``message`` and exits non-zero. Messages are written for the person who
sees them: say what went wrong and what to do, never include secrets.
"""

from __future__ import annotations


class KbError(Exception):
    """Base class: a stable machine-readable ``code``, an HTTP status and a human message."""

    code = "internal_error"
    http_status = 500
    headers: dict[str, str] | None = None  # extra HTTP headers (Retry-After, WWW-Authenticate)

    def __init__(self, message: str, *, code: str | None = None, http_status: int | None = None):
        """``code``: one of the class's more specific codes, its UPPER_CASE members (``InvalidRequestError.
        QUESTION_EMPTY``), never a string written at the raise: tests/services/test_errors.py checks."""
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if http_status is not None:
            self.http_status = http_status


class InvalidRequestError(KbError):
    code = "invalid_request"
    http_status = 422
    # its more specific codes:
    COLLECTION_MISSING = "collection_missing"
    DUPLICATE_FILENAME = "duplicate_filename"
    INVALID_BY = "invalid_by"
    INVALID_FILENAME = "invalid_filename"
    INVALID_SINCE = "invalid_since"
    MODE_INVALID = "mode_invalid"
    MODEL_NOT_FOUND = "model_not_found"
    NO_FILES = "no_files"
    PAGE_RANGE_INVALID = "page_range_invalid"
    POLICY_INVALID = "policy_invalid"
    PROMPT_NOT_ANSWER = "prompt_not_answer"
    QUESTION_EMPTY = "question_empty"
    QUESTION_MISSING = "question_missing"
    QUESTION_TOO_LONG = "question_too_long"
    RESOURCE_URI_INVALID = "resource_uri_invalid"
    TOP_K_OUT_OF_RANGE = "top_k_out_of_range"


class CollectionNotFoundError(KbError):
    code = "collection_not_found"
    http_status = 404
    # its more specific codes:
    NO_READABLE_COLLECTIONS = "no_readable_collections"


class InvalidCollectionNameError(KbError):
    code = "invalid_collection_name"
    http_status = 422


class PromptNotFoundError(KbError):
    code = "prompt_not_found"
    http_status = 404


class PromptError(KbError):
    """A prompt file is malformed or a render failed (a deployment problem, not the caller's)."""

    code = "prompt_invalid"
    http_status = 500
    # its more specific codes:
    PROMPT_RELEASE_REFUSED = "prompt_release_refused"


class IngestError(KbError):
    """One document could not be ingested; the batch goes on."""

    code = "ingest_failed"
    http_status = 422
    # its more specific codes:
    FILE_OVER_LIMIT = "file_over_limit"
    PATH_NOT_FOUND = "path_not_found"


class ProviderError(KbError):
    """The language model provider failed (network, auth, bad response).

    ``retryable`` says whether the same call may succeed if repeated (timeouts, 429,
    5xx, connection errors) so the retry wrapper needs no knowledge of any SDK;
    ``retry_after_s`` carries a server's Retry-After hint.
    """

    code = "provider_error"
    http_status = 502
    retryable = False
    retry_after_s: float | None = None
    # its more specific codes:
    LOCAL_MODEL_FAILED = "local_model_failed"
    PROVIDER_AUTH_FAILED = "provider_auth_failed"
    PROVIDER_BAD_RESPONSE = "provider_bad_response"


class ProviderTimeoutError(ProviderError):
    code = "provider_timeout"
    http_status = 504


class ProviderUnavailableError(ProviderError):
    code = "provider_unavailable"
    http_status = 503
    # its more specific codes:
    PROVIDER_RATE_LIMITED = "provider_rate_limited"
    PROVIDERS_EXHAUSTED = "providers_exhausted"


class ConfigurationError(KbError):
    code = "configuration_error"
    http_status = 500


class RateLimitedError(KbError):
    """Too many requests for one API key; ``Retry-After`` says when to try again."""

    code = "rate_limited"
    http_status = 429

    def __init__(self, message: str, retry_after_s: int):
        super().__init__(message)
        self.headers = {"Retry-After": str(retry_after_s)}


class AuthError(KbError):
    """No API key, or one that is unknown or revoked."""

    code = "unauthorized"
    http_status = 401
    headers = {"WWW-Authenticate": "Bearer"}  # noqa: RUF012  (read-only)
    # its more specific codes:
    INVALID_API_KEY = "invalid_api_key"
    MISSING_API_KEY = "missing_api_key"
    SESSION_EXPIRED = "session_expired"


class ForbiddenError(KbError):
    """A valid key asking for something its role or collection grants do not cover."""

    code = "forbidden"
    http_status = 403
    # its more specific codes:
    ADMIN_REQUIRED = "admin_required"
    COLLECTION_FORBIDDEN = "collection_forbidden"
    CROSS_SITE_REQUEST = "cross_site_request"
    FEEDBACK_FORBIDDEN = "feedback_forbidden"
    NO_GROUP_ACCESS = "no_group_access"


class KeyManagementError(KbError):
    """A key management command was used wrongly (unknown key, bad role)."""

    code = "invalid_key_request"
    http_status = 422


class BackupError(KbError):
    code = "backup_failed"
    http_status = 500


class ConversationNotFoundError(KbError):
    code = "conversation_not_found"
    http_status = 404


class JobNotFoundError(KbError):
    code = "job_not_found"
    http_status = 404


class UploadTooLargeError(KbError):
    code = "file_too_large"
    http_status = 413


class SchemaOutdatedError(KbError):
    """The database schema is not the one this kb version needs (and it was told not to migrate)."""

    code = "database_schema_outdated"
    http_status = 503


class AuditError(KbError):
    """The audit log could not be written (disk full, read-only file, corrupt database)."""

    code = "audit_failed"
    http_status = 500


class DocumentNotFoundError(KbError):
    code = "document_not_found"
    http_status = 404


class EvalError(KbError):
    """A suite, gate or results file is unusable, or a run cannot start."""

    code = "eval_invalid"
    http_status = 422
    # its more specific codes:
    EVAL_COLLECTION_MISSING = "eval_collection_missing"
    EVAL_DOCUMENTS_MISSING = "eval_documents_missing"
    EVAL_GATE_INVALID = "eval_gate_invalid"
    EVAL_GATE_NOT_FOUND = "eval_gate_not_found"
    EVAL_NO_CASES = "eval_no_cases"
    EVAL_RESULTS_INVALID = "eval_results_invalid"
    EVAL_RESULTS_NOT_FOUND = "eval_results_not_found"
    EVAL_SUITE_NOT_FOUND = "eval_suite_not_found"
    EVAL_USAGE = "eval_usage"
    EVAL_VARIANT_FAILED = "eval_variant_failed"


class DocumentBusyError(KbError):
    """Another ingestion is writing the document right now (its claim in the manifest)."""

    code = "document_busy"
    http_status = 409


class WorkerStoppedError(KbError):
    """`kb worker` stopped on its own, not by a signal (its heartbeat to the database failed): exit non-zero."""

    code = "worker_stopped"
    http_status = 503


class TokenError(AuthError):
    """An identity provider's access token that kb does not accept (expired, another audience, a bad signature)."""

    code = "invalid_token"
    headers = {"WWW-Authenticate": 'Bearer error="invalid_token"'}  # noqa: RUF012  (read-only)
    # its more specific codes:
    SIGN_IN_REFUSED = "sign_in_refused"
    TOKEN_EXPIRED = "token_expired"


class IdentityProviderError(KbError):
    """The OpenID provider cannot be reached or answers nonsense: sign-in and new token keys wait for it."""

    code = "identity_provider_unavailable"
    http_status = 503


class SingleSignOnError(KbError):
    """A web sign-in that cannot go on: SSO not configured, or a callback that is not ours or was already used."""

    code = "sign_in_failed"
    http_status = 400


class PayloadTooLargeError(KbError):
    """A field of a request over its size limit (a feedback comment, a corrected answer)."""

    code = "payload_too_large"
    http_status = 413
    # its more specific codes:
    COMMENT_TOO_LONG = "comment_too_long"
    CORRECTION_TOO_LONG = "correction_too_long"


class AnswerNotFoundError(KbError):
    """Feedback names a request id kb has no answer for."""

    code = "answer_not_found"
    http_status = 404


class UploadNotStoredError(KbError):
    """The server could not keep an uploaded file (a full or read-only data dir): nothing of the upload is kept."""

    code = "upload_not_stored"
    http_status = 500


class CacheUnavailableError(KbError):
    """The shared response cache (Redis) refused an operation that was asked for (clearing it)."""

    code = "cache_unavailable"
    http_status = 500


class GroupNotFoundError(KbError):
    code = "group_not_found"
    http_status = 404


class McpStartingError(KbError):
    """An MCP request came before the MCP server finished starting beside the API (it imports its SDK then)."""

    code = "mcp_starting"
    http_status = 503
    headers = {"Retry-After": "5"}  # noqa: RUF012  (read-only)
