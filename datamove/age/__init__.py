"""age v1 (https://age-encryption.org/v1) on the ``cryptography`` package.

Why age: it is an open, small, well-specified format with independent
implementations (``age``, ``rage``), so data datamove encrypts can be decrypted
without datamove, and its header/payload split lets keys rotate without
re-encrypting payloads.

Modules, one job each:

    bech32   BIP 173 codec for ``age1…`` / ``AGE-SECRET-KEY-1…`` strings
    keys     X25519 and scrypt recipients/identities, key files, fingerprints
    header   header parse/serialise, header MAC, stanza wrap/unwrap
    stream   STREAM payload (64 KiB ChaCha20-Poly1305 chunks, last-chunk flag)
    armor    strict ASCII armor
    age      the API: AgeEncryptor/AgeDecryptor, encrypt/decrypt, rewrap_header
    errors   exception classes matching the test vectors' failure classes

Format in one screen::

    age-encryption.org/v1
    -> X25519 <b64 ephemeral share>          one stanza per recipient
    <b64 wrapped file key>                   64-col lines, last one shorter
    --- <b64 HMAC-SHA256>                    key HKDF(file key, "header")
    <16-byte nonce><payload>                 key HKDF(file key, salt=nonce, "payload")

b64 is standard base64 without padding, canonical. The payload is 64 KiB
plaintext chunks, each ChaCha20-Poly1305 with nonce = 11-byte big-endian counter
|| flag (1 on the last chunk); the last chunk may be full and is empty only for
an empty payload. Rotation (``rewrap_header``) keeps the file key, nonce and
payload, and writes new stanzas and a new MAC.
"""

from __future__ import annotations

from datamove.age.errors import (
    AgeError,
    ArmorError,
    HeaderError,
    HeaderMacError,
    InvalidKey,
    NoIdentityMatch,
    PayloadError,
)
from datamove.age.files import (
    AgeDecryptor,
    AgeEncryptor,
    decrypt,
    decrypt_identities,
    encrypt,
    header_bytes,
    new_header,
    read_header,
    rewrap,
    rewrap_header,
)
from datamove.age.keys import (
    Identity,
    Recipient,
    ScryptIdentity,
    ScryptRecipient,
    X25519Identity,
    X25519Recipient,
    fingerprint,
    format_identity_file,
    load_identities,
    load_recipients,
    parse_identities,
    parse_recipients,
)

__all__ = [
    "AgeDecryptor",
    "AgeEncryptor",
    "AgeError",
    "ArmorError",
    "HeaderError",
    "HeaderMacError",
    "Identity",
    "InvalidKey",
    "NoIdentityMatch",
    "PayloadError",
    "Recipient",
    "ScryptIdentity",
    "ScryptRecipient",
    "X25519Identity",
    "X25519Recipient",
    "decrypt",
    "decrypt_identities",
    "encrypt",
    "fingerprint",
    "format_identity_file",
    "header_bytes",
    "load_identities",
    "load_recipients",
    "new_header",
    "parse_identities",
    "parse_recipients",
    "read_header",
    "rewrap",
    "rewrap_header",
]
