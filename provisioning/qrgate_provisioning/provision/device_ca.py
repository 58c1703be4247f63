"""The site's device CA: it signs a gate's CSR only by policy, records what it issued, revokes, and builds the CRL.

A gate's private key is generated on the gate (``qrgate identity new``) and never leaves it; the provisioner
brings its CSR here. ``DeviceCA.sign`` certifies it as the gate's identity, the certificate's CN being the
gate id, which the site broker takes as the MQTT username (``use_identity_as_username``) and which its ACL
confines to ``qrgate/v1/device/<CN>/#``. So signing is deny by default: a stolen laptop or a typo must not
mint a second identity. Each refusal is a ``DeviceCAError`` with a named ``reason``:

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

Opening or creating the CA fails with ``ca_exists`` (create never overwrites), ``missing``,
``registry_missing`` (never silently a new, empty registry), ``key_permissions`` (the key is readable by
group or others, or not a regular file), ``dir_permissions``, ``bad_key``, ``bad_certificate``, ``not_a_ca``
or ``key_mismatch``; a registry or audit log that cannot be written, with ``registry`` or ``audit_log``.

Every issuance, revocation, CRL and refusal is appended to the audit log (``audit.AuditLog``) before the
registry transaction commits: if the log cannot be written, nothing is issued, and the log may name a
certificate that was never handed out but never misses one that was.

Lifecycle: ``provision`` needs no active certificate; ``renew`` (a new key on the device, before expiry) and
``replace`` (a broken SD card: same gate id, new key) need one, and revoke it in the same transaction that
records the new one. A renewal revokes the old certificate at once, reason superseded, with no grace period:
the old key is gone from the device, so only a copy elsewhere could still use it, and the gate keeps its old
certificate working until the broker reloads the CRL anyway (see below). A replacement revokes with reason
keyCompromise: the old card may be readable by whoever holds it, and nobody can show its key was destroyed.
``revoke`` (decommission) revokes the active certificate, by default with reason cessationOfOperation.

Revocation reaches the broker through its ``crlfile`` (``write_crl``; brokerconf renders the option).
Measured with Debian 12's mosquitto 2.0.11 (tests/test_broker_crl.py): the CRL is read at start and re-read
on SIGHUP (``systemctl reload mosquitto``), which keeps connected clients; a revoked certificate is then
refused at the TLS handshake. A connection already open stays open until it ends: restart the broker to cut
it. A CRL past its nextUpdate makes OpenSSL refuse *every* client ("certificate expired"), so the province
must deliver a fresh CRL and reload well within ``next_update_days`` (default 30), e.g. weekly. A listener's
crlfile must also hold a CRL for every CA in its cafile: a client of a CA without one is refused.

Why the ``cryptography`` library rather than the openssl command line: the policy checks need the parsed
CSR (signature, key type, exact subject) in Python anyway; the CA key stays in this process instead of
passing through command lines, temporary config files and ``openssl ca``'s index.txt/serial files (whose
state would duplicate, and could contradict, the registry); and the behaviour does not change with the
installed OpenSSL's version or configuration. cryptography is already a core dependency of qrgate.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import sqlite3
import stat
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from qrgate.config import _ID_PATTERN  # the gate's own rule for its id, so both sides agree
from qrgate.errors import QrgateError

from .audit import AUDIT_FILE_NAME, AuditLog, AuditLogError
from .registry import REGISTRY_FILE_NAME, Action, CrlState, IssuedRecord, Registry, RegistryError, Transaction

CA_KEY_FILE_NAME = "ca.key"
CA_CERT_FILE_NAME = "ca.pem"
CA_VALIDITY_DAYS = 3653  # ten years
MAX_VALIDITY_DAYS = 397  # the longest a device certificate lives (the CA/Browser Forum's limit, as a habit)
DEFAULT_CRL_DAYS = 30
MAX_CRL_DAYS = 366
# A device certificate is valid from an hour before it is issued: a broker whose clock lags a little
# still accepts it. The gate's own clock does not matter (the broker checks client certificates).
BACKDATE = timedelta(hours=1)
MAX_CSR_BYTES = 16 * 1024
ACCEPTED_CURVES = frozenset({"secp256r1", "secp384r1"})
RESERVED_PREFIX = "site-"  # brokerconf.bridge_user: a site bridge's CN at the provincial broker
ACTIONS: tuple[Action, ...] = ("provision", "renew", "replace")

RevocationReason = Literal["key_compromise", "superseded", "cessation_of_operation", "affiliation_changed",
                           "unspecified"]
_REASON_FLAGS: dict[str, x509.ReasonFlags] = {
    "key_compromise": x509.ReasonFlags.key_compromise,
    "superseded": x509.ReasonFlags.superseded,
    "cessation_of_operation": x509.ReasonFlags.cessation_of_operation,
    "affiliation_changed": x509.ReasonFlags.affiliation_changed,
    "unspecified": x509.ReasonFlags.unspecified,
}
# What revokes the certificate a renewal or a replacement supersedes (see the module's docstring).
REVOCATION_REASON_OF: dict[Action, RevocationReason] = {"renew": "superseded", "replace": "key_compromise"}

Clock = Callable[[], datetime]
_T = TypeVar("_T")
_AUDIT_KEYS = ("action", "outcome", "gate_id", "serial", "fingerprint", "technician", "software_version", "reason")
_GATE_ID = re.compile(_ID_PATTERN)


class DeviceCAError(QrgateError):
    """The device CA refused a request or cannot be opened; ``reason`` names why (see the module's docstring)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


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
        certificate = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE).not_valid_after(now + timedelta(days=CA_VALIDITY_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
            ), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        try:
            # O_EXCL: two technicians creating the same CA at once cannot both write a key.
            _write_new(directory / CA_KEY_FILE_NAME, key_pem, 0o600)
            _write_new(directory / CA_CERT_FILE_NAME, certificate.public_bytes(serialization.Encoding.PEM), 0o644)
            registry = Registry.create(directory / REGISTRY_FILE_NAME)
        except FileExistsError as exc:
            raise DeviceCAError("ca_exists", f"{exc.filename}: created meanwhile by another process") from exc
        ca = cls(directory, key, certificate, registry, AuditLog(directory / AUDIT_FILE_NAME), clock)
        ca._append({"action": "create_ca", "outcome": "created", "ca": name, "serial": _hex(certificate.serial_number),
                    "fingerprint": _fingerprint(certificate), "not_after": _iso(certificate.not_valid_after_utc)})
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
        key = _read_ca_key(key_path)
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
        if _spki(key.public_key()) != _spki(certificate.public_key()):
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
            _check_fields(action, technician, software_version)
            if not 1 <= validity_days <= MAX_VALIDITY_DAYS:
                raise DeviceCAError("bad_request",
                                    f"validity_days {validity_days} is not within 1..{MAX_VALIDITY_DAYS}")
            _check_gate_id(gate_id)
            if isinstance(inventory_ids, str | bytes):  # "gate-a" in "gate-ab" would be True
                raise DeviceCAError("bad_request", "inventory_ids must be a collection of gate ids, not a string")
            if gate_id not in inventory_ids:
                raise DeviceCAError("not_in_inventory", f"{gate_id!r} is not in the inventory: the CA signs only "
                                    "for gates the inventory names")
            csr = _check_csr(csr_pem, gate_id)
            public_key = csr.public_key()
            assert isinstance(public_key, ec.EllipticCurvePublicKey)  # _check_csr allows nothing else
            key_fingerprint = entry["key_fingerprint"] = _key_fingerprint(public_key)
            now = self._now()
            self._check_ca_valid(now)
            with self._transaction() as tx:
                active = tx.active(gate_id)
                _check_state(action, gate_id, active, key_fingerprint, tx)
                record = self._issue(gate_id, public_key, now, validity_days, action, technician, software_version)
                if active is not None:  # first: the schema allows one active certificate per gate
                    tx.revoke(active.serial, REVOCATION_REASON_OF[action], now)
                tx.insert(record)
                self._append({**entry, "outcome": "issued", "serial": _hex(record.serial),
                              "fingerprint": record.fingerprint, "not_after": _iso(record.not_after)})
                if active is not None:
                    self._append({**entry, "outcome": "revoked", "serial": _hex(active.serial),
                                  "fingerprint": active.fingerprint, "key_fingerprint": active.key_fingerprint,
                                  "reason": REVOCATION_REASON_OF[action], "superseded_by": _hex(record.serial)})
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
            _check_gate_id(gate_id)
            csr = _check_csr(csr_pem, gate_id)
            public_key = csr.public_key()
            assert isinstance(public_key, ec.EllipticCurvePublicKey)
            entry["key_fingerprint"] = _key_fingerprint(public_key)
        except DeviceCAError as refusal:
            self._refused(entry, refusal)
            raise
        active = self.active(gate_id)
        if active is None or active.key_fingerprint != entry["key_fingerprint"]:
            return None
        self._append({**entry, "outcome": "resent", "serial": _hex(active.serial), "fingerprint": active.fingerprint})
        return self._issued(active)

    def revoke(self, gate_id: str, reason: RevocationReason = "cessation_of_operation", *, technician: str,
               software_version: str) -> IssuedRecord:
        """Revoke ``gate_id``'s active certificate (decommission; ``key_compromise`` for a stolen gate).

        Returns the revoked record. The broker refuses it once it has a CRL made after this (``write_crl``).
        """
        entry: dict[str, object] = {"action": "decommission", "gate_id": gate_id, "technician": technician,
                                    "software_version": software_version, "reason": reason}
        try:
            _check_fields("provision", technician, software_version)
            if reason not in _REASON_FLAGS:
                raise DeviceCAError("bad_request",
                                    f"revocation reason {reason!r} is not one of {', '.join(_REASON_FLAGS)}")
            _check_gate_id(gate_id)  # no inventory check: revoking is always allowed, it only takes away
            now = self._now()
            with self._transaction() as tx:
                active = tx.active(gate_id)
                if active is None:
                    raise DeviceCAError("not_active", f"{gate_id!r} has no active certificate to revoke")
                tx.revoke(active.serial, reason, now)
                self._append({**entry, "outcome": "revoked", "serial": _hex(active.serial),
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
            builder = (
                x509.CertificateRevocationListBuilder().issuer_name(self.certificate.subject)
                .last_update(last_update).next_update(next_update)
                .add_extension(x509.CRLNumber(number), critical=False)
                .add_extension(self._authority_key_identifier(), critical=False)
            )
            revoked = tx.revoked()
            for record in revoked:
                assert record.revoked_at is not None  # the schema's CHECK
                entry = x509.RevokedCertificateBuilder().serial_number(record.serial).revocation_date(record.revoked_at)
                flag = _REASON_FLAGS.get(record.revocation_reason or "unspecified", x509.ReasonFlags.unspecified)
                if flag is not x509.ReasonFlags.unspecified:  # RFC 5280 5.3.1: unspecified is left out
                    entry = entry.add_extension(x509.CRLReason(flag), critical=False)
                builder = builder.add_revoked_certificate(entry.build())
            crl = builder.sign(self._key, hashes.SHA256())
            tx.set_crl_state(CrlState(number, last_update))
            self._append({"action": "crl", "outcome": "signed", "crl_number": number, "revoked": len(revoked),
                          "next_update": _iso(next_update)})
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
                                f"{_iso(self.certificate.not_valid_before_utc)} to "
                                f"{_iso(self.certificate.not_valid_after_utc)}, not now ({_iso(now)})")

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
        certificate = (
            x509.CertificateBuilder()
            # The subject is built from the gate id, never copied from the CSR; nor are the CSR's extensions.
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, gate_id)]))
            .issuer_name(self.certificate.subject).public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before).not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False,
            ), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(self._authority_key_identifier(), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        return IssuedRecord(
            gate_id=gate_id, serial=certificate.serial_number, fingerprint=_fingerprint(certificate),
            key_fingerprint=_key_fingerprint(public_key), not_before=certificate.not_valid_before_utc,
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
        line: dict[str, object] = {"time": _iso(self._now()), **dict.fromkeys(_AUDIT_KEYS), **entry}
        try:
            self.audit.append(line)
        except AuditLogError as exc:
            raise DeviceCAError("audit_log", str(exc)) from exc

    def _refused(self, entry: dict[str, object], refusal: DeviceCAError) -> None:
        if refusal.reason in ("audit_log", "registry"):
            return  # the log itself (or the registry) failed: there is nothing sound to add
        self._append({**entry, "outcome": "refused", "reason": refusal.reason, "detail": str(refusal)})


# ---- policy checks ------------------------------------------------------------------------------


def _check_fields(action: str, technician: str, software_version: str) -> None:
    if action not in ACTIONS:
        raise DeviceCAError("bad_request", f"action {action!r} is not one of {', '.join(ACTIONS)}")
    if not isinstance(technician, str) or not technician.strip():
        raise DeviceCAError("bad_request", "no technician: the audit log records who asked for every certificate")
    if not isinstance(software_version, str) or not software_version.strip():
        raise DeviceCAError("bad_request", "no software_version: the audit log records what each gate runs")


def _check_gate_id(gate_id: str) -> None:
    if not isinstance(gate_id, str) or not _GATE_ID.fullmatch(gate_id):
        raise DeviceCAError("bad_gate_id", f"{gate_id!r} is not a gate id: 1-64 of A-Z a-z 0-9 _ . - starting "
                            "with a letter or digit")
    if gate_id.startswith(RESERVED_PREFIX):
        raise DeviceCAError("reserved_id", f"{gate_id!r}: ids starting with {RESERVED_PREFIX!r} are the CNs of "
                            "site bridges at the provincial broker; a gate cannot carry one")


def _check_csr(csr_pem: bytes, gate_id: str) -> x509.CertificateSigningRequest:
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
        raise DeviceCAError("weak_key", f"the CSR's key is {_describe(public_key)}; the CA accepts EC P-256 "
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


def _check_state(action: Action, gate_id: str, active: IssuedRecord | None, key_fingerprint: str,
                 tx: Transaction) -> None:
    if action == "provision" and active is not None:
        raise DeviceCAError("already_active", f"{gate_id!r} already has an active certificate (serial "
                            f"{_hex(active.serial)}, {active.action} on {_iso(active.issued_at)} by "
                            f"{active.technician}): renew or replace it, or revoke it first")
    if action in ("renew", "replace") and active is None:
        raise DeviceCAError("not_active", f"{gate_id!r} has no active certificate to {action}: provision it")
    if action == "renew" and active is not None and active.key_fingerprint == key_fingerprint:
        raise DeviceCAError("key_not_rotated", f"the CSR carries the key of {gate_id!r}'s current certificate: "
                            "a renewal certifies a new key generated on the gate")
    earlier = tx.by_key(key_fingerprint)
    if earlier is not None:
        raise DeviceCAError("key_reused", f"this public key was certified before (serial {_hex(earlier.serial)}, "
                            f"gate {earlier.gate_id!r}): a certificate is issued for a fresh key only")


def _describe(public_key: object) -> str:
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return f"EC {public_key.curve.name}"
    size = getattr(public_key, "key_size", None)
    return type(public_key).__name__.removesuffix("PublicKey").lstrip("_") + (f" {size}" if size else "")


# ---- files ----------------------------------------------------------------------------------------


def _read_ca_key(path: Path) -> ec.EllipticCurvePrivateKey:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError as exc:
        raise DeviceCAError("missing", f"{path}: the CA key is missing") from exc
    except OSError as exc:  # ELOOP: a symbolic link
        raise DeviceCAError("key_permissions", f"{path}: cannot open the CA key as a plain file: "
                            f"{exc.strerror or exc}") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise DeviceCAError("key_permissions", f"{path}: the CA key is not a regular file")
        if info.st_mode & 0o077:
            raise DeviceCAError("key_permissions", f"{path} is mode {stat.S_IMODE(info.st_mode):04o}: group or "
                                f"others can use the CA key; chmod 600 {path} (and ask who copied it)")
        with os.fdopen(os.dup(fd), "rb") as file:
            pem = file.read()
    finally:
        os.close(fd)
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:  # the message would not hold key bytes, but none is needed
        raise DeviceCAError("bad_key", f"{path}: not an unencrypted PEM private key") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise DeviceCAError("bad_key", f"{path}: the CA key is not an EC key")
    return key


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` with ``mode`` from the first byte (O_EXCL: FileExistsError if it is there) and fsync it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)  # whatever the umask
        _write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` so a reader sees the old file or the new one, never a part."""
    scratch = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        _write_new(scratch, data, mode)
        os.replace(scratch, path)
    except BaseException:
        scratch.unlink(missing_ok=True)
        raise
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    written = 0
    while written < len(data):
        written += os.write(fd, data[written:])


# ---- encodings ------------------------------------------------------------------------------------


def _spki(public_key: object) -> bytes:
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _key_fingerprint(public_key: ec.EllipticCurvePublicKey) -> str:
    return hashlib.sha256(_spki(public_key)).hexdigest()


def _fingerprint(certificate: x509.Certificate) -> str:
    return certificate.fingerprint(hashes.SHA256()).hex()


def _hex(serial: int) -> str:
    return format(serial, "x")


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")
