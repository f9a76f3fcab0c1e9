"""What no log line may show: masking of credentials in any text, and of credential-like query values
in uvicorn's access records (:mod:`vividflow.logs` puts both filters on every handler)."""

from __future__ import annotations

import logging
import re
from urllib.parse import parse_qsl, urlencode

REDACTED = "REDACTED"

SECRET_PARAMETER = re.compile(
    r"(key|token|secret|passw|signature|sig|auth|credential|session|code|jwt)", re.IGNORECASE
)
"""Query parameters whose values are never logged."""

_API_KEY = r"(?P<key>\bvf_[A-Za-z0-9_-]{7})[A-Za-z0-9_-]{5,}"
"""Our API keys (``vf_`` and 43 URL-safe characters): the first ten characters, the display prefix
that key listings show, stay readable."""
_WEBHOOK_SECRET = r"(?P<whsec>\bwhsec_)[A-Za-z0-9+/=_-]+"
_WEBHOOK_SIGNATURE = r"(?P<signature>\bv1,)[A-Za-z0-9+/]{20,}={0,2}"
_BEARER = r"(?P<bearer>\bBearer\s+)[A-Za-z0-9._~+/=-]{8,}"
_COOKIE = r"(?P<cookie>\bvividflow_(?:session|visitor)=)[^;&\s\"'\\]+"
_QUERY = (
    r"(?P<query>[?&][^=&#\s\"'\\]*(?i:" + SECRET_PARAMETER.pattern[1:-1] + r")[^=&#\s\"'\\]*=)"
    r"[^&#\s\"'\\]+"
)
"""Values end at a quote or a backslash: masking JSON text never eats the backslash of an escape."""
_SECRETS = re.compile("|".join((_API_KEY, _WEBHOOK_SECRET, _WEBHOOK_SIGNATURE, _BEARER, _COOKIE, _QUERY)))


def _masked(match: re.Match[str]) -> str:
    if match.group("key") is not None:
        return f"{match.group('key')}...{REDACTED}"
    kept = next(value for value in match.groupdict().values() if value is not None)
    return kept + REDACTED


_SECRET_MARKS = ("vf_", "whsec_", "v1,", "Bearer", "vividflow_", "?", "&")
"""Text that each of the patterns above starts with: a line holding none of them (most access lines)
skips the regular expression, which tries every alternative at every character."""


def mask_secrets(text: str) -> str:
    """``text`` with whatever looks like a credential replaced by ``REDACTED``."""
    if not any(mark in text for mark in _SECRET_MARKS):
        return text
    return _SECRETS.sub(_masked, text)


class MaskSecrets(logging.Filter):
    """On every handler: masks the record's final message, traceback and stack (defence in depth:
    nothing should log a secret in the first place)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format: the handler reports it when it formats
            message = None
        if message is not None and (masked := mask_secrets(message)) != message:
            self._mask_message(record, masked)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_secrets(record.exc_text)
        if record.stack_info:
            record.stack_info = mask_secrets(record.stack_info)
        return True

    @staticmethod
    def _mask_message(record: logging.LogRecord, masked: str) -> None:
        """Mask the arguments one by one where that is enough (uvicorn's access records keep their
        fields), else replace the message by its masked text."""
        if isinstance(record.args, tuple) and isinstance(record.msg, str):
            original = record.msg, record.args
            record.msg = mask_secrets(record.msg)
            record.args = tuple(mask_secrets(arg) if isinstance(arg, str) else arg for arg in record.args)
            try:
                if record.getMessage() == masked:
                    return
            except (TypeError, ValueError):
                pass
            record.msg, record.args = original
        record.msg, record.args = masked, None


def redact_query(path: str) -> str:
    """``path`` with the values of credential-like query parameters replaced."""
    base, separator, query = path.partition("?")
    if not separator:
        return path
    pairs = parse_qsl(query, keep_blank_values=True)
    cleaned = [(name, REDACTED if SECRET_PARAMETER.search(name) else value) for name, value in pairs]
    return f"{base}?{urlencode(cleaned, safe='/:,')}"


class RedactQuerySecrets(logging.Filter):
    """On uvicorn's access log records (``client, method, path?query, version, status``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str) and "?" in args[2]:
            record.args = (*args[:2], redact_query(args[2]), *args[3:])
        return True
