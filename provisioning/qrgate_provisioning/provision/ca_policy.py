"""The device CA's policy: what a request must be before anything is signed, each refusal a ``DeviceCAError``
with a named ``reason``:


    bad_request        no technician or software version, an unknown action, a validity outside 1..397 days
    bad_gate_id        not a gate id (qrgate.config's id pattern)
    reserved_id        ``site-...``: the CN of a site's bridge at the provincial broker (brokerconf.bridge_user)
    not_in_inventory   the inventory does not name this gate
    bad_csr            not a PEM CSR (or larger than 16 KiB)
    bad_signature      the CSR's self-signature does not verify: whoever sent it does not hold the key
    weak_key           not an EC P-256 or P-384 key
    subject_mismatch   the CSR's subject is not exactly CN=<gate id>
    already_active     provision: the gate already has an active certificate (renew, replace or revoke it)
    not_active         renew, replace, revoke: the gate has no active certificate
    key_not_rotated    renew: the CSR carries the key of the certificate being renewed
    key_reused         the CSR's public key was certified before (for this gate or another)
    ca_expired         the CA's own certificate is not valid now
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from qrgate.config import ID_PATTERN  # the gate's own rule for its id, so both sides agree
from qrgate.errors import QrgateError

from .registry import Action, IssuedRecord, Transaction

MAX_CSR_BYTES = 16 * 1024
ACCEPTED_CURVES = frozenset({"secp256r1", "secp384r1"})
RESERVED_PREFIX = "site-"  # brokerconf.bridge_user: a site bridge's CN at the provincial broker
_GATE_ID = re.compile(ID_PATTERN)
ACTIONS: tuple[Action, ...] = ("provision", "renew", "replace")


class DeviceCAError(QrgateError):
    """The device CA refused a request or cannot be opened; ``reason`` names why (see the module's docstring)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


# ---- policy checks ------------------------------------------------------------------------------


def check_fields(action: str, technician: str, software_version: str) -> None:
    if action not in ACTIONS:
        raise DeviceCAError("bad_request", f"action {action!r} is not one of {', '.join(ACTIONS)}")
    if not isinstance(technician, str) or not technician.strip():
        raise DeviceCAError("bad_request", "no technician: the audit log records who asked for every certificate")
    if not isinstance(software_version, str) or not software_version.strip():
        raise DeviceCAError("bad_request", "no software_version: the audit log records what each gate runs")


def check_gate_id(gate_id: str) -> None:
    if not isinstance(gate_id, str) or not _GATE_ID.fullmatch(gate_id):
        raise DeviceCAError("bad_gate_id", f"{gate_id!r} is not a gate id: 1-64 of A-Z a-z 0-9 _ . - starting "
                            "with a letter or digit")
    if gate_id.startswith(RESERVED_PREFIX):
        raise DeviceCAError("reserved_id", f"{gate_id!r}: ids starting with {RESERVED_PREFIX!r} are the CNs of "
                            "site bridges at the provincial broker; a gate cannot carry one")


def check_csr(csr_pem: bytes, gate_id: str) -> x509.CertificateSigningRequest:
    if not isinstance(csr_pem, bytes) or len(csr_pem) > MAX_CSR_BYTES:
        raise DeviceCAError("bad_csr", f"a CSR is PEM bytes of at most {MAX_CSR_BYTES} bytes")
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError as exc:
        raise DeviceCAError("bad_csr", "not a PEM certificate signing request") from exc
    try:
        public_key = csr.public_key()
    except (ValueError, TypeError) as exc:  # an unsupported key type
        raise DeviceCAError("weak_key", "the CSR's public key is of a type the CA does not accept") from exc
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or public_key.curve.name not in ACCEPTED_CURVES:
        raise DeviceCAError("weak_key", f"the CSR's key is {describe_key(public_key)}; the CA accepts EC P-256 "
                            "(what qrgate identity new makes) or P-384 only")
    try:
        valid = csr.is_signature_valid
    except (ValueError, TypeError, x509.UnsupportedGeneralNameType):
        valid = False
    if not valid:
        raise DeviceCAError("bad_signature", "the CSR's signature does not verify with its own public key")
    attributes = [attribute for rdn in csr.subject.rdns for attribute in rdn]
    cn = attributes[0].value if len(attributes) == 1 and attributes[0].oid == NameOID.COMMON_NAME else None
    if cn != gate_id:
        raise DeviceCAError("subject_mismatch", f"the CSR's subject is {csr.subject.rfc4514_string()!r}, not "
                            f"exactly CN={gate_id}")
    return csr


def check_state(action: Action, gate_id: str, active: IssuedRecord | None, key_fingerprint: str,
                 tx: Transaction) -> None:
    if action == "provision" and active is not None:
        raise DeviceCAError("already_active", f"{gate_id!r} already has an active certificate (serial "
                            f"{serial_hex(active.serial)}, {active.action} on {iso_utc(active.issued_at)} by "
                            f"{active.technician}): renew or replace it, or revoke it first")
    if action in ("renew", "replace") and active is None:
        raise DeviceCAError("not_active", f"{gate_id!r} has no active certificate to {action}: provision it")
    if action == "renew" and active is not None and active.key_fingerprint == key_fingerprint:
        raise DeviceCAError("key_not_rotated", f"the CSR carries the key of {gate_id!r}'s current certificate: "
                            "a renewal certifies a new key generated on the gate")
    earlier = tx.by_key(key_fingerprint)
    if earlier is not None:
        raise DeviceCAError("key_reused", f"this public key was certified before (serial {serial_hex(earlier.serial)}, "
                            f"gate {earlier.gate_id!r}): a certificate is issued for a fresh key only")


def describe_key(public_key: object) -> str:
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return f"EC {public_key.curve.name}"
    size = getattr(public_key, "key_size", None)
    return type(public_key).__name__.removesuffix("PublicKey").lstrip("_") + (f" {size}" if size else "")


# ---- encodings ------------------------------------------------------------------------------------


def spki_der(public_key: object) -> bytes:
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def public_key_fingerprint(public_key: ec.EllipticCurvePublicKey) -> str:
    return hashlib.sha256(spki_der(public_key)).hexdigest()


def certificate_fingerprint(certificate: x509.Certificate) -> str:
    return certificate.fingerprint(hashes.SHA256()).hex()


def serial_hex(serial: int) -> str:
    return format(serial, "x")


def iso_utc(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")
