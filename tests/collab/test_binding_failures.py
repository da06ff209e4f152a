"""The one test for the CRDT binding's panics (collab.errors): a panic and an Exception are
failures to handle; cancellation and KeyboardInterrupt are not."""

from __future__ import annotations

import asyncio

import pytest

from collab.errors import is_binding_panic, is_failure


class PanicException(BaseException):  # pyo3's, by name: the binding does not export it
    pass


@pytest.mark.parametrize(
    ("exc", "panic", "failure"),
    [
        (PanicException("unwrap on None"), True, True),
        (ValueError("malformed"), False, True),
        (KeyboardInterrupt(), False, False),
        (SystemExit(1), False, False),
        (asyncio.CancelledError(), False, False),
    ],
)
def test_only_panics_and_exceptions_are_failures(
    exc: BaseException, panic: bool, failure: bool
) -> None:
    assert is_binding_panic(exc) is panic
    assert is_failure(exc) is failure
