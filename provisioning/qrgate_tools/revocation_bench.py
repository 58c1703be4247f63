"""``qrgate bench`` figures for revocation at scale: a signed snapshot of a million random hashes.

Measured: building the index from the hashes (time, and peak memory traced by ``tracemalloc``, which
sees numpy's buffers), the memory the index keeps, one lookup (median and 99th percentile, hits and
misses), and what the gate pays when such a list arrives and when it starts: ``TrustUpdates.offer``
(signature check, CBOR decode, sort, atomic save) and loading the saved state.
"""

from __future__ import annotations

import logging
import statistics
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np

from qrgate.passes.revocation import HASH_BYTES, HashType, RevocationIndex
from qrgate.passes.signed_list import SignerKeys
from qrgate.passes.trust import TrustStore
from qrgate.trust_updates import TrustUpdates


def bench_revocation(n: int = 1_000_000, *, lookups: int = 20_000, seed: int = 7,
                     out: Callable[[str], None] | None = None) -> dict[str, float | int]:
    """Figures for an ``n``-entry revocation list; ``out`` (e.g. print) gets a readable summary."""
    # The issuer's tools sign the list, as in the tests; imported here so the gate never needs them to run.
    from qrgate_provisioning.trustlist import build_revocation_snapshot, new_list_signer, public_pem

    rng = np.random.default_rng(seed)
    hashes = rng.bytes(n * HASH_BYTES)

    start = time.perf_counter()
    index = RevocationIndex.from_hashes({HashType.UCI: hashes})
    build_s = time.perf_counter() - start
    tracemalloc.start()  # a second build, traced: tracing slows allocation, so it is not the one timed
    RevocationIndex.from_hashes({HashType.UCI: hashes})
    build_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()

    present = [hashes[i * HASH_BYTES:(i + 1) * HASH_BYTES] for i in rng.integers(0, n, lookups)]
    absent = [h for h in (rng.bytes(HASH_BYTES) for _ in range(lookups)) if not index.contains(HashType.UCI, h)]
    hit_us = _lookup_times(index, present)
    miss_us = _lookup_times(index, absent)

    signer = new_list_signer("EdDSA")
    now = int(time.time())
    entries = [hashes[offset:offset + HASH_BYTES] for offset in range(0, len(hashes), HASH_BYTES)]
    document = build_revocation_snapshot(signer, {HashType.UCI: entries}, version=1, issued_at=now,
                                         expires_at=now + 3600)
    del entries
    updates_log = logging.getLogger("qrgate.trust_updates")
    log_level = updates_log.level
    updates_log.setLevel(logging.ERROR)  # the bench's throw-away gates have no trust list, and would say so
    try:
        accept_s, accept_peak, load_s = _accept_and_load(document, public_pem(signer), now)
    finally:
        updates_log.setLevel(log_level)

    results: dict[str, float | int] = {
        "revocation_entries": n,
        "revocation_build_s": build_s,
        "revocation_build_peak_bytes": build_peak,
        "revocation_index_bytes": index.nbytes,
        "revocation_lookup_hit_us_median": statistics.median(hit_us),
        "revocation_lookup_hit_us_p99": _percentile(hit_us, 99),
        "revocation_lookup_miss_us_median": statistics.median(miss_us),
        "revocation_lookup_miss_us_p99": _percentile(miss_us, 99),
        "revocation_document_bytes": len(document),
        "revocation_accept_s": accept_s,
        "revocation_accept_peak_bytes": accept_peak,
        "revocation_load_s": load_s,
    }
    if out is not None:
        mib = 1024 * 1024
        out(f"revocation, {n:,} entries:")
        out(f"   index: built in {build_s * 1000:.0f} ms (peak {build_peak / mib:.1f} MiB traced), keeps "
            f"{index.nbytes / mib:.1f} MiB")
        out(f"   lookup: hit {results['revocation_lookup_hit_us_median']:.2f} µs median "
            f"({results['revocation_lookup_hit_us_p99']:.2f} p99), miss "
            f"{results['revocation_lookup_miss_us_median']:.2f} µs "
            f"({results['revocation_lookup_miss_us_p99']:.2f} p99)")
        out(f"   signed snapshot of {len(document) / mib:.1f} MiB: accepted in {accept_s * 1000:.0f} ms "
            f"(peak {accept_peak / mib:.1f} MiB traced), state loaded at start-up in {load_s * 1000:.0f} ms")
    return results


def _accept_and_load(document: bytes, signer_pem: bytes, now: int) -> tuple[float, int, float]:
    """Seconds for a gate to accept ``document``, the peak memory it traces doing so, and seconds to load the
    saved state at start-up. Includes the fsyncs, on the file system of the temporary directory."""
    with tempfile.TemporaryDirectory(prefix="qrgate-bench-") as workdir:
        pins = Path(workdir) / "pins"
        pins.mkdir()
        (pins / "list.pem").write_bytes(signer_pem)
        signers = SignerKeys.from_pem_dir(pins)

        def fresh(name: str) -> TrustUpdates:
            return TrustUpdates(Path(workdir) / name, provisioned_signers=signers, static_store=TrustStore())

        updates = fresh("state")
        start = time.perf_counter()
        acceptance = updates.offer(document, "bench", now)
        accept_s = time.perf_counter() - start
        if not acceptance.accepted:
            raise RuntimeError(f"the bench snapshot was refused: {acceptance.outcome} ({acceptance.detail})")
        start = time.perf_counter()
        reloaded = fresh("state")
        load_s = time.perf_counter() - start
        if reloaded.revocation_version != 1:
            raise RuntimeError("the saved revocation state did not load")

        tracemalloc.start()
        fresh("state-traced").offer(document, "bench", now)
        accept_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return accept_s, accept_peak, load_s


def _lookup_times(index: RevocationIndex, digests: list[bytes]) -> list[float]:
    contains, clock = index.contains, time.perf_counter_ns
    times = []
    for digest in digests:
        start = clock()
        contains(HashType.UCI, digest)
        times.append((clock() - start) / 1000.0)
    return times


def _percentile(values: list[float], percent: int) -> float:
    return statistics.quantiles(values, n=100)[percent - 1]
