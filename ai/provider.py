"""Talking to the model: the official ``openai`` SDK (``AsyncOpenAI``, streaming chat
completions), so any OpenAI-compatible server works. Failures become a ``ProviderError``
with a code and a message a person can act on; the API key never appears in either.

The SDK is imported when a client is made (only when the assistant is configured): with
its models it takes ~0.6-1 s to import, which every server start would otherwise pay.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any

import anyio

from ai.settings import AssistantSettings

if TYPE_CHECKING:
    import openai
    from openai import AsyncOpenAI

_KEYLIKE = re.compile(r"\b(sk|key|token)-[A-Za-z0-9_\-*]{6,}")


class ProviderError(Exception):
    """The provider failed; ``code``: rate_limited, provider_error, refused, timeout,
    connection."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def redact(text: str, settings: AssistantSettings) -> str:
    if settings.api_key:
        text = text.replace(settings.api_key, "[redacted]")
    return _KEYLIKE.sub("[redacted]", text)


def _provider_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
        if isinstance(inner, str):
            return inner
    return exc.message


def classify(exc: BaseException, settings: AssistantSettings, *, streaming: bool) -> ProviderError:
    if isinstance(exc, ProviderError):
        return exc
    import openai  # imported already: a client raised this

    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        detail = redact(_provider_message(exc), settings)
        if status == 429:
            return ProviderError(
                "rate_limited",
                f"the model provider is limiting requests (HTTP 429): {detail}; try again "
                "in a moment",
            )
        if status >= 500:
            return ProviderError(
                "provider_error", f"the model provider failed (HTTP {status}): {detail}"
            )
        return ProviderError(
            "refused", f"the model provider refused the request (HTTP {status}): {detail}"
        )
    if isinstance(exc, openai.APITimeoutError | TimeoutError):
        if streaming:
            return ProviderError(
                "timeout",
                f"the model stopped sending for {settings.idle_timeout_s:g} s; the stream "
                "was abandoned",
            )
        return ProviderError(
            "timeout", f"the model provider did not answer within {settings.request_timeout_s:g} s"
        )
    if isinstance(exc, openai.APIError) and not isinstance(exc, openai.APIConnectionError):
        return ProviderError(
            "provider_error", f"the model provider failed: {redact(str(exc), settings)}"
        )
    detail = redact(str(exc) or type(exc).__name__, settings)
    where = "while streaming" if streaming else "before it answered"
    return ProviderError(
        "connection", f"the connection to the model provider broke {where}: {detail}"
    )


def make_client(settings: AssistantSettings) -> AsyncOpenAI:
    from openai import AsyncOpenAI

    return AsyncOpenAI(
        api_key=settings.api_key or "unset",
        base_url=settings.base_url,
        timeout=settings.request_timeout_s,
        max_retries=settings.max_retries,
    )


class CompletionStream:
    """One streaming chat completion: ``async for piece in stream.pieces()``; ``usage``
    holds the provider's token counts when it sends them; ``finish_reason`` how it ended."""

    def __init__(self, client: AsyncOpenAI, settings: AssistantSettings) -> None:
        self._client = client
        self._settings = settings
        self.finish_reason: str | None = None
        self.usage: dict[str, int] = {}

    async def pieces(self, messages: list[dict[str, str]]) -> AsyncGenerator[str, None]:
        settings = self._settings
        try:
            with anyio.fail_after(settings.request_timeout_s):
                stream: Any = await self._client.chat.completions.create(
                    model=settings.model,
                    messages=messages,  # type: ignore[arg-type]
                    stream=True,
                    max_tokens=settings.max_output_tokens,
                    temperature=settings.temperature,
                )
        except Exception as exc:
            raise classify(exc, settings, streaming=False) from None
        iterator = stream.__aiter__()
        try:
            while True:
                try:
                    with anyio.fail_after(settings.idle_timeout_s):
                        chunk = await iterator.__anext__()
                except StopAsyncIteration:
                    break
                except Exception as exc:
                    raise classify(exc, settings, streaming=True) from None
                usage = getattr(chunk, "usage", None)
                if usage is not None:
                    self.usage = {
                        "prompt_tokens": int(getattr(usage, "prompt_tokens", 0) or 0),
                        "completion_tokens": int(getattr(usage, "completion_tokens", 0) or 0),
                    }
                for choice in getattr(chunk, "choices", None) or []:
                    if getattr(choice, "finish_reason", None):
                        self.finish_reason = str(choice.finish_reason)
                    delta = getattr(choice, "delta", None)
                    content = getattr(delta, "content", None) if delta is not None else None
                    if content:
                        yield str(content)
        finally:
            with anyio.CancelScope(shield=True):
                try:
                    await stream.close()
                except Exception:
                    pass
