"""The site's device CA (qrgate_provisioning.provision.device_ca) and the gate's side of it (``qrgate identity``).

Real parts only: keys, CSRs, certificates and CRLs made and parsed with cryptography, the registry's SQLite
file, the audit log's lines, file modes as the kernel reports them, and the gate's command as a subprocess.
"""

from __future__ import annotations

import datetime
import json
import os
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from qrgate import config
from qrgate_provisioning.provision import ca_files, ca_policy
from qrgate_provisioning.provision.device_ca import DeviceCA, DeviceCAError

INVENTORY = frozenset({"gate-a", "gate-b", "gate-c"})
WHO = dict(technician="lan.nguyen", software_version="qrgate 0.1.0")
AUDIT_FIELDS = {"time", "action", "gate_id", "fingerprint", "serial", "software_version", "technician"}


class Clock:
    """A settable clock for the CA (it truncates to seconds, as X.509 times do)."""

    def __init__(self) -> None:
        self.now = datetime.datetime.now(datetime.UTC)

    def __call__(self) -> datetime.datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += datetime.timedelta(**delta)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ca_dir(tmp_path: Path, clock: Clock) -> Path:
    DeviceCA.create(tmp_path / "ca", "market-1 device CA", clock=clock)
    return tmp_path / "ca"


@pytest.fixture
def ca(ca_dir: Path, clock: Clock) -> DeviceCA:
    return DeviceCA.open(ca_dir, clock=clock)


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def csr_for(cn: str | None, key: object = None, extra: list[x509.NameAttribute] | None = None) -> bytes:
    key = key if key is not None else new_key()
    attributes = ([x509.NameAttribute(NameOID.COMMON_NAME, cn)] if cn is not None else []) + (extra or [])
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(attributes))
    digest = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(key, digest).public_bytes(serialization.Encoding.PEM)  # type: ignore[arg-type]


def sign(ca: DeviceCA, csr: bytes, gate_id: str = "gate-a", action: str = "provision", **options: object):
    return ca.sign(csr, gate_id=gate_id, inventory_ids=INVENTORY, action=action, **{**WHO, **options})


def audit(ca: DeviceCA) -> list[dict[str, object]]:
    return list(ca.audit.entries())


def key_body(pem: bytes) -> list[str]:
    """The base64 lines of a PEM block: what would show if any part of the key leaked into a file."""
    return [line for line in pem.decode().splitlines() if line and not line.startswith("-----")]


# ---- the CA itself ------------------------------------------------------------------------------


def test_create_writes_a_p256_ca_key_0600_and_a_ten_year_ca_certificate(ca_dir: Path) -> None:
    assert stat.S_IMODE(ca_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((ca_dir / "ca.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((ca_dir / "registry.sqlite").stat().st_mode) == 0o600
    assert stat.S_IMODE((ca_dir / "audit.jsonl").stat().st_mode) == 0o600
    key = serialization.load_pem_private_key((ca_dir / "ca.key").read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    certificate = x509.load_pem_x509_certificate((ca_dir / "ca.pem").read_bytes())
    constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca and constraints.value.path_length == 0
    usage = certificate.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.key_cert_sign and usage.value.crl_sign and not usage.value.digital_signature
    lifetime = certificate.not_valid_after_utc - certificate.not_valid_before_utc
    assert datetime.timedelta(days=3650) < lifetime < datetime.timedelta(days=3660)
    certificate.verify_directly_issued_by(certificate)
    assert certificate.subject.rfc4514_string() == "CN=market-1 device CA"


def test_create_never_overwrites_an_existing_ca(ca_dir: Path) -> None:
    key_before = (ca_dir / "ca.key").read_bytes()
    with pytest.raises(DeviceCAError) as refused:
        DeviceCA.create(ca_dir, "another CA")
    assert refused.value.reason == "ca_exists"
    assert (ca_dir / "ca.key").read_bytes() == key_before


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660])
def test_open_refuses_a_ca_key_that_group_or_others_can_read(ca_dir: Path, mode: int) -> None:
    os.chmod(ca_dir / "ca.key", mode)
    with pytest.raises(DeviceCAError, match="chmod 600") as refused:
        DeviceCA.open(ca_dir)
    assert refused.value.reason == "key_permissions"


def test_open_refuses_a_symlinked_key_a_foreign_key_a_missing_file_and_a_missing_registry(ca_dir: Path,
                                                                                            tmp_path: Path) -> None:
    def reason() -> str:
        with pytest.raises(DeviceCAError) as refused:
            DeviceCA.open(ca_dir)
        assert "PRIVATE KEY" not in str(refused.value)
        return refused.value.reason

    original = (ca_dir / "ca.key").read_bytes()
    (ca_dir / "ca.key").rename(tmp_path / "moved.key")
    assert reason() == "missing"
    (ca_dir / "ca.key").symlink_to(tmp_path / "moved.key")
    assert reason() == "key_permissions"
    (ca_dir / "ca.key").unlink()
    foreign = new_key().private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())
    ca_files.write_new(ca_dir / "ca.key", foreign, 0o600)
    assert reason() == "key_mismatch"
    (ca_dir / "ca.key").unlink()
    ca_files.write_new(ca_dir / "ca.key", original, 0o600)
    DeviceCA.open(ca_dir)  # whole again
    # Without its registry the CA would let every gate be provisioned again: it refuses to start a new one.
    (ca_dir / "registry.sqlite").rename(tmp_path / "registry.sqlite")
    assert reason() == "registry_missing"
    (tmp_path / "registry.sqlite").rename(ca_dir / "registry.sqlite")
    os.chmod(ca_dir, 0o777)
    assert reason() == "dir_permissions"
    with pytest.raises(DeviceCAError) as refused:
        DeviceCA.open(tmp_path / "nowhere")
    assert refused.value.reason == "missing"


def test_the_ca_key_appears_in_no_file_but_its_own_and_not_in_repr(ca: DeviceCA, ca_dir: Path) -> None:
    sign(ca, csr_for("gate-a"))
    with pytest.raises(DeviceCAError):
        sign(ca, csr_for("gate-a"))  # a refusal is logged too
    ca.revoke("gate-a", **WHO)
    ca.write_crl(ca_dir / "crl.pem")
    body = key_body((ca_dir / "ca.key").read_bytes())
    for name in ("audit.jsonl", "registry.sqlite", "crl.pem", "ca.pem"):
        content = (ca_dir / name).read_bytes()
        assert b"PRIVATE KEY" not in content, name
        assert not any(line.encode() in content for line in body), name
    assert "PRIVATE" not in repr(ca) and str(ca_dir) in repr(ca)


def test_the_gate_id_rule_is_the_gates_own() -> None:
    assert ca_policy._GATE_ID.pattern == config.ID_PATTERN


# ---- signing ------------------------------------------------------------------------------------


def test_a_provisioned_certificate_is_a_client_certificate_for_exactly_the_gate_id(ca: DeviceCA, clock: Clock) -> None:
    key = new_key()
    issued = sign(ca, csr_for("gate-a", key))
    certificate = x509.load_pem_x509_certificate(issued.cert_pem)
    certificate.verify_directly_issued_by(ca.certificate)
    assert issued.chain_pem == ca.chain_pem == ca.certificate.public_bytes(serialization.Encoding.PEM)
    assert certificate.subject.rfc4514_string() == "CN=gate-a"
    assert certificate.issuer == ca.certificate.subject
    assert certificate.public_key().public_numbers() == key.public_key().public_numbers()
    extensions = certificate.extensions
    assert extensions.get_extension_for_class(x509.ExtendedKeyUsage).value == x509.ExtendedKeyUsage(
        [ExtendedKeyUsageOID.CLIENT_AUTH])
    usage = extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature
    assert not (usage.value.key_cert_sign or usage.value.crl_sign or usage.value.key_encipherment)
    assert extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value == \
        x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    assert extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier == \
        ca.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    assert {type(extension.value) for extension in extensions} == {
        x509.BasicConstraints, x509.KeyUsage, x509.ExtendedKeyUsage, x509.SubjectKeyIdentifier,
        x509.AuthorityKeyIdentifier}
    assert issued.serial == certificate.serial_number and issued.serial.bit_length() > 64
    assert issued.fingerprint == certificate.fingerprint(hashes.SHA256()).hex()
    assert issued.not_after == certificate.not_valid_after_utc
    assert abs(issued.not_after - (clock.now + datetime.timedelta(days=397))) < datetime.timedelta(seconds=2)
    assert certificate.not_valid_before_utc < clock.now  # backdated for a broker whose clock lags


def test_the_subject_and_extensions_come_from_the_ca_never_from_the_csr(ca: DeviceCA) -> None:
    key = new_key()
    sneaky = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gate-a")]))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("province.example")]), critical=False)
        .sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
    )
    certificate = x509.load_pem_x509_certificate(sign(ca, sneaky).cert_pem)
    assert certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    with pytest.raises(x509.ExtensionNotFound):
        certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)


def tampered(csr: bytes) -> bytes:
    """The same CSR with one bit of its signature flipped: it still parses, and no longer verifies."""
    der = bytearray(x509.load_pem_x509_csr(csr).public_bytes(serialization.Encoding.DER))
    der[-1] ^= 0x01
    request = x509.load_der_x509_csr(bytes(der))
    return request.public_bytes(serialization.Encoding.PEM)


REFUSALS = [
    # (what the request does wrong, keyword changes to sign(), reason)
    ("no technician", dict(technician=" "), "bad_request"),
    ("no software version", dict(software_version=""), "bad_request"),
    ("an unknown action", dict(action="mint"), "bad_request"),
    ("a validity beyond 397 days", dict(validity_days=398), "bad_request"),
    ("a validity of 0 days", dict(validity_days=0), "bad_request"),
    ("a gate id with a slash", dict(gate_id="gate/a", csr=csr_for("gate/a")), "bad_gate_id"),
    ("an empty gate id", dict(gate_id=""), "bad_gate_id"),
    ("a site bridge's CN", dict(gate_id="site-market-1", csr=csr_for("site-market-1"),
                                inventory_ids={"site-market-1"}), "reserved_id"),
    ("a gate the inventory does not name", dict(gate_id="gate-z", csr=csr_for("gate-z")), "not_in_inventory"),
    ("a typo in the gate id", dict(gate_id="gate-aa", csr=csr_for("gate-aa")), "not_in_inventory"),
    ("an inventory given as one string", dict(inventory_ids="gate-abc"), "bad_request"),
    ("garbage", dict(csr=b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"),
     "bad_csr"),
    ("a huge blob", dict(csr=b"A" * 20_000), "bad_csr"),
    ("a tampered signature", dict(csr=tampered(csr_for("gate-a"))), "bad_signature"),
    ("an RSA key", dict(csr=csr_for("gate-a", rsa.generate_private_key(65537, 2048))), "weak_key"),
    ("a P-521 key", dict(csr=csr_for("gate-a", ec.generate_private_key(ec.SECP521R1()))), "weak_key"),
    ("an Ed25519 key", dict(csr=csr_for("gate-a", ed25519.Ed25519PrivateKey.generate())), "weak_key"),
    ("another gate's CN", dict(csr=csr_for("gate-b")), "subject_mismatch"),
    ("a CN with a different case", dict(csr=csr_for("Gate-A")), "subject_mismatch"),
    ("extra subject attributes", dict(csr=csr_for("gate-a", extra=[
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "x")])), "subject_mismatch"),
    ("no CN at all", dict(csr=csr_for(None, extra=[x509.NameAttribute(NameOID.ORGANIZATION_NAME, "gate-a")])),
     "subject_mismatch"),
    ("renewing a gate never provisioned", dict(action="renew"), "not_active"),
    ("replacing a gate never provisioned", dict(action="replace"), "not_active"),
]


@pytest.mark.parametrize(("change", "reason"), [(c, r) for _, c, r in REFUSALS], ids=[w for w, _, _ in REFUSALS])
def test_each_refusal_is_named_logged_and_issues_nothing(ca: DeviceCA, change: dict[str, object], reason: str) -> None:
    options: dict[str, object] = dict(gate_id="gate-a", inventory_ids=INVENTORY, action="provision", **WHO)
    options.update(change)
    csr = options.pop("csr", None) or csr_for("gate-a")
    with pytest.raises(DeviceCAError) as refused:
        ca.sign(csr, **options)  # type: ignore[arg-type]
    assert refused.value.reason == reason, str(refused.value)
    assert ca.records() == []
    last = audit(ca)[-1]
    assert last["outcome"] == "refused" and last["reason"] == reason
    assert last.keys() >= AUDIT_FIELDS and last["fingerprint"] is None and last["serial"] is None
    assert last["gate_id"] == options["gate_id"] and last["technician"] == options["technician"]


def test_provision_is_refused_while_the_gate_has_an_active_certificate(ca: DeviceCA) -> None:
    first = sign(ca, csr_for("gate-a"))
    with pytest.raises(DeviceCAError) as refused:
        sign(ca, csr_for("gate-a"))  # a second identity for the same gate: a stolen laptop, or a mistake
    assert refused.value.reason == "already_active"
    assert [r.serial for r in ca.records()] == [first.serial]
    assert audit(ca)[-1]["reason"] == "already_active"


def test_renew_must_rotate_the_key_and_no_key_is_ever_certified_twice(ca: DeviceCA) -> None:
    key_a, key_b = new_key(), new_key()
    sign(ca, csr_for("gate-a", key_a))
    with pytest.raises(DeviceCAError) as refused:
        sign(ca, csr_for("gate-a", key_a), action="renew")
    assert refused.value.reason == "key_not_rotated"
    with pytest.raises(DeviceCAError) as refused:
        sign(ca, csr_for("gate-b", key_a), gate_id="gate-b")  # gate-a's key, offered as gate-b's
    assert refused.value.reason == "key_reused"
    sign(ca, csr_for("gate-a", key_b), action="renew")
    with pytest.raises(DeviceCAError) as refused:
        sign(ca, csr_for("gate-a", key_a), action="replace")  # back to the superseded key
    assert refused.value.reason == "key_reused"


def test_an_expired_ca_signs_nothing(ca: DeviceCA, clock: Clock) -> None:
    clock.advance(days=3660)
    with pytest.raises(DeviceCAError) as refused:
        sign(ca, csr_for("gate-a"))
    assert refused.value.reason == "ca_expired"


def test_a_validity_past_the_cas_own_ends_with_the_ca(ca: DeviceCA, clock: Clock) -> None:
    clock.advance(days=3653 - 30)
    issued = sign(ca, csr_for("gate-a"))
    assert issued.not_after == ca.certificate.not_valid_after_utc


# ---- the lifecycle ------------------------------------------------------------------------------


def test_renew_issues_for_the_new_key_and_revokes_the_old_as_superseded_at_once(ca: DeviceCA, clock: Clock) -> None:
    old = sign(ca, csr_for("gate-a"))
    clock.advance(days=300)
    new = sign(ca, csr_for("gate-a"), action="renew")
    active = ca.active("gate-a")
    assert active is not None and active.serial == new.serial and active.action == "renew"
    (old_record,) = [r for r in ca.records("gate-a") if r.serial == old.serial]
    assert old_record.status == "revoked" and old_record.revocation_reason == "superseded"
    assert old_record.revoked_at == clock.now.replace(microsecond=0)
    issued_line, revoked_line = audit(ca)[-2:]
    assert (issued_line["outcome"], issued_line["serial"], issued_line["action"]) == (
        "issued", f"{new.serial:x}", "renew")
    assert (revoked_line["outcome"], revoked_line["serial"], revoked_line["reason"]) == (
        "revoked", f"{old.serial:x}", "superseded")
    assert revoked_line["superseded_by"] == f"{new.serial:x}"


def test_replace_keeps_the_gate_id_and_revokes_the_old_certificate_as_key_compromise(ca: DeviceCA) -> None:
    old = sign(ca, csr_for("gate-a"))
    new = sign(ca, csr_for("gate-a"), action="replace")
    assert x509.load_pem_x509_certificate(new.cert_pem).subject.rfc4514_string() == "CN=gate-a"
    records = {r.serial: r for r in ca.records("gate-a")}
    assert records[old.serial].revocation_reason == "key_compromise" and not records[old.serial].active
    assert records[new.serial].active and records[new.serial].action == "replace"


def test_decommission_revokes_the_active_certificate_and_then_there_is_nothing_to_revoke(ca: DeviceCA) -> None:
    issued = sign(ca, csr_for("gate-a"))
    record = ca.revoke("gate-a", **WHO)
    assert (record.serial, record.status, record.revocation_reason) == (issued.serial, "revoked",
                                                                        "cessation_of_operation")
    assert ca.active("gate-a") is None
    line = audit(ca)[-1]
    assert (line["action"], line["outcome"], line["serial"]) == ("decommission", "revoked", f"{issued.serial:x}")
    with pytest.raises(DeviceCAError) as refused:
        ca.revoke("gate-a", **WHO)
    assert refused.value.reason == "not_active"
    assert audit(ca)[-1]["outcome"] == "refused"
    # A gate taken out can come back (it is still in the inventory), with a new key and a new certificate.
    again = sign(ca, csr_for("gate-a"))
    assert ca.active("gate-a").serial == again.serial  # type: ignore[union-attr]


def test_a_stolen_gate_is_revoked_for_key_compromise_even_if_the_inventory_dropped_it(ca: DeviceCA) -> None:
    sign(ca, csr_for("gate-a"))
    record = ca.revoke("gate-a", "key_compromise", **WHO)  # revoking needs no inventory: it only takes away
    assert record.revocation_reason == "key_compromise"
    with pytest.raises(DeviceCAError) as refused:
        ca.revoke("gate-a", "because", **WHO)  # type: ignore[arg-type]
    assert refused.value.reason == "bad_request"


def test_already_issued_hands_back_the_certificate_of_the_same_key_and_mints_nothing(ca: DeviceCA) -> None:
    key = new_key()
    issued = sign(ca, csr_for("gate-a", key))
    again = ca.already_issued(csr_for("gate-a", key), gate_id="gate-a")  # a fresh CSR, the same key
    assert again == issued
    assert ca.already_issued(csr_for("gate-a"), gate_id="gate-a") is None  # another key: nothing to resend
    assert ca.already_issued(csr_for("gate-b", key), gate_id="gate-b") is None
    assert len(ca.records()) == 1
    assert [line["outcome"] for line in audit(ca) if line["action"] == "resend"] == ["resent"]
    with pytest.raises(DeviceCAError) as refused:
        ca.already_issued(csr_for("gate-b", key), gate_id="gate-a")
    assert refused.value.reason == "subject_mismatch"


# ---- registry and audit log ---------------------------------------------------------------------


def test_the_registry_records_every_certificate_with_its_state(ca: DeviceCA, ca_dir: Path, clock: Clock) -> None:
    a = sign(ca, csr_for("gate-a"))
    clock.advance(seconds=5)
    b = sign(ca, csr_for("gate-b"), gate_id="gate-b", validity_days=30)
    clock.advance(seconds=5)
    a2 = sign(ca, csr_for("gate-a"), action="renew")
    records = ca.records()
    assert [(r.gate_id, r.serial, r.action, r.status) for r in records] == [
        ("gate-a", a.serial, "provision", "revoked"), ("gate-b", b.serial, "provision", "active"),
        ("gate-a", a2.serial, "renew", "active")]
    record_b = records[1]
    assert record_b.fingerprint == b.fingerprint and record_b.not_after == b.not_after
    assert record_b.not_after - record_b.not_before == datetime.timedelta(days=30, hours=1)
    assert (record_b.technician, record_b.software_version) == (WHO["technician"], WHO["software_version"])
    assert record_b.cert_pem == b.cert_pem and record_b.revoked_at is None
    assert not record_b.expired(clock.now) and record_b.expired(clock.now + datetime.timedelta(days=31))
    assert [r.serial for r in ca.records("gate-a")] == [a.serial, a2.serial]
    # Reopened, it is the same registry.
    assert DeviceCA.open(ca_dir).records() == records


def test_the_schema_itself_allows_one_active_certificate_per_gate_and_one_certificate_per_key(
    ca: DeviceCA, ca_dir: Path
) -> None:
    sign(ca, csr_for("gate-a"))
    with sqlite3.connect(ca_dir / "registry.sqlite") as connection:
        row = connection.execute("SELECT * FROM certificates").fetchone()
        with pytest.raises(sqlite3.IntegrityError, match="gate_id"):
            connection.execute("INSERT INTO certificates VALUES (" + ",".join("?" * len(row)) + ")",
                               ("ff", *row[1:2], "other-fp", "other-key", *row[4:]))
        with pytest.raises(sqlite3.IntegrityError, match="key_fingerprint"):
            connection.execute("INSERT INTO certificates VALUES (" + ",".join("?" * len(row)) + ")",
                               ("fe", "gate-b", "other-fp", *row[3:]))


def test_every_action_leaves_one_json_line_with_who_what_and_when(ca: DeviceCA, ca_dir: Path) -> None:
    issued = sign(ca, csr_for("gate-a"))
    sign(ca, csr_for("gate-b"), gate_id="gate-b")
    sign(ca, csr_for("gate-a"), action="replace")
    ca.revoke("gate-b", **WHO)
    with pytest.raises(DeviceCAError):
        sign(ca, csr_for("gate-q"), gate_id="gate-q")
    lines = (ca_dir / "audit.jsonl").read_text().splitlines()
    entries = [json.loads(line) for line in lines]
    assert [(e["action"], e["outcome"]) for e in entries] == [
        ("create_ca", "created"), ("provision", "issued"), ("provision", "issued"), ("replace", "issued"),
        ("replace", "revoked"), ("decommission", "revoked"), ("provision", "refused")]
    for entry in entries[1:6]:
        assert entry.keys() >= AUDIT_FIELDS, entry
        assert (entry["technician"], entry["software_version"]) == (WHO["technician"], WHO["software_version"])
        datetime.datetime.fromisoformat(str(entry["time"]).replace("Z", "+00:00"))
    assert entries[1]["fingerprint"] == issued.fingerprint and entries[1]["serial"] == f"{issued.serial:x}"
    assert entries[6]["reason"] == "not_in_inventory" and entries[6]["gate_id"] == "gate-q"


def test_the_audit_log_is_only_ever_appended_to(ca: DeviceCA, ca_dir: Path) -> None:
    sign(ca, csr_for("gate-a"))
    before = (ca_dir / "audit.jsonl").read_bytes()
    ca.revoke("gate-a", **WHO)
    ca.build_crl()
    after = (ca_dir / "audit.jsonl").read_bytes()
    assert after.startswith(before) and len(after.splitlines()) == len(before.splitlines()) + 2


def test_nothing_is_issued_when_the_audit_log_cannot_be_written(ca: DeviceCA, ca_dir: Path) -> None:
    (ca_dir / "audit.jsonl").unlink()
    (ca_dir / "audit.jsonl").mkdir()  # appending to it fails
    with pytest.raises(DeviceCAError) as refused:
        sign(ca, csr_for("gate-a"))
    assert refused.value.reason == "audit_log"
    assert ca.records() == []


# ---- the CRL ------------------------------------------------------------------------------------


def test_a_new_cas_crl_is_empty_signed_and_valid_for_thirty_days(ca: DeviceCA, clock: Clock) -> None:
    crl = x509.load_pem_x509_crl(ca.crl_pem())
    assert crl.is_signature_valid(ca.certificate.public_key())  # type: ignore[arg-type]
    assert crl.issuer == ca.certificate.subject and len(crl) == 0
    assert crl.next_update_utc - crl.last_update_utc == datetime.timedelta(days=30)  # type: ignore[operator]
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 1


def test_the_crl_lists_every_revoked_serial_with_its_reason(ca: DeviceCA, ca_dir: Path, clock: Clock) -> None:
    renewed = sign(ca, csr_for("gate-a"))
    sign(ca, csr_for("gate-a"), action="renew")
    replaced = sign(ca, csr_for("gate-b"), gate_id="gate-b")
    sign(ca, csr_for("gate-b"), gate_id="gate-b", action="replace")
    decommissioned = sign(ca, csr_for("gate-c"), gate_id="gate-c")
    ca.revoke("gate-c", **WHO)
    first = ca.write_crl(ca_dir / "crl.pem", next_update_days=7)
    assert stat.S_IMODE((ca_dir / "crl.pem").stat().st_mode) == 0o644
    crl = x509.load_pem_x509_crl((ca_dir / "crl.pem").read_bytes())
    assert crl.is_signature_valid(ca.certificate.public_key())  # type: ignore[arg-type]
    reasons = {entry.serial_number: entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
               for entry in crl}
    assert reasons == {renewed.serial: x509.ReasonFlags.superseded, replaced.serial: x509.ReasonFlags.key_compromise,
                       decommissioned.serial: x509.ReasonFlags.cessation_of_operation}
    assert set(first.revoked_serials) == set(reasons)
    assert crl.next_update_utc == first.next_update == first.last_update + datetime.timedelta(days=7)
    for record in ca.records():
        assert (crl.get_revoked_certificate_by_serial_number(record.serial) is None) == record.active
    # The next CRL, even within the same second, is numbered on and strictly newer: OpenSSL prefers it.
    second = ca.write_crl(ca_dir / "crl.pem")
    assert second.number == first.number + 1 and second.last_update > first.last_update
    assert [line["action"] for line in audit(ca)].count("crl") == 2
    assert not list(ca_dir.glob(".crl.pem.*"))  # no temporary file left beside it


# ---- the gate's side: qrgate identity (a subprocess, as the provisioner runs it over SSH) --------------


def identity(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "qrgate.cli", "identity", *args], check=False,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    """umask 000: the key file must still come out 0600 (it is created with that mode, not chmod-ed later)."""
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


def test_identity_new_makes_a_0600_key_and_prints_only_its_csr(tmp_path: Path, permissive_umask: None) -> None:
    key_path = tmp_path / "device.key"
    result = identity("new", "--id", "gate-a", "--key", str(key_path))
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert result.stderr == "" and "PRIVATE" not in result.stdout
    assert not any(line in result.stdout for line in key_body(key_path.read_bytes()))
    csr = x509.load_pem_x509_csr(result.stdout.encode())
    assert csr.is_signature_valid and csr.subject.rfc4514_string() == "CN=gate-a"
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    assert csr.public_key().public_numbers() == key.public_key().public_numbers()  # type: ignore[union-attr]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["device.key"]  # no temporary file left


def test_identity_new_refuses_to_overwrite_and_csr_reprints_for_the_same_key(tmp_path: Path) -> None:
    key_path = tmp_path / "device.key"
    first = identity("new", "--id", "gate-a", "--key", str(key_path))
    key_before = key_path.read_bytes()
    again = identity("new", "--id", "gate-a", "--key", str(key_path))
    assert again.returncode == 1 and "exists" in again.stderr and again.stdout == ""
    assert key_path.read_bytes() == key_before
    reprinted = identity("csr", "--id", "gate-a", "--key", str(key_path))
    assert reprinted.returncode == 0
    public = [x509.load_pem_x509_csr(r.stdout.encode()).public_key().public_numbers() for r in (first, reprinted)]
    assert public[0] == public[1]
    forced = identity("new", "--id", "gate-a", "--key", str(key_path), "--force")
    assert forced.returncode == 0 and key_path.read_bytes() != key_before
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600


def test_identity_refuses_a_bad_id_and_a_key_others_can_read(tmp_path: Path) -> None:
    bad = identity("new", "--id", "gate a/../b", "--key", str(tmp_path / "k"))
    assert bad.returncode == 1 and "not a device id" in bad.stderr and not (tmp_path / "k").exists()
    key_path = tmp_path / "device.key"
    identity("new", "--id", "gate-a", "--key", str(key_path))
    os.chmod(key_path, 0o644)
    leaked = identity("csr", "--id", "gate-a", "--key", str(key_path))
    assert leaked.returncode == 1 and "0644" in leaked.stderr and leaked.stdout == ""
    assert "PRIVATE" not in leaked.stderr


def test_a_gate_made_csr_signed_by_the_ca_is_shown_with_its_serial_fingerprint_and_key(ca: DeviceCA,
                                                                                     tmp_path: Path) -> None:
    key_path, cert_path = tmp_path / "device.key.new", tmp_path / "device.pem.new"
    csr = identity("new", "--id", "gate-a", "--key", str(key_path)).stdout.encode()
    issued = sign(ca, csr)
    cert_path.write_bytes(issued.cert_pem)
    shown = identity("show", "--cert", str(cert_path), "--key", str(key_path))
    assert shown.returncode == 0, shown.stderr
    report = json.loads(shown.stdout)
    assert report["subject"] == "CN=gate-a" and report["common_name"] == "gate-a"
    assert report["serial"] == f"{issued.serial:x}" and report["fingerprint"] == issued.fingerprint
    assert report["not_after"] == issued.not_after.isoformat().replace("+00:00", "Z")
    assert report["key_matches"] is True
    other = tmp_path / "other.key"
    identity("new", "--id", "gate-a", "--key", str(other))
    mismatch = identity("show", "--cert", str(cert_path), "--key", str(other))
    assert mismatch.returncode == 1 and json.loads(mismatch.stdout)["key_matches"] is False
