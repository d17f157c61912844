"""Log files, and keeping secrets out of them.

Secret values kfdeploy reads (OIDC client secrets, passwords, Keystone tokens, private keys) are
registered with `SecretRedactor.register` the moment they are read; every log record and crash
file passes through the redactor, which also masks token-shaped patterns it was never told about.
"""

from __future__ import annotations

import logging
import re
import threading
from pathlib import Path

from kfdeploy.files import cache_root

_PATTERNS = [
    # HTTP headers and JSON/YAML fields that carry credentials
    re.compile(
        r"(?i)(x-auth-token|x-subject-token|authorization)(['\"]?\s*[:=]\s*['\"]?)(bearer\s+)?[^\s'\",}]+"
    ),
    re.compile(
        r"(?i)(\"?(?:password|secret|client[-_]secret|cookie[-_]secret|token|private[-_]key)\"?\s*[:=]\s*)"
        r"(\"[^\"]*\"|'[^']*'|[^\s,}]+)"
    ),
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.S),
]


def log_dir() -> Path:
    return cache_root() / "logs"


class SecretRedactor(logging.Filter):
    _values: set[str] = set()
    _lock = threading.Lock()

    @classmethod
    def register(cls, value: str | bytes | None) -> None:
        """Never log this value. Short values are skipped: masking 'root' everywhere helps no one."""
        if value is None:
            return
        text = value.decode(errors="replace") if isinstance(value, bytes) else value
        if len(text) >= 6:
            with cls._lock:
                cls._values.add(text)

    @classmethod
    def redact(cls, text: str) -> str:
        with cls._lock:
            values = sorted(cls._values, key=len, reverse=True)
        for v in values:
            text = text.replace(v, "***")
        for pat in _PATTERNS:
            if pat.groups >= 3:
                text = pat.sub(lambda m: m.group(1) + m.group(2) + "***", text)
            elif pat.groups == 2:
                text = pat.sub(lambda m: m.group(1) + "***", text)
            else:
                text = pat.sub("***PRIVATE KEY***", text)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        redacted = self.redact(msg)
        if redacted != msg:
            record.msg, record.args = redacted, None
        return True
