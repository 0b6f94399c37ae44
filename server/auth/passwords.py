"""Password hashing with Argon2id (memory-hard), run off the event loop.

Parameters follow the OWASP minimum for Argon2id (19 MiB, 2 passes, 1 lane): about 20–40 ms per hash
on our machines, which is what makes guessing expensive; ``needs_rehash`` upgrades stored hashes
when the parameters change.
"""

from __future__ import annotations

import asyncio
import unicodedata

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from ..errors import XtError

_hasher = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)

MIN_LENGTH = 10
MAX_LENGTH = 128
# A hash of a random password: verifying against it when the user does not exist makes a wrong
# user name cost as much time as a wrong password (no user enumeration by timing).
_DUMMY_HASH = _hasher.hash("xietong-dummy-password-for-timing")


def _normalise(password: str) -> str:
    return unicodedata.normalize("NFC", password)


def check_strength(password: str) -> None:
    """Our rule: 10–128 characters with at least three of: lower, upper, digit, other."""
    if not MIN_LENGTH <= len(password) <= MAX_LENGTH:
        raise XtError("auth.password_weak", f"A password has {MIN_LENGTH} to {MAX_LENGTH} characters.")
    classes = sum([any(c.islower() for c in password), any(c.isupper() for c in password),
                   any(c.isdigit() for c in password), any(not c.isalnum() for c in password)])
    if classes < 3:
        raise XtError("auth.password_weak",
                      "A password mixes at least three of: lower case, upper case, digits, other characters.")


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(_hasher.hash, _normalise(password))


def _verify(stored_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(stored_hash or _DUMMY_HASH, _normalise(password)) and stored_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


async def verify_password(stored_hash: str | None, password: str) -> bool:
    """True if ``password`` matches; with ``stored_hash=None`` it spends the same time and says False."""
    return await asyncio.to_thread(_verify, stored_hash, password)


def needs_rehash(stored_hash: str) -> bool:
    return _hasher.check_needs_rehash(stored_hash)
