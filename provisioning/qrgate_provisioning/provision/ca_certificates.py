"""What the device CA signs: its own certificate, a gate's, and the revocation list (with what the broker does
with it).

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

from collections.abc import Iterable
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .registry import IssuedRecord

REASON_FLAGS: dict[str, x509.ReasonFlags] = {
    "key_compromise": x509.ReasonFlags.key_compromise,
    "superseded": x509.ReasonFlags.superseded,
    "cessation_of_operation": x509.ReasonFlags.cessation_of_operation,
    "affiliation_changed": x509.ReasonFlags.affiliation_changed,
    "unspecified": x509.ReasonFlags.unspecified,
}


def sign_crl(key: ec.EllipticCurvePrivateKey, issuer: x509.Certificate, authority_key_id: x509.AuthorityKeyIdentifier,
             number: int, last_update: datetime, next_update: datetime,
             revoked: Iterable[IssuedRecord]) -> x509.CertificateRevocationList:
    """A CRL numbered ``number`` listing every ``revoked`` record, signed by ``key``."""
    builder = (
        x509.CertificateRevocationListBuilder().issuer_name(issuer.subject)
        .last_update(last_update).next_update(next_update)
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(authority_key_id, critical=False)
    )
    for record in revoked:
        assert record.revoked_at is not None  # the schema's CHECK
        entry = x509.RevokedCertificateBuilder().serial_number(record.serial).revocation_date(record.revoked_at)
        flag = REASON_FLAGS.get(record.revocation_reason or "unspecified", x509.ReasonFlags.unspecified)
        if flag is not x509.ReasonFlags.unspecified:  # RFC 5280 5.3.1: unspecified is left out
            entry = entry.add_extension(x509.CRLReason(flag), critical=False)
        builder = builder.add_revoked_certificate(entry.build())
    return builder.sign(key, hashes.SHA256())


def ca_certificate(key: ec.EllipticCurvePrivateKey, subject: x509.Name, not_before: datetime,
                   not_after: datetime) -> x509.Certificate:
    """The CA's own self-signed certificate: it signs gate certificates and CRLs, and no CA below it."""
    return (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before).not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=False, content_commitment=False, key_encipherment=False, data_encipherment=False,
            key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
        ), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )


def gate_certificate(ca_key: ec.EllipticCurvePrivateKey, ca: x509.Certificate,
                     authority_key_id: x509.AuthorityKeyIdentifier, gate_id: str,
                     public_key: ec.EllipticCurvePublicKey, not_before: datetime,
                     not_after: datetime) -> x509.Certificate:
    """A gate's client certificate: CN = its id (the broker's username), for TLS client authentication only."""
    return (
        x509.CertificateBuilder()
        # The subject is built from the gate id, never copied from the CSR; nor are the CSR's extensions.
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, gate_id)]))
        .issuer_name(ca.subject).public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before).not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
            key_agreement=False, key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False,
        ), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(authority_key_id, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
