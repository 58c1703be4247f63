"""Bounded decoding of untrusted pass bytes: base45, zlib and CBOR.

A QR code can carry at most 4,296 alphanumeric characters, so anything longer did not come from a real
code. Each layer has a cap on what it may produce, so a hostile code costs at most a few milliseconds
and a few kilobytes before it is refused, and every library error becomes ``Rejected(MALFORMED, step)``.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Callable
from typing import Any

import base45
import cbor2

from .rejection import Rejected
from .verdict import Reason

MAX_TEXT_CHARS = 4096  # a version-40 QR code holds 4,296 alphanumeric characters; real passes are < 1,000
MAX_INFLATED_BYTES = 64 * 1024  # a DCC inflates to ~300-2,000 bytes; 64 KiB leaves room and stops zlib bombs
MAX_CBOR_DEPTH = 16  # a DCC nests 6 deep (claims > hcert > payload > v > entry > value)


def decode_base45(text: str) -> bytes:
    """The bytes of base45 ``text`` (RFC 9285). Output is 2/3 of the input, so it is bounded by the text cap."""
    try:
        return bytes(base45.b45decode(text))
    except (ValueError, TypeError) as exc:
        raise Rejected(Reason.MALFORMED, "base45") from exc


def has_zlib_header(data: bytes) -> bool:
    """Whether ``data`` starts with a zlib header (RFC 1950: deflate method, header checksum).

    A COSE message can never start this way: its first byte is a CBOR tag or array head, never 0x78.
    """
    if len(data) < 2:
        return False
    cmf, flg = data[0], data[1]
    return cmf & 0x0F == 8 and cmf >> 4 <= 7 and ((cmf << 8) | flg) % 31 == 0


def inflate(data: bytes, max_bytes: int = MAX_INFLATED_BYTES) -> bytes:
    """Decompress one complete zlib stream, refusing output larger than ``max_bytes`` (a zlib bomb).

    Decompresses at most ``max_bytes + 1`` bytes, so a bomb costs that much memory and no more.
    """
    decompressor = zlib.decompressobj()
    try:
        out = decompressor.decompress(data, max_bytes + 1)
    except zlib.error as exc:
        raise Rejected(Reason.MALFORMED, "zlib") from exc
    if len(out) > max_bytes:
        raise Rejected(Reason.MALFORMED, "zlib_size")
    if not decompressor.eof or decompressor.unused_data:
        raise Rejected(Reason.MALFORMED, "zlib")  # truncated stream, or bytes after its end
    return out


def _keep_tag(tag: int) -> Callable[[Any, bool], cbor2.CBORTag]:
    return lambda value, immutable: cbor2.CBORTag(tag, value)


# cbor2 turns some semantic tags into Python objects (regular expressions, fractions, MIME messages,
# datetimes, ...). Nothing in a pass needs them, and interpreting a hostile one is work an attacker
# chooses for us (re.compile, big-integer gcd, a MIME parser), so they stay plain CBORTag values.
_INERT_SEMANTIC_TAGS = {
    tag: _keep_tag(tag) for tag in (0, 1, 2, 3, 4, 5, 30, 35, 36, 37, 52, 54, 100, 258, 260, 261, 1004)
}


def decode_cbor(data: bytes, step: str = "cbor", max_bytes: int = MAX_INFLATED_BYTES) -> Any:
    """The one CBOR data item that is all of ``data``; duplicate map keys and trailing bytes are refused.

    Nesting deeper than ``MAX_CBOR_DEPTH`` is refused before it can exhaust the stack, and declared
    lengths larger than the input fail at once (cbor2 reads strings in chunks, it does not pre-allocate).
    ``max_bytes`` is raised only for signed lists, whose size the caller bounds itself.
    """
    if len(data) > max_bytes:
        raise Rejected(Reason.MALFORMED, step)
    stream = io.BytesIO(data)
    try:
        decoder = cbor2.CBORDecoder(
            stream,
            semantic_decoders=_INERT_SEMANTIC_TAGS,
            max_depth=MAX_CBOR_DEPTH,
            allow_duplicate_keys=False,
        )
        item = decoder.decode()
    except Exception as exc:  # cbor2 raises CBORDecodeError, ValueError, RecursionError, ... on hostile input
        raise Rejected(Reason.MALFORMED, step) from exc
    if stream.tell() != len(data):
        raise Rejected(Reason.MALFORMED, step)
    return item
