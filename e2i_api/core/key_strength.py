"""Refuse weak API keys at start: placeholders, documented examples and short keys."""

from __future__ import annotations

import hashlib
import math
import string

MIN_KEY_BITS = 256
"""Estimated entropy a plain key needs (32 bytes, as ``secrets.token_urlsafe(32)`` gives)."""
GENERATE_HINT = 'generate one with: python -c "import secrets; print(secrets.token_urlsafe(32))"'
PLACEHOLDER_WORDS = ("change-me", "changeme", "replace-me", "replaceme", "placeholder", "example",
                     "your-key", "secret-key")
DOCUMENTED_EXAMPLES = ("change-me-frontend-key", "change-me-dashboard-key")
"""Keys earlier versions of .env.example shipped: their hashes are refused too."""
REFUSED_DIGESTS = frozenset({"0" * 64, "f" * 64, *(hashlib.sha256(k.encode()).hexdigest()
                                                    for k in DOCUMENTED_EXAMPLES)})
_HEX = frozenset(string.hexdigits)
_BASE64 = frozenset(string.ascii_letters + string.digits + "-_+/=")


def estimated_bits(key: str) -> float:
    """Length x log2 of the alphabet the key seems drawn from: hex 16, base64 64, else 95."""
    chars = set(key)
    size = 16 if chars <= _HEX else 64 if chars <= _BASE64 else 95
    return len(key) * math.log2(size)


def plain_key_problem(key: str) -> str | None:
    """Why ``key`` may not be used (None: strong enough)."""
    lowered = key.lower()
    if any(word in lowered for word in PLACEHOLDER_WORDS):
        return "is a placeholder or documented example"
    if len(set(key)) < 10 or estimated_bits(key) < MIN_KEY_BITS:
        return f"is too weak (under {MIN_KEY_BITS // 8} bytes of entropy)"
    return None


def digest_problem(sha256_hex: str) -> str | None:
    """Why a configured SHA-256 may not be used (None: accepted; its key cannot be checked)."""
    if sha256_hex.lower() in REFUSED_DIGESTS:
        return "is the hash of a placeholder or documented example"
    return None
