"""Revocation: truncated SHA-256 hashes of revoked passes, as the EU DCC revocation scheme uses them.

Hash types (each entry is the first 16 bytes of a SHA-256), computed as the EU verifier apps compute
the scheme's UCI, COUNTRYCODEUCI and SIGNATURE hashes, plus one for qrgate passes:

- ``uci``: over the UTF-8 certificate identifier (the DCC's ``ci``, e.g. ``URN:UVCI:01:VN:...``);
- ``country_uci``: over the issuing country code, then the UCI (``"VN" + ci``). The country is the
  CWT ``iss`` claim, as the German Corona-Warn-App, the EU DGCA iOS verifier and the EU's own
  ``dcc-info`` tool compute it (some other verifiers took the entry's ``co`` instead);
- ``signature``: over the COSE signature; for ECDSA (ES256) only its first half, the ``r`` value,
  because ``(r, s)`` and ``(r, n - s)`` are both valid and anyone can turn one into the other. PS256
  and Ed25519 (qrgate's own; not malleable) signatures are hashed whole;
- ``qrgate_pass_id``: over the qrgate pass id bytes (the ``cti`` claim).

A signed revocation list (``signed_list.py`` envelope) carries, per hash type, one byte string: the
concatenation of its 16-byte hashes. One byte string instead of a CBOR array of a million items keeps
decoding to one allocation (a million small ``bytes`` objects would take ~50 MB of a Pi's memory).

Payload, besides ``type`` ("qrgate-revocation"), ``version``, ``issued_at``, ``expires_at``::

    kind          "snapshot" | "delta"
    entries       snapshot only: map {hash type: bstr of n*16 bytes}; an absent type has no entries
    base_version  delta only: the version the delta applies to (it must be the one in force)
    add, remove   delta only: maps like ``entries``

The device keeps one sorted ``numpy`` array of ``S16`` per hash type (16 bytes an entry, 16 MB at a
million) and looks a hash up with ``searchsorted``: a binary search, about 20 comparisons at a million.
"""

from __future__ import annotations

import enum
import hashlib
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import cbor2
import numpy as np

from .algorithms import ES256
from .codec import decode_cbor
from .rejection import Rejected
from .signed_list import ListOutcome, ListRefused, ListType, SignedList, check_fields, integer

HASH_BYTES = 16
MAX_ENTRIES = 2_000_000  # over all hash types, in a document and in the index it builds: 32 MB of hashes
MAX_REVOCATION_BYTES = MAX_ENTRIES * HASH_BYTES + 64 * 1024  # the hashes plus the envelope and fields

_DTYPE = np.dtype(f"S{HASH_BYTES}")
_RAW_DTYPE = np.dtype(f"V{HASH_BYTES}")


class HashType(enum.StrEnum):
    UCI = "uci"
    COUNTRY_UCI = "country_uci"
    SIGNATURE = "signature"
    QRGATE_PASS_ID = "qrgate_pass_id"


def _truncated_sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()[:HASH_BYTES]


def uci_hash(uci: str) -> bytes:
    return _truncated_sha256(uci.encode("utf-8"))


def country_uci_hash(country: str, uci: str) -> bytes:
    return _truncated_sha256((country + uci).encode("utf-8"))


def signature_hash(signature: bytes, alg: int) -> bytes:
    return _truncated_sha256(signature[: len(signature) // 2] if alg == ES256 else signature)


def pass_id_hash(pass_id: bytes) -> bytes:
    return _truncated_sha256(pass_id)


_EMPTY = np.empty(0, dtype=_DTYPE)
_EMPTY.flags.writeable = False  # shared by every index


class RevocationIndex:
    """Sorted, duplicate-free 16-byte hashes per hash type. Immutable; safe to share between threads."""

    __slots__ = ("_raw", "_size", "_sorted")

    def __init__(self, arrays: Mapping[HashType, np.ndarray] | None = None) -> None:
        """``arrays`` must be sorted and duplicate-free ``S16`` arrays; ``from_hashes`` makes them from any bytes."""
        arrays = arrays or {}
        self._sorted = {t: arrays.get(t, _EMPTY) for t in HashType}
        # numpy's S dtype strips trailing NUL bytes when it hands out one element, so equality is
        # tested on the same memory viewed as raw 16-byte voids; searchsorted itself compares all 16 bytes.
        self._raw = {t: array.view(_RAW_DTYPE) for t, array in self._sorted.items()}
        self._size = sum(len(array) for array in self._sorted.values())  # the verifier asks on every pass

    @classmethod
    def from_hashes(cls, hashes: Mapping[HashType, bytes]) -> RevocationIndex:
        """An index of the concatenated 16-byte hashes per type, in any order and with repeats."""
        return cls({t: _sorted_unique(_array(data)) for t, data in hashes.items()})

    def contains(self, hash_type: HashType, digest: bytes) -> bool:
        """Whether ``digest`` (16 bytes) is revoked under ``hash_type``: one binary search, nothing kept."""
        array = self._sorted[hash_type]
        index = int(array.searchsorted(digest))
        return index < len(array) and self._raw[hash_type][index].tobytes() == digest

    def apply_delta(self, add: Mapping[HashType, bytes], remove: Mapping[HashType, bytes]) -> RevocationIndex:
        """A new index with ``remove`` taken out, then ``add`` put in. Removing what is absent or adding what
        is present changes nothing, so a delta means the same whatever order the issuer listed it in."""
        arrays = {}
        for hash_type, current in self._sorted.items():
            kept = current
            removed = _sorted_unique(_array(remove.get(hash_type, b"")))
            if len(removed):
                kept = kept[~_members(kept, removed)]
            added = _sorted_unique(_array(add.get(hash_type, b"")))
            if len(added):
                added = added[~_members(added, kept)]
                kept = np.insert(kept, kept.searchsorted(added), added)  # O(n) copy instead of a re-sort
            arrays[hash_type] = kept
        return RevocationIndex(arrays)

    def count(self, hash_type: HashType) -> int:
        return len(self._sorted[hash_type])

    def __len__(self) -> int:
        return self._size

    def __bool__(self) -> bool:
        return self._size > 0

    @property
    def nbytes(self) -> int:
        """Memory held by the hashes themselves."""
        return sum(array.nbytes for array in self._sorted.values())

    def hashes(self, hash_type: HashType) -> bytes:
        """The sorted hashes of one type, concatenated: the form the state file and the wire use."""
        return self._sorted[hash_type].tobytes()


EMPTY_INDEX = RevocationIndex()


def _array(data: bytes) -> np.ndarray:
    if len(data) % HASH_BYTES:
        raise ValueError(f"hash bytes are not a multiple of {HASH_BYTES}")
    return np.frombuffer(data, dtype=_DTYPE)


def _sorted_unique(array: np.ndarray) -> np.ndarray:
    """A sorted copy of ``array`` without repeats (``array`` may be a read-only view of a document)."""
    ordered = np.sort(array)
    if len(ordered) < 2:
        return ordered
    # np.unique on S16 takes ~7x as long as the sort; comparing neighbours as two 64-bit words is exact.
    words = _words(ordered)
    keep = np.empty(len(ordered), dtype=bool)
    keep[0] = True
    np.any(words[1:] != words[:-1], axis=1, out=keep[1:])
    return ordered if keep.all() else ordered[keep]


def _members(values: np.ndarray, sorted_array: np.ndarray) -> np.ndarray:
    """For each of ``values``, whether it is in ``sorted_array`` (a boolean mask)."""
    if not len(sorted_array):
        return np.zeros(len(values), dtype=bool)
    positions = np.minimum(sorted_array.searchsorted(values), len(sorted_array) - 1)
    mask: np.ndarray = (_words(sorted_array)[positions] == _words(values)).all(axis=1)
    return mask


def _words(array: np.ndarray) -> np.ndarray:
    """The hashes as rows of two 64-bit words: same memory, compared without numpy's string semantics."""
    return np.ascontiguousarray(array).view(np.uint64).reshape(-1, 2)


# --- the signed list ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RevocationList:
    """The revocation state in force: the index and where it came from."""

    version: int
    issued_at: int
    expires_at: int
    digest: bytes  # SHA-256 of the last document applied: tells a re-delivery from a new list
    index: RevocationIndex


_SNAPSHOT_FIELDS = frozenset({"type", "version", "issued_at", "expires_at", "kind", "entries"})
_DELTA_FIELDS = frozenset({"type", "version", "issued_at", "expires_at", "kind", "base_version", "add", "remove"})


def read_revocation_list(signed: SignedList, in_force: RevocationList | None) -> RevocationList:
    """The revocation state after ``signed``: a snapshot replaces ``in_force``, a delta is applied to it.

    ListRefused: malformed, too_large, or base_mismatch for a delta whose base is not ``in_force``.
    The version order (rollback) is the caller's check, shared with the trust list.
    """
    if signed.type is not ListType.REVOCATION:
        raise ListRefused(ListOutcome.WRONG_TYPE, f"type {signed.type}, expected {ListType.REVOCATION}")
    payload = signed.payload
    kind = payload.get("kind")
    if kind == "snapshot":
        check_fields(payload, _SNAPSHOT_FIELDS, "revocation snapshot")
        index = RevocationIndex.from_hashes(_hash_map(payload.get("entries"), "entries"))
    elif kind == "delta":
        check_fields(payload, _DELTA_FIELDS, "revocation delta")
        base = integer(payload, "base_version", minimum=1)
        if in_force is None or base != in_force.version:
            held = "none" if in_force is None else f"v{in_force.version}"
            raise ListRefused(ListOutcome.BASE_MISMATCH, f"delta on v{base}, the device holds {held}: send a snapshot")
        added, removed = _hash_map(payload.get("add"), "add"), _hash_map(payload.get("remove"), "remove")
        index = in_force.index.apply_delta(added, removed)
    else:
        raise ListRefused(ListOutcome.MALFORMED, 'kind must be "snapshot" or "delta"')
    if len(index) > MAX_ENTRIES:
        raise ListRefused(ListOutcome.TOO_LARGE, f"{len(index)} entries, at most {MAX_ENTRIES}")
    return RevocationList(signed.version, signed.issued_at, signed.expires_at, signed.digest, index)


def _hash_map(value: Any, name: str) -> dict[HashType, bytes]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ListRefused(ListOutcome.MALFORMED, f"{name} must be a map of hash type to bytes")
    known = {str(t) for t in HashType}
    hashes: dict[HashType, bytes] = {}
    total = 0
    for hash_type, data in value.items():
        if hash_type not in known:
            raise ListRefused(ListOutcome.MALFORMED, f"{name}: unknown hash type {hash_type!r}")
        if not isinstance(data, bytes) or len(data) % HASH_BYTES:
            raise ListRefused(ListOutcome.MALFORMED, f"{name}.{hash_type}: must be bytes, a multiple of {HASH_BYTES}")
        total += len(data) // HASH_BYTES
        hashes[HashType(hash_type)] = data
    if total > MAX_ENTRIES:
        raise ListRefused(ListOutcome.TOO_LARGE, f"{name}: {total} entries, at most {MAX_ENTRIES}")
    return hashes


# --- the device's state file ----------------------------------------------------------------------------------

# The device stores the index it built, not the documents: a delta cannot be re-applied without its
# base, and sorting a million hashes again at every start would cost seconds on a Pi. Layout:
#   magic (8 bytes) | header length (4 bytes, big-endian) | header (CBOR map) | hashes, by HashType order
# The header holds the list's fields, the count per type and a SHA-256 of the hashes, so a truncated
# or damaged file is detected and the last good one is used instead.
_STATE_MAGIC = b"QGREVOK1"
_HEADER_LENGTH = struct.Struct(">I")
_MAX_HEADER_BYTES = 4096


def encode_state(state: RevocationList) -> list[bytes | memoryview]:
    """The state file's content, as chunks to write one after another (no copy of the hashes)."""
    body = [state.index._sorted[t].data for t in HashType]  # the index's own memory, read in place
    body_digest = hashlib.sha256()
    for chunk in body:
        body_digest.update(chunk)
    header = cbor2.dumps({
        "version": state.version,
        "issued_at": state.issued_at,
        "expires_at": state.expires_at,
        "digest": state.digest,
        "counts": {str(t): state.index.count(t) for t in HashType},
        "body_sha256": body_digest.digest(),
    })
    return [_STATE_MAGIC, _HEADER_LENGTH.pack(len(header)), header, *body]


def decode_state(data: bytes) -> RevocationList:
    """The state ``encode_state`` wrote; ValueError naming what is wrong if ``data`` is not exactly that."""
    if not data.startswith(_STATE_MAGIC) or len(data) < len(_STATE_MAGIC) + _HEADER_LENGTH.size:
        raise ValueError("not a qrgate revocation state file")
    (header_length,) = _HEADER_LENGTH.unpack_from(data, len(_STATE_MAGIC))
    start = len(_STATE_MAGIC) + _HEADER_LENGTH.size
    if header_length > _MAX_HEADER_BYTES or start + header_length > len(data):
        raise ValueError("truncated header")
    try:
        header = decode_cbor(data[start:start + header_length], "state_header")
    except Rejected:
        raise ValueError("unreadable header") from None
    if not isinstance(header, Mapping):
        raise ValueError("unreadable header")
    counts = header.get("counts")
    fields = [header.get(name) for name in ("version", "issued_at", "expires_at")]
    if not (isinstance(counts, Mapping) and all(type(v) is int and v >= 0 for v in (*fields, *counts.values()))
            and isinstance(header.get("digest"), bytes) and isinstance(header.get("body_sha256"), bytes)):
        raise ValueError("unreadable header")
    body = memoryview(data)[start + header_length:]
    sizes = [counts.get(str(t), 0) * HASH_BYTES for t in HashType]
    if sum(sizes) != len(body):
        raise ValueError(f"{len(body)} bytes of hashes, the header announces {sum(sizes)}: truncated or damaged")
    if hashlib.sha256(body).digest() != header["body_sha256"]:
        raise ValueError("the hashes do not match their SHA-256: damaged")
    arrays, offset = {}, 0
    for hash_type, size in zip(HashType, sizes, strict=True):
        arrays[hash_type] = np.frombuffer(body[offset:offset + size], dtype=_DTYPE)
        offset += size
    version, issued_at, expires_at = header["version"], header["issued_at"], header["expires_at"]  # ints: checked
    return RevocationList(version, issued_at, expires_at, header["digest"], RevocationIndex(arrays))

