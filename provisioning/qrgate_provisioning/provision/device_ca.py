"""The site's device CA: it signs a gate's CSR only by policy, records what it issued, revokes, and builds the CRL.

A gate's private key is generated on the gate (``qrgate identity new``) and never leaves it; the provisioner
brings its CSR here. ``DeviceCA.sign`` certifies it as the gate's identity, the certificate's CN being the
gate id, which the site broker takes as the MQTT username (``use_identity_as_username``) and which its ACL
confines to ``qrgate/v1/device/<CN>/#``. So signing is deny by default: a stolen laptop or a typo must not
mint a second identity. Each refusal is a ``DeviceCAError`` with a named ``reason`` (ca_policy.py lists them;
ca_files.py those of opening or creating the CA).

Every issuance, revocation, CRL and refusal is appended to the audit log (``audit.AuditLog``) before the
registry transaction commits: if the log cannot be written, nothing is issued, and the log may name a
certificate that was never handed out but never misses one that was.

Lifecycle: ``provision`` needs no active certificate; ``renew`` (a new key on the device, before expiry) and
``replace`` (a broken SD card: same gate id, new key) need one, and revoke it in the same transaction that
records the new one. A renewal revokes the old certificate at once, reason superseded, with no grace period:
the old key is gone from the device, so only a copy elsewhere could still use it, and the gate keeps its old
certificate working until the broker reloads the CRL anyway. A replacement revokes with reason
keyCompromise: the old card may be readable by whoever holds it, and nobody can show its key was destroyed.
``revoke`` (decommission) revokes the active certificate, by default with reason cessationOfOperation. The
revocation reaches the broker through its ``crlfile`` (``write_crl``; ca_certificates.py says how).
"""

from __future__ import annotations

import dataclasses
import os
import sqlite3
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from .audit import AUDIT_FILE_NAME, AuditLog, AuditLogError
from .ca_certificates import REASON_FLAGS, ca_certificate, gate_certificate, sign_crl
from .ca_files import read_ca_key, write_atomically, write_new
from .ca_policy import (
    ACTIONS,
    DeviceCAError,
    certificate_fingerprint,
    check_csr,
    check_fields,
    check_gate_id,
    check_state,
    iso_utc,
    public_key_fingerprint,
    serial_hex,
    spki_der,
)
from .registry import REGISTRY_FILE_NAME, Action, CrlState, IssuedRecord, Registry, RegistryError, Transaction

__all__ = ["ACTIONS", "Crl", "DeviceCA", "DeviceCAError", "Issued", "RevocationReason"]

CA_KEY_FILE_NAME = "ca.key"
CA_CERT_FILE_NAME = "ca.pem"
CA_VALIDITY_DAYS = 3653  # ten years
MAX_VALIDITY_DAYS = 397  # the longest a device certificate lives (the CA/Browser Forum's limit, as a habit)
DEFAULT_CRL_DAYS = 30
MAX_CRL_DAYS = 366
# A device certificate is valid from an hour before it is issued: a broker whose clock lags a little
# still accepts it. The gate's own clock does not matter (the broker checks client certificates).
BACKDATE = timedelta(hours=1)

RevocationReason = Literal["key_compromise", "superseded", "cessation_of_operation", "affiliation_changed",
                           "unspecified"]
# What revokes the certificate a renewal or a replacement supersedes (see the module's docstring).
REVOCATION_REASON_OF: dict[Action, RevocationReason] = {"renew": "superseded", "replace": "key_compromise"}

Clock = Callable[[], datetime]
_T = TypeVar("_T")
_AUDIT_KEYS = ("action", "outcome", "gate_id", "serial", "fingerprint", "technician", "software_version", "reason")


@dataclass(frozen=True, slots=True)
class Issued:
    """What goes back to the gate: its certificate and the CA chain (public material only)."""

    gate_id: str
    cert_pem: bytes
    chain_pem: bytes  # the device CA's certificate
    serial: int
    fingerprint: str  # SHA-256 of the certificate (DER), lower-case hex
    not_after: datetime


@dataclass(frozen=True, slots=True)
class Crl:
    pem: bytes
    number: int  # the cRLNumber extension: grows by one with every CRL
    last_update: datetime
    next_update: datetime  # past this, mosquitto refuses every client: deliver a new one before
    revoked_serials: tuple[int, ...]


class DeviceCA:
    """A device CA directory: ``ca.key`` (0600), ``ca.pem``, ``registry.sqlite``, ``audit.jsonl``.

    Make one with ``create``, use it with ``open``; the constructor is theirs.
    """

    def __init__(self, directory: Path, key: ec.EllipticCurvePrivateKey, certificate: x509.Certificate,
                 registry: Registry, audit: AuditLog, clock: Clock | None = None) -> None:
        self.directory = directory
        self._key = key
        self.certificate = certificate
        self._registry = registry
        self.audit = audit
        self._clock = clock or (lambda: datetime.now(UTC))

    def __repr__(self) -> str:  # never the key
        return f"DeviceCA({str(self.directory)!r}, {self.name!r})"

    # ---- the CA itself ------------------------------------------------------------------------

    @classmethod
    def create(cls, directory: Path, name: str, *, clock: Clock | None = None) -> DeviceCA:
        """A new CA in ``directory`` (created 0700): an EC P-256 key and a ten-year CA certificate named ``name``.

        Refuses (``ca_exists``) if the directory already holds a CA's file: a CA is never overwritten.
        """
        directory = Path(directory)
        if not name or len(name) > 64 or name != name.strip():
            raise DeviceCAError("bad_request", f"CA name {name!r}: 1-64 characters without surrounding spaces")
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
        existing = [n for n in (CA_KEY_FILE_NAME, CA_CERT_FILE_NAME, REGISTRY_FILE_NAME, AUDIT_FILE_NAME)
                    if (directory / n).exists()]
        if existing:
            raise DeviceCAError("ca_exists", f"{directory} already holds {', '.join(existing)}: a CA is never "
                                "overwritten (open it, or create the new CA in another directory)")
        now = (clock or (lambda: datetime.now(UTC)))().replace(microsecond=0)
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        certificate = ca_certificate(key, subject, now - BACKDATE, now + timedelta(days=CA_VALIDITY_DAYS))
        key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        try:
            # O_EXCL: two technicians creating the same CA at once cannot both write a key.
            write_new(directory / CA_KEY_FILE_NAME, key_pem, 0o600)
            write_new(directory / CA_CERT_FILE_NAME, certificate.public_bytes(serialization.Encoding.PEM), 0o644)
            registry = Registry.create(directory / REGISTRY_FILE_NAME)
        except FileExistsError as exc:
            raise DeviceCAError("ca_exists", f"{exc.filename}: created meanwhile by another process") from exc
        ca = cls(directory, key, certificate, registry, AuditLog(directory / AUDIT_FILE_NAME), clock)
        ca._append({"action": "create_ca", "outcome": "created", "ca": name,
                    "serial": serial_hex(certificate.serial_number),
                    "fingerprint": certificate_fingerprint(certificate),
                    "not_after": iso_utc(certificate.not_valid_after_utc)})
        return ca

    @classmethod
    def open(cls, directory: Path, *, clock: Clock | None = None) -> DeviceCA:
        """The CA in ``directory``; DeviceCAError if a file is missing (``missing``, ``registry_missing``),
        the key is readable by group or others or not a regular file (``key_permissions``), the directory is
        writable by others (``dir_permissions``), or the key does not belong to the certificate (``key_mismatch``)."""
        directory = Path(directory)
        key_path, cert_path = directory / CA_KEY_FILE_NAME, directory / CA_CERT_FILE_NAME
        if not directory.is_dir():
            raise DeviceCAError("missing", f"{directory}: no such CA directory")
        if directory.stat().st_mode & 0o022:
            raise DeviceCAError("dir_permissions", f"{directory}: writable by group or others, who could swap "
                                f"the CA's files: chmod 700 {directory}")
        key = read_ca_key(key_path)
        try:
            certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
        except FileNotFoundError as exc:
            raise DeviceCAError("missing", f"{cert_path}: the CA certificate is missing") from exc
        except ValueError as exc:
            raise DeviceCAError("bad_certificate", f"{cert_path}: not a PEM certificate") from exc
        try:
            constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
        except x509.ExtensionNotFound:
            constraints = None
        if constraints is None or not constraints.ca:
            raise DeviceCAError("not_a_ca", f"{cert_path}: not a CA certificate (no BasicConstraints CA:TRUE)")
        if spki_der(key.public_key()) != spki_der(certificate.public_key()):
            raise DeviceCAError("key_mismatch", f"{key_path} is not the key of {cert_path}")
        try:
            registry = Registry.open(directory / REGISTRY_FILE_NAME)
        except RegistryError as exc:
            # Never start a new, empty registry here: it would let every gate be provisioned a second time.
            raise DeviceCAError("registry_missing", f"{exc} (the CA refuses to sign without its registry)") from exc
        return cls(directory, key, certificate, registry, AuditLog(directory / AUDIT_FILE_NAME), clock)

    @property
    def name(self) -> str:
        names = self.certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        return str(names[0].value) if names else self.certificate.subject.rfc4514_string()

    @property
    def chain_pem(self) -> bytes:
        """The CA certificate, PEM: the chain a gate installs beside its own certificate."""
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    # ---- issuing ------------------------------------------------------------------------------

    def sign(self, csr_pem: bytes, *, gate_id: str, inventory_ids: Collection[str], action: Action,
             technician: str, software_version: str, validity_days: int = MAX_VALIDITY_DAYS) -> Issued:
        """Certify the CSR as ``gate_id``'s identity, if the policy allows; DeviceCAError (logged) if not."""
        entry: dict[str, object] = {"action": action, "gate_id": gate_id, "technician": technician,
                                    "software_version": software_version}
        try:
            check_fields(action, technician, software_version)
            if not 1 <= validity_days <= MAX_VALIDITY_DAYS:
                raise DeviceCAError("bad_request",
                                    f"validity_days {validity_days} is not within 1..{MAX_VALIDITY_DAYS}")
            check_gate_id(gate_id)
            if isinstance(inventory_ids, str | bytes):  # "gate-a" in "gate-ab" would be True
                raise DeviceCAError("bad_request", "inventory_ids must be a collection of gate ids, not a string")
            if gate_id not in inventory_ids:
                raise DeviceCAError("not_in_inventory", f"{gate_id!r} is not in the inventory: the CA signs only "
                                    "for gates the inventory names")
            csr = check_csr(csr_pem, gate_id)
            public_key = csr.public_key()
            assert isinstance(public_key, ec.EllipticCurvePublicKey)  # check_csr allows nothing else
            key_fingerprint = entry["key_fingerprint"] = public_key_fingerprint(public_key)
            now = self._now()
            self._check_ca_valid(now)
            with self._transaction() as tx:
                active = tx.active(gate_id)
                check_state(action, gate_id, active, key_fingerprint, tx)
                record = self._issue(gate_id, public_key, now, validity_days, action, technician, software_version)
                if active is not None:  # first: the schema allows one active certificate per gate
                    tx.revoke(active.serial, REVOCATION_REASON_OF[action], now)
                tx.insert(record)
                self._append({**entry, "outcome": "issued", "serial": serial_hex(record.serial),
                              "fingerprint": record.fingerprint, "not_after": iso_utc(record.not_after)})
                if active is not None:
                    self._append({**entry, "outcome": "revoked", "serial": serial_hex(active.serial),
                                  "fingerprint": active.fingerprint, "key_fingerprint": active.key_fingerprint,
                                  "reason": REVOCATION_REASON_OF[action], "superseded_by": serial_hex(record.serial)})
        except DeviceCAError as refusal:
            self._refused(entry, refusal)
            raise
        return self._issued(record)

    def already_issued(self, csr_pem: bytes, *, gate_id: str) -> Issued | None:
        """The active certificate of ``gate_id`` if it certifies exactly this CSR's key, else None.

        For a provisioner re-run after a dropped link: the gate re-prints the CSR of the key it already has
        (``qrgate identity csr``), and gets back the certificate issued for it, without a second identity.
        """
        entry: dict[str, object] = {"action": "resend", "gate_id": gate_id}
        try:
            check_gate_id(gate_id)
            csr = check_csr(csr_pem, gate_id)
            public_key = csr.public_key()
            assert isinstance(public_key, ec.EllipticCurvePublicKey)
            entry["key_fingerprint"] = public_key_fingerprint(public_key)
        except DeviceCAError as refusal:
            self._refused(entry, refusal)
            raise
        active = self.active(gate_id)
        if active is None or active.key_fingerprint != entry["key_fingerprint"]:
            return None
        self._append({**entry, "outcome": "resent", "serial": serial_hex(active.serial),
                      "fingerprint": active.fingerprint})
        return self._issued(active)

    def revoke(self, gate_id: str, reason: RevocationReason = "cessation_of_operation", *, technician: str,
               software_version: str) -> IssuedRecord:
        """Revoke ``gate_id``'s active certificate (decommission; ``key_compromise`` for a stolen gate).

        Returns the revoked record. The broker refuses it once it has a CRL made after this (``write_crl``).
        """
        entry: dict[str, object] = {"action": "decommission", "gate_id": gate_id, "technician": technician,
                                    "software_version": software_version, "reason": reason}
        try:
            check_fields("provision", technician, software_version)
            if reason not in REASON_FLAGS:
                raise DeviceCAError("bad_request",
                                    f"revocation reason {reason!r} is not one of {', '.join(REASON_FLAGS)}")
            check_gate_id(gate_id)  # no inventory check: revoking is always allowed, it only takes away
            now = self._now()
            with self._transaction() as tx:
                active = tx.active(gate_id)
                if active is None:
                    raise DeviceCAError("not_active", f"{gate_id!r} has no active certificate to revoke")
                tx.revoke(active.serial, reason, now)
                self._append({**entry, "outcome": "revoked", "serial": serial_hex(active.serial),
                              "fingerprint": active.fingerprint, "key_fingerprint": active.key_fingerprint})
        except DeviceCAError as refusal:
            self._refused(entry, refusal)
            raise
        return dataclasses.replace(active, status="revoked", revoked_at=now, revocation_reason=reason)

    # ---- the CRL ------------------------------------------------------------------------------

    def build_crl(self, *, next_update_days: int = DEFAULT_CRL_DAYS) -> Crl:
        """A CRL of every certificate this CA revoked, signed by it, with the next cRLNumber.

        Its thisUpdate is strictly later than the previous CRL's (OpenSSL picks the newest of two CRLs).
        """
        if not 1 <= next_update_days <= MAX_CRL_DAYS:
            raise DeviceCAError("bad_request", f"next_update_days {next_update_days} is not within 1..{MAX_CRL_DAYS}")
        now = self._now()
        with self._transaction() as tx:
            previous = tx.crl_state()
            last_update = now
            if previous is not None and last_update <= previous.last_update:
                last_update = previous.last_update + timedelta(seconds=1)
            number = 1 if previous is None else previous.number + 1
            next_update = last_update + timedelta(days=next_update_days)
            revoked = tx.revoked()
            crl = sign_crl(self._key, self.certificate, self._authority_key_identifier(), number, last_update,
                           next_update, revoked)
            tx.set_crl_state(CrlState(number, last_update))
            self._append({"action": "crl", "outcome": "signed", "crl_number": number, "revoked": len(revoked),
                          "next_update": iso_utc(next_update)})
        return Crl(crl.public_bytes(serialization.Encoding.PEM), number, last_update, next_update,
                   tuple(record.serial for record in revoked))

    def crl_pem(self, *, next_update_days: int = DEFAULT_CRL_DAYS) -> bytes:
        return self.build_crl(next_update_days=next_update_days).pem

    def write_crl(self, path: Path, *, next_update_days: int = DEFAULT_CRL_DAYS) -> Crl:
        """Build a CRL and put it at ``path`` atomically (mode 0644: mosquitto's user reads it; it is public).

        Then reload the broker (SIGHUP, ``systemctl reload mosquitto``) for it to take effect.
        """
        crl = self.build_crl(next_update_days=next_update_days)
        write_atomically(Path(path), crl.pem, 0o644)
        return crl

    # ---- the registry -------------------------------------------------------------------------

    def active(self, gate_id: str) -> IssuedRecord | None:
        """``gate_id``'s certificate that is not revoked (it may have expired), or None."""
        return self._registry_call(lambda: self._registry.active(gate_id))

    def records(self, gate_id: str | None = None) -> list[IssuedRecord]:
        """Every certificate issued (to ``gate_id``, or to any gate), oldest first."""
        return self._registry_call(lambda: self._registry.records(gate_id))

    # ---- internals ----------------------------------------------------------------------------

    def _now(self) -> datetime:
        return self._clock().astimezone(UTC).replace(microsecond=0)

    def _check_ca_valid(self, now: datetime) -> None:
        if not self.certificate.not_valid_before_utc <= now < self.certificate.not_valid_after_utc:
            raise DeviceCAError("ca_expired", f"the CA certificate is valid from "
                                f"{iso_utc(self.certificate.not_valid_before_utc)} to "
                                f"{iso_utc(self.certificate.not_valid_after_utc)}, not now ({iso_utc(now)})")

    def _authority_key_identifier(self) -> x509.AuthorityKeyIdentifier:
        try:
            ski = self.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        except x509.ExtensionNotFound:
            return x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key())
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)

    def _issue(self, gate_id: str, public_key: ec.EllipticCurvePublicKey, now: datetime, validity_days: int,
               action: Action, technician: str, software_version: str) -> IssuedRecord:
        not_before = max(now - BACKDATE, self.certificate.not_valid_before_utc)
        not_after = min(now + timedelta(days=validity_days), self.certificate.not_valid_after_utc)
        certificate = gate_certificate(self._key, self.certificate, self._authority_key_identifier(), gate_id,
                                       public_key, not_before, not_after)
        return IssuedRecord(
            gate_id=gate_id, serial=certificate.serial_number, fingerprint=certificate_fingerprint(certificate),
            key_fingerprint=public_key_fingerprint(public_key), not_before=certificate.not_valid_before_utc,
            not_after=certificate.not_valid_after_utc, issued_at=now, action=action, technician=technician,
            software_version=software_version, status="active", revoked_at=None, revocation_reason=None,
            cert_pem=certificate.public_bytes(serialization.Encoding.PEM),
        )

    def _issued(self, record: IssuedRecord) -> Issued:
        return Issued(record.gate_id, record.cert_pem, self.chain_pem, record.serial, record.fingerprint,
                      record.not_after)

    @contextmanager
    def _transaction(self) -> Iterator[Transaction]:
        """A registry transaction; a DeviceCAError raised in it rolls it back and passes through."""
        try:
            with self._registry.transaction() as tx:
                yield tx
        except (RegistryError, sqlite3.Error, OSError) as exc:
            raise DeviceCAError("registry", f"{self._registry.path}: {exc}") from exc

    def _registry_call(self, call: Callable[[], _T]) -> _T:
        try:
            return call()
        except (RegistryError, sqlite3.Error, OSError) as exc:
            raise DeviceCAError("registry", f"{self._registry.path}: {exc}") from exc

    def _append(self, entry: dict[str, object]) -> None:
        # The same keys on every line (null where they do not apply), so a reader can rely on them.
        line: dict[str, object] = {"time": iso_utc(self._now()), **dict.fromkeys(_AUDIT_KEYS), **entry}
        try:
            self.audit.append(line)
        except AuditLogError as exc:
            raise DeviceCAError("audit_log", str(exc)) from exc

    def _refused(self, entry: dict[str, object], refusal: DeviceCAError) -> None:
        if refusal.reason in ("audit_log", "registry"):
            return  # the log itself (or the registry) failed: there is nothing sound to add
        self._append({**entry, "outcome": "refused", "reason": refusal.reason, "detail": str(refusal)})
