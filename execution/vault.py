"""The tenant's credential vault: secrets for tools, encrypted at rest with Fernet
(AES-128-CBC + HMAC-SHA256, from `cryptography`).

The key is EXECUTION_VAULT_KEY (a Fernet key) or, on the embedded default, derived from
SECRET_KEY with HKDF. Plaintext leaves this module only into a tool's outgoing request,
host side: never into the sandbox, a span, the journal, a log or an API response.
"""

import base64
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings

from execution.models import Credential


class VaultError(LookupError):
    pass


@lru_cache(maxsize=1)
def _fernet() -> MultiFernet:
    keys = [k.strip() for k in (settings.EXECUTION_VAULT_KEYS or "").split(",") if k.strip()]
    if not keys:
        derived = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"flightdeck-vault"
        ).derive(settings.SECRET_KEY.encode())
        keys = [base64.urlsafe_b64encode(derived).decode()]
    # The first key encrypts; all of them decrypt, so keys can be rotated.
    return MultiFernet([Fernet(k) for k in keys])


def encrypt(value: str) -> bytes:
    return _fernet().encrypt(value.encode())


def decrypt(ciphertext: bytes) -> str:
    try:
        return _fernet().decrypt(bytes(ciphertext)).decode()
    except InvalidToken:
        raise VaultError("a credential could not be decrypted (wrong vault key?)") from None


def credential_value(*, name: str) -> str:
    """The plaintext of the current tenant's credential `name` (scoped manager)."""
    credential = Credential.objects.filter(name=name).first()
    if credential is None:
        raise VaultError(f"no credential named {name!r}")
    return decrypt(credential.ciphertext)
