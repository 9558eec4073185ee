"""The tenant's credential vault: secrets for tools, encrypted at rest with Fernet
(AES-128-CBC + HMAC-SHA256, from `cryptography`).

The keys are EXECUTION_VAULT_KEYS (Fernet keys, comma-separated: the first encrypts,
all decrypt, for rotation) or, on the embedded default, one derived from SECRET_KEY with
HKDF. Plaintext leaves this module only into a tool's outgoing request,
host side: never into the sandbox, a span, the journal, a log or an API response.
What a server answers is scrubbed of the value in every form it plausibly echoes it
(`scrub`) before anything else sees the answer.
"""

import base64
import html
import json
import re
from functools import lru_cache
from urllib.parse import quote, quote_plus

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings

from execution import selectors


class VaultError(LookupError):
    pass


def _derive(material: bytes, info: bytes) -> str:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(material)
    return base64.urlsafe_b64encode(key).decode()


def _master_keys() -> list[str]:
    keys = [k.strip() for k in (settings.EXECUTION_VAULT_KEYS or "").split(",") if k.strip()]
    return keys or [_derive(settings.SECRET_KEY.encode(), b"flightdeck-vault")]


@lru_cache(maxsize=1)
def _fernet() -> MultiFernet:
    # The first key encrypts; all of them decrypt, so keys can be rotated.
    return MultiFernet([Fernet(k) for k in _master_keys()])


@lru_cache(maxsize=4096)
def tenant_fernet(tenant_id: int, purpose: str) -> MultiFernet:
    """A tenant's own key for `purpose` (the journal's, ...), derived from each vault
    key with HKDF: one tenant's rows never decrypt with another's key, and rotating the
    vault keys rotates these too (the first encrypts, all decrypt)."""
    info = f"flightdeck-{purpose}:{tenant_id}".encode()
    return MultiFernet([Fernet(_derive(base64.urlsafe_b64decode(k), info)) for k in _master_keys()])


def encrypt(value: str) -> bytes:
    return _fernet().encrypt(value.encode())


def decrypt(ciphertext: bytes) -> str:
    try:
        return _fernet().decrypt(bytes(ciphertext)).decode()
    except InvalidToken:
        raise VaultError("a credential could not be decrypted (wrong vault key?)") from None


def credential_value(*, name: str) -> str:
    """The plaintext of the current tenant's credential `name` (scoped manager)."""
    ciphertext = selectors.credential_ciphertext(name=name)
    if ciphertext is None:
        raise VaultError(f"no credential named {name!r}")
    return decrypt(ciphertext)


REDACTED = "[credential]"
# Derived forms shorter than this would match ordinary text (the raw value is always
# replaced).
MIN_FORM_CHARS = 4
# Where a value's base64 starts and ends inside the base64 of a longer string, by the
# value's offset mod 3 there: the characters that depend on the value's bytes alone.
_B64_SKIP = (0, 2, 3)


def _base64_forms(raw: bytes) -> set[str]:
    forms = set()
    whole = base64.b64encode(raw).decode()
    forms |= {whole, whole.rstrip("=")}
    for offset, skip in enumerate(_B64_SKIP):
        length = offset + len(raw)
        end = length // 3 * 4 + length % 3
        forms.add(base64.b64encode(bytes(offset) + raw).decode()[skip:end])
    return forms | {f.translate(str.maketrans("+/", "-_")) for f in forms}


def secret_forms(secret: str) -> set[str]:
    """The ways a server plausibly echoes `secret`: raw, JSON-escaped (with and without
    \\u escapes and escaped slashes), URL-encoded (either hex case, `+` for spaces or
    not), HTML-escaped, and base64 (standard and URL-safe, padded or not, also where the
    value sits inside a longer encoded string such as "Bearer <secret>")."""
    forms = {
        secret,
        html.escape(secret),
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
    }
    percent = {quote(secret, safe=""), quote(secret), quote_plus(secret)}
    forms |= percent | {re.sub(r"%[0-9A-F]{2}", lambda m: m[0].lower(), f) for f in percent}
    forms |= _base64_forms(secret.encode())
    forms |= {f.replace("/", "\\/") for f in forms}
    return {f for f in forms if f == secret or len(f) >= MIN_FORM_CHARS}


class Scrubber:
    """Replaces a secret's forms in text with REDACTED, longest first, in one pass."""

    def __init__(self, secret: str):
        forms = sorted(secret_forms(secret) if secret else (), key=len, reverse=True)
        self.pattern = re.compile("|".join(map(re.escape, forms))) if forms else None
        # The longest form in bytes: text cut this far past a limit holds every form
        # that starts before it whole, so scrubbing before the cut leaks no prefix.
        self.reach = max((len(f.encode()) for f in forms), default=0)

    def __call__(self, text: str) -> str:
        return self.pattern.sub(REDACTED, text) if self.pattern else text
