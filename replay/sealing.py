"""The journal's requests and results at rest: JSON sealed with the tenant's journal key.

Replay needs what the span path redacts (a tool's real answer, the model's real reply),
so the journal keeps values whole, and therefore encrypted: Fernet (the credential
vault's scheme and library, `execution.vault.tenant_fernet`) with a key of the row's
tenant. A sealed value is

    version (1 byte) | tenant id (8 bytes, big-endian) | Fernet token, base64-decoded

The tenant id says which key opens it, so a value read without its row still opens
with the right key and no other; the token is kept as raw bytes, a quarter smaller than
its base64 text. Inside the token, JSON (orjson), zstd-compressed when that is smaller.
Readers never show a value as it is opened: `replay.selectors` redacts it first.
"""

import base64
import threading

import orjson
import zstandard
from django.db import models

from controlplane.tenancy import current_tenant_id

VERSION = b"\x01"
HEADER = 9
PURPOSE = "journal"
_PLAIN, _ZSTD = b"j", b"z"
# Short values rarely compress below zstd's own frame header.
COMPRESS_FROM = 200
# Per thread: a zstd context is not safe to share, and the gateway seals on each of
# the agent's connection threads at once (parallel tool calls).
_coders = threading.local()


def _compressor() -> zstandard.ZstdCompressor:
    if not hasattr(_coders, "compressor"):
        _coders.compressor = zstandard.ZstdCompressor(level=3)
    return _coders.compressor


def _decompressor() -> zstandard.ZstdDecompressor:
    if not hasattr(_coders, "decompressor"):
        _coders.decompressor = zstandard.ZstdDecompressor()
    return _coders.decompressor


def _fernet(tenant_id: int):
    # Imported here: the vault reads execution's selectors, which read this app's models.
    from execution.vault import tenant_fernet

    return tenant_fernet(tenant_id, PURPOSE)


class JournalKeyError(LookupError):
    pass


class Sealed(bytes):
    """A value sealed already: written as it is."""


def seal(*, tenant_id: int, value) -> Sealed | None:
    if value is None:
        return None
    if isinstance(value, Sealed):  # as it is, if it is this tenant's
        if value[1:HEADER] != tenant_id.to_bytes(8, "big"):
            raise JournalKeyError("a sealed journal value of another tenant")
        return value
    data = orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS)
    body = _PLAIN + data
    if len(data) >= COMPRESS_FROM:
        packed = _compressor().compress(data)
        if len(packed) < len(data):
            body = _ZSTD + packed
    token = _fernet(tenant_id).encrypt(body)
    raw = base64.urlsafe_b64decode(token)
    return Sealed(VERSION + tenant_id.to_bytes(8, "big") + raw)


def unseal(sealed: bytes):
    sealed = bytes(sealed)
    if sealed[:1] != VERSION:
        raise JournalKeyError("a journal value has an unknown format")
    tenant_id = int.from_bytes(sealed[1:HEADER], "big")
    token = base64.urlsafe_b64encode(sealed[HEADER:])
    try:
        body = _fernet(tenant_id).decrypt(token)
    except Exception:  # noqa: BLE001 - InvalidToken, or a token cut short
        raise JournalKeyError("a journal value could not be decrypted (wrong vault key?)") from None
    data = _decompressor().decompress(body[1:]) if body[:1] == _ZSTD else body[1:]
    return orjson.loads(data)


class SealedJSONField(models.BinaryField):
    """A JSON value stored sealed with its row's tenant's key; read back opened.

    A saved row seals with its own tenant; a queryset `.update()` seals with the
    caller's tenant scope (and fails closed without one) unless given a `Sealed` value.
    """

    def pre_save(self, model_instance, add):
        value = getattr(model_instance, self.attname)
        if value is None or isinstance(value, Sealed):
            return value
        return seal(tenant_id=model_instance.tenant_id, value=value)

    def get_prep_value(self, value):
        if value is None or isinstance(value, Sealed):
            return value
        return seal(tenant_id=current_tenant_id(), value=value)

    def from_db_value(self, value, expression, connection):
        return None if value is None else unseal(value)

    def to_python(self, value):
        return value

    def value_to_string(self, obj):
        return orjson.dumps(self.value_from_object(obj), default=str).decode()
