"""The collab exception tree. Each error carries what a client needs to know; ``app.py``
maps them to HTTP statuses and ``websocket.py`` to close codes, in one place each."""

from __future__ import annotations


class WeftError(Exception):
    """Base of every error Weft reports to a client."""

    status = 500
    code = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(WeftError):
    status = 400
    code = "bad_request"


class NotFound(WeftError):
    status = 404
    code = "not_found"


class Conflict(WeftError):
    status = 409
    code = "conflict"


class PayloadTooLarge(WeftError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(WeftError):
    """A body that must be JSON came as something else (a form, plain text)."""

    status = 415
    code = "unsupported_media_type"


class Unavailable(WeftError):
    """Storage could not be reached or a document could not be loaded: retry later."""

    status = 503
    code = "unavailable"


class ProtocolError(WeftError):
    """A client sent a frame that is not valid Yjs sync/awareness protocol."""

    status = 400
    code = "protocol_error"


class Unauthorized(WeftError):
    """No credential, or one that is unknown, expired or revoked: sign in again."""

    status = 401
    code = "unauthorized"


class Forbidden(WeftError):
    """The caller is known but their role does not allow this."""

    status = 403
    code = "forbidden"


class Gone(WeftError):
    """The thing existed but is no longer usable (a revoked, expired or used-up link)."""

    status = 410
    code = "gone"


class TooManyRequests(WeftError):
    status = 429
    code = "rate_limited"

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


# -- failures of the CRDT binding ------------------------------------------------------------
# pyo3's PanicException (the Rust core panicked) derives from BaseException, not Exception:
# code that reads or applies a document catches ``BaseException`` and lets through what these
# say is not a failure of the document (cancellation, KeyboardInterrupt, SystemExit).


def is_binding_panic(exc: BaseException) -> bool:
    """The CRDT binding panicked (pyo3's PanicException): recognised by name, as the
    binding does not export the type, without catching cancellation along with it."""
    return type(exc).__name__ == "PanicException"


def is_failure(exc: BaseException) -> bool:
    """``exc`` is an error to handle where a document is read or applied: an ``Exception``
    or the binding's panic; anything else (cancellation, KeyboardInterrupt) is re-raised."""
    return isinstance(exc, Exception) or is_binding_panic(exc)
