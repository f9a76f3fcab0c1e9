"""API keys: random, shown once, stored as a SHA-256 digest.

The keys carry 256 bits of randomness, so a fast digest is enough (as GitHub and Stripe do): a
slow password hash would only add latency to every request without making guessing any harder.
"""

from __future__ import annotations

import hashlib
import secrets

KEY_PREFIX = "vf_"
DISPLAY_PREFIX_LENGTH = 10


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def display_prefix(key: str) -> str:
    return key[:DISPLAY_PREFIX_LENGTH]
