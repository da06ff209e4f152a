"""Assistant settings, read once from the environment (``OPENAI_*``, ``WEFT_AI_*``).

The API key is kept out of ``repr`` (and so out of logs and tracebacks) and never sent to a
client: only the server talks to the provider.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from collab.settings import SettingsError, env_float, env_int

DEFAULT_MODEL = "gpt-4o-mini"

HOW_TO_CONFIGURE = (
    "the assistant is not configured: set OPENAI_API_KEY on the server (for a local "
    "OpenAI-compatible server such as vLLM, llama.cpp or Ollama, any non-empty value, with "
    "OPENAI_BASE_URL pointing at it, e.g. http://127.0.0.1:8080/v1) and WEFT_AI_MODEL to the "
    "model's name, then restart the server"
)


@dataclass(frozen=True)
class AssistantSettings:
    """
    >>> AssistantSettings.from_env({"OPENAI_API_KEY": "sk-...", "WEFT_AI_MODEL": "gpt-4o"})
    """

    api_key: str | None = field(default=None, repr=False)
    base_url: str | None = None
    model: str = DEFAULT_MODEL
    # Prompt budget (system + user message), counted with the model's tokenizer.
    context_tokens: int = 8000
    # Cap on the generated code, sent as max_tokens and enforced while streaming.
    max_output_tokens: int = 1024
    temperature: float = 0.2
    # Until the provider answers (connect + response headers), and the longest silence
    # allowed between two chunks of a stream.
    request_timeout_s: float = 30.0
    idle_timeout_s: float = 20.0
    # The SDK's retries of a refused request (429, 5xx, connection errors) before streaming.
    max_retries: int = 1
    # Generations one user may start per window, across notebooks.
    rate_limit: int = 20
    rate_window_s: float = 60.0
    # A suggestion nobody accepts or rejects becomes ordinary text after this long.
    pending_ttl_s: float = 3600.0
    # Finished generations stay readable (GET /api/generations/{id}) this long.
    keep_finished_s: float = 3600.0
    # Send DataFrame and file schemas (columns, dtypes, rows, samples). Off only to measure
    # what they are worth (bench/assist_quality.py).
    schemas: bool = True

    @property
    def configured(self) -> bool:
        return bool(self.api_key)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> AssistantSettings:
        env = os.environ if env is None else env
        settings = cls(
            api_key=(env.get("OPENAI_API_KEY") or "").strip() or None,
            base_url=(env.get("OPENAI_BASE_URL") or "").strip() or None,
            model=(env.get("WEFT_AI_MODEL") or "").strip() or DEFAULT_MODEL,
            context_tokens=env_int(env, "WEFT_AI_CONTEXT_TOKENS", 8000),
            max_output_tokens=env_int(env, "WEFT_AI_MAX_OUTPUT_TOKENS", 1024),
            temperature=env_float(env, "WEFT_AI_TEMPERATURE", 0.2),
            request_timeout_s=env_float(env, "WEFT_AI_REQUEST_TIMEOUT_SECONDS", 30.0),
            idle_timeout_s=env_float(env, "WEFT_AI_IDLE_TIMEOUT_SECONDS", 20.0),
            max_retries=env_int(env, "WEFT_AI_MAX_RETRIES", 1),
            rate_limit=env_int(env, "WEFT_AI_RATE_LIMIT", 20),
            rate_window_s=env_float(env, "WEFT_AI_RATE_WINDOW_SECONDS", 60.0),
            pending_ttl_s=env_float(env, "WEFT_AI_PENDING_SECONDS", 3600.0),
            keep_finished_s=env_float(env, "WEFT_AI_KEEP_FINISHED_SECONDS", 3600.0),
            schemas=(env.get("WEFT_AI_SCHEMAS") or "on").strip().lower()
            not in ("off", "0", "false", "no"),
        )
        for name, value in (
            ("WEFT_AI_CONTEXT_TOKENS", settings.context_tokens),
            ("WEFT_AI_MAX_OUTPUT_TOKENS", settings.max_output_tokens),
            ("WEFT_AI_RATE_LIMIT", settings.rate_limit),
        ):
            if value < 1:
                raise SettingsError(f"{name} must be at least 1, got {value}")
        if settings.max_retries < 0:
            raise SettingsError("WEFT_AI_MAX_RETRIES must not be negative")
        return settings
