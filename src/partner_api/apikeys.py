"""The API key format: recognisable, checksummed, stored only as a hash.

A key reads ``pak_live_<id>_<secret><checksum>``:

- ``pak_live_`` or ``pak_test_``: product and mode, so leaked keys are easy to spot;
- ``<id>``: 12 base62 characters, the public key id shown in listings and logs;
- ``<secret>``: 32 base62 characters from :mod:`secrets` (about 190 bits);
- ``<checksum>``: CRC32 of everything before it, 6 base62 characters, so a
  mistyped or truncated key is rejected without a database read.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import string
import zlib
from dataclasses import dataclass

ALPHABET = string.digits + string.ascii_uppercase + string.ascii_lowercase
ID_LENGTH = 12
SECRET_LENGTH = 32
CHECKSUM_LENGTH = 6
KEY_PATTERN = re.compile(r"\Apak_(live|test)_[0-9A-Za-z]{12}_[0-9A-Za-z]{38}\Z")
# Anything that starts like a key, whole or cut short: what no log line, echoed
# header or stored record may hold. (gunicorn.conf.py repeats it.)
LEAK_PATTERN = re.compile(r"pak_(?:live|test)_[0-9A-Za-z_]*")


@dataclass(frozen=True)
class IssuedKey:
    """A freshly generated key. `plaintext` must be shown once and dropped."""

    key_id: str
    plaintext: str
    key_hash: str
    display_prefix: str


def _random(length: int) -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(length))


def _base62(value: int, width: int) -> str:
    digits = []
    for _ in range(width):
        value, digit = divmod(value, 62)
        digits.append(ALPHABET[digit])

    return "".join(reversed(digits))


def _checksum(body: str) -> str:
    return _base62(zlib.crc32(body.encode("ascii")), CHECKSUM_LENGTH)


def hash_key(plaintext: str) -> str:
    """SHA-256 suits a high-entropy random secret: no salt or slow hash needed."""
    return hashlib.sha256(plaintext.encode("utf-8")).hexdigest()


def generate(test: bool = False) -> IssuedKey:
    """Create a new key with a fresh public id and secret."""
    key_id = _random(ID_LENGTH)
    display_prefix = f"pak_{'test' if test else 'live'}_{key_id}"
    body = f"{display_prefix}_{_random(SECRET_LENGTH)}"
    plaintext = body + _checksum(body)

    return IssuedKey(key_id, plaintext, hash_key(plaintext), display_prefix)


def is_well_formed(candidate: str) -> bool:
    """True when the shape and checksum hold; says nothing about validity."""
    if KEY_PATTERN.match(candidate) is None:
        return False

    body, checksum = candidate[:-CHECKSUM_LENGTH], candidate[-CHECKSUM_LENGTH:]

    return secrets.compare_digest(_checksum(body), checksum)


def holds_key(text: str) -> bool:
    """True when `text` holds anything that starts like a key."""
    return "pak_" in text and LEAK_PATTERN.search(text) is not None


def redact(text: str) -> str:
    """`text` with everything that looks like a key replaced."""
    return LEAK_PATTERN.sub("[redacted]", text)


def key_id_of(plaintext: str) -> str:
    """The public id inside a well-formed key."""
    return plaintext[9 : 9 + ID_LENGTH]
