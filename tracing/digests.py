"""Payload digests: 16 bytes (keyed BLAKE2b-128) stored, 22 characters of base64url in
Python, references and logs."""

import base64
import binascii

DIGEST_BYTES = 16
_URLSAFE = bytes.maketrans(b"+/", b"-_")


def digest_text(raw: bytes) -> str:
    return binascii.b2a_base64(raw, newline=False)[:22].translate(_URLSAFE).decode()


def digest_bytes(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "==")
