"""TrustStore loading: certificates and JSON key files, and a TrustStoreError naming the file for every fault."""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtensionOID, NameOID

from qrgate.errors import TrustStoreError
from qrgate.passes.algorithms import EDDSA, ES256, PS256
from qrgate.passes.trust import MAX_TRUST_FILE_BYTES, TrustStore
from qrgate.passes.verdict import PassFormat
from qrgate.passes.verifier import PassVerifier
from qrgate_provisioning.dcc_test_issuer import (
    fake_vaccination_payload,
    new_dcc_test_issuer,
    new_dcc_test_issuer_with_eku,
)
from qrgate_provisioning.keys import (
    IssuerKey,
    certificate_kid,
    load_issuer_key,
    new_dcc_issuer_key,
    new_issuer_key,
    private_key_pem,
    self_signed_certificate,
    trust_entry,
    trust_file,
    write_issuer_files,
)
from qrgate_provisioning.mint import mint_dcc_pass, mint_qrgate_pass

NOW = 1_767_225_600
START = dt.datetime(2025, 6, 1, tzinfo=dt.UTC)
END = dt.datetime(2027, 6, 1, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def dcc_issuer() -> IssuerKey:
    return new_dcc_issuer_key("VN", "PS256", not_before=START, not_after=END)


@pytest.fixture(scope="module")
def qg_issuer() -> IssuerKey:
    return new_issuer_key("VN-HN", "EdDSA")


def pem(issuer: IssuerKey) -> bytes:
    assert issuer.certificate is not None
    return issuer.certificate.public_bytes(serialization.Encoding.PEM)


def der(issuer: IssuerKey) -> bytes:
    assert issuer.certificate is not None
    return issuer.certificate.public_bytes(serialization.Encoding.DER)


# --- what loads -----------------------------------------------------------------------------------------


def test_a_directory_of_pem_der_and_json_files_loads_every_key(tmp_path, dcc_issuer, qg_issuer) -> None:
    es256 = new_dcc_issuer_key("DE", "ES256", not_before=START, not_after=END)
    (tmp_path / "vn.pem").write_bytes(pem(dcc_issuer))
    (tmp_path / "de.der").write_bytes(der(es256))
    (tmp_path / "qrgate.json").write_text(trust_file([trust_entry(qg_issuer)]))
    (tmp_path / "README.md").write_text("not a trust file: ignored")
    (tmp_path / ".hidden.pem").write_text("ignored too")
    store = TrustStore.from_paths([tmp_path])
    assert len(store) == 3
    (vn,) = store.keys_for(dcc_issuer.kid)
    assert ((vn.alg, vn.formats, vn.not_before, vn.not_after)
            == (PS256, {PassFormat.DCC}, START.timestamp(), END.timestamp()))
    assert vn.kid == certificate_kid(dcc_issuer.certificate)
    assert vn.source == str(tmp_path / "vn.pem")
    assert store.keys_for(es256.kid)[0].alg == ES256
    (qg,) = store.keys_for(qg_issuer.kid)
    assert (qg.alg, qg.issuer, qg.formats) == (EDDSA, "VN-HN", {PassFormat.DCC, PassFormat.QRGATE})
    assert store.keys_for(b"\x00" * 8) == ()


def test_the_dcc_kid_is_the_first_8_bytes_of_sha256_over_the_certificate(dcc_issuer) -> None:
    import hashlib

    assert dcc_issuer.kid == hashlib.sha256(der(dcc_issuer)).digest()[:8]


def test_a_pem_bundle_yields_every_certificate(tmp_path, dcc_issuer) -> None:
    other = new_dcc_issuer_key("VN", "ES256", not_before=START, not_after=END)
    (tmp_path / "bundle.crt").write_bytes(pem(dcc_issuer) + pem(other))
    assert {key.kid for key in TrustStore.from_paths([tmp_path / "bundle.crt"])} == {dcc_issuer.kid, other.kid}


def test_files_and_directories_mix(tmp_path, dcc_issuer, qg_issuer) -> None:
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "vn.cer").write_bytes(der(dcc_issuer))
    (tmp_path / "keys.json").write_text(trust_file([trust_entry(qg_issuer)]))
    assert len(TrustStore.from_paths([tmp_path / "certs", str(tmp_path / "keys.json")])) == 2


def test_json_windows_and_formats_are_read(tmp_path, qg_issuer) -> None:
    entry = trust_entry(qg_issuer, formats=["qrgate"], not_before=START, not_after=END)
    (tmp_path / "k.json").write_text(trust_file([entry]))
    (key,) = TrustStore.from_paths([tmp_path])
    assert (key.not_before, key.not_after, key.formats) == (START.timestamp(), END.timestamp(), {PassFormat.QRGATE})
    assert key.usable(PassFormat.QRGATE, NOW) and not key.usable(PassFormat.DCC, NOW)
    assert not key.usable(PassFormat.QRGATE, END.timestamp() + 1)


def test_a_date_without_a_zone_is_utc(tmp_path, qg_issuer) -> None:
    (tmp_path / "k.json").write_text(trust_file([trust_entry(qg_issuer) | {"not_before": "2026-01-01"}]))
    (key,) = TrustStore.from_paths([tmp_path])
    assert key.not_before == NOW


def test_dcc_key_usage_comes_from_the_extended_key_usage(tmp_path) -> None:
    limited = new_dcc_issuer_key("VN", "ES256", not_before=START, not_after=END, dcc_types=["t", "r"])
    unlimited = new_dcc_issuer_key("VN", "ES256", not_before=START, not_after=END)
    (tmp_path / "a.pem").write_bytes(pem(limited))
    (tmp_path / "b.pem").write_bytes(pem(unlimited))
    store = TrustStore.from_paths([tmp_path])
    assert store.keys_for(limited.kid)[0].dcc_types == {"t", "r"}
    assert store.keys_for(unlimited.kid)[0].dcc_types is None


@pytest.mark.parametrize(("purposes", "types"), [
    ([], None),  # an empty EKU (RFC 5280 wants one purpose; real DSCs have none): no DCC type named, no limit
    (["1.3.6.1.5.5.7.3.1"], None),  # serverAuth only: no DCC type named
    (["1.3.6.1.5.5.7.3.1", "1.3.6.1.4.1.0.1847.2021.1.2"], {"v"}),  # the legacy arc counts the same
])
def test_an_eku_limits_the_key_only_by_the_dcc_types_it_names(tmp_path, purposes, types) -> None:
    issuer = new_dcc_test_issuer_with_eku("ES256", NOW, purposes)
    (tmp_path / "dsc.pem").write_bytes(pem(issuer))
    (key,) = TrustStore.from_paths([tmp_path])  # no longer a TrustStoreError for the empty EKU
    assert (key.kid, key.dcc_types) == (issuer.kid, types)


def test_an_unreadable_eku_refuses_the_certificate_naming_the_file(tmp_path) -> None:
    private_key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "VN")])
    broken = x509.UnrecognizedExtension(ExtensionOID.EXTENDED_KEY_USAGE, b"\x30\x03\x02\x01\x00")  # an INTEGER
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(private_key.public_key())
                   .serial_number(1).not_valid_before(START).not_valid_after(END)
                   .add_extension(broken, critical=False).sign(private_key, hashes.SHA256()))
    (tmp_path / "broken.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    with pytest.raises(TrustStoreError, match=r"broken.pem: certificate Extended Key Usage cannot be read"):
        TrustStore.from_paths([tmp_path])


def test_a_dscs_country_is_its_subjects(tmp_path, dcc_issuer) -> None:
    nameless = new_dcc_test_issuer_with_eku("ES256", NOW, [], country=None)
    (tmp_path / "vn.pem").write_bytes(pem(dcc_issuer))
    (tmp_path / "none.pem").write_bytes(pem(nameless))
    store = TrustStore.from_paths([tmp_path])
    assert store.keys_for(dcc_issuer.kid)[0].country == "VN"
    assert store.keys_for(nameless.kid)[0].country is None


def test_an_empty_store_trusts_nothing(qg_issuer) -> None:
    store = TrustStore.from_paths([])
    text = mint_qrgate_pass(qg_issuer, "VN-HN", b"\x01", "s", NOW, NOW + 60)
    assert len(store) == 0
    assert PassVerifier(store).verify(text, NOW).reason == "unknown_issuer"


# --- what fails, and says where ---------------------------------------------------------------------------


def write(tmp_path, name: str, content: bytes | str):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def entry_with(qg_issuer: IssuerKey, **changes: object) -> str:
    entry = trust_entry(qg_issuer) | changes
    return trust_file([{k: v for k, v in entry.items() if v is not None}])


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.pem", b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "not an X.509 certificate"),
        ("bad.der", b"\x30\x03\x02\x01\x00", "not an X.509 certificate"),
        ("bad.json", "{not json", "not valid JSON"),
        ("bad.json", "[]", '"keys" list'),
        ("bad.json", '{"keys": {}}', '"keys" list'),
        ("bad.json", '{"keys": ["x"]}', "keys[0]: expected an object"),
    ],
)
def test_unreadable_files_raise_with_the_path(tmp_path, name, content, message) -> None:
    path = write(tmp_path, name, content)
    with pytest.raises(TrustStoreError, match=re.escape(message)) as raised:
        TrustStore.from_paths([tmp_path])
    assert str(path) in str(raised.value)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"kid": "not base64!"}, "kid is not base64"),
        ({"kid": ""}, "kid must be a non-empty string"),
        ({"kid": None}, "kid must be a non-empty string"),
        ({"alg": "RS256"}, "alg must be one of"),
        ({"alg": "ES256"}, "does not match the public key"),  # the key is Ed25519
        ({"public_key": "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"}, "not a PEM"),
        ({"issuer": ""}, "issuer must be a non-empty string"),
        ({"not_before": "yesterday"}, "not_before is not ISO 8601"),
        ({"not_after": 1767225600}, "not_after must be an ISO 8601 string"),
        ({"not_before": "2027-01-01", "not_after": "2026-01-01"}, "not_after is before not_before"),
        ({"formats": ["dcc", "pdf"]}, "formats must be"),
        ({"formats": []}, "formats must be"),
        ({"algorithm": "EdDSA"}, "unknown field"),
    ],
)
def test_bad_key_entries_raise_with_file_and_index(tmp_path, qg_issuer, changes, message) -> None:
    path = write(tmp_path, "keys.json", entry_with(qg_issuer, **changes))
    with pytest.raises(TrustStoreError, match=re.escape(message)) as raised:
        TrustStore.from_paths([path])
    assert f"{path}: keys[0]" in str(raised.value)


def test_weak_or_foreign_keys_are_refused(tmp_path) -> None:
    p384 = IssuerKey("VN", "ES256", ec.generate_private_key(ec.SECP384R1()))
    rsa1024 = IssuerKey("VN", "PS256", rsa.generate_private_key(public_exponent=65537, key_size=1024))
    for issuer, message in ((p384, "only P-256"), (rsa1024, "at least 2048")):
        cert = self_signed_certificate(issuer.private_key, "VN", "weak", not_before=START, not_after=END)
        path = write(tmp_path, "weak.pem", cert.public_bytes(serialization.Encoding.PEM))
        with pytest.raises(TrustStoreError, match=message):
            TrustStore.from_paths([path])


def test_missing_paths_and_wrong_suffixes_raise(tmp_path) -> None:
    with pytest.raises(TrustStoreError, match="no such file or directory"):
        TrustStore.from_paths([tmp_path / "absent"])
    with pytest.raises(TrustStoreError, match="not a trust file"):
        TrustStore.from_paths([write(tmp_path, "anchors.txt", "x")])


def test_oversized_files_are_refused_without_reading_them_whole(tmp_path) -> None:
    path = tmp_path / "huge.json"
    with path.open("wb") as f:
        f.truncate(MAX_TRUST_FILE_BYTES + 1)  # sparse: no disk space used
    with pytest.raises(TrustStoreError, match="larger than"):
        TrustStore.from_paths([path])


# --- the issuer side: exported files are what a gate loads ------------------------------------------------------


def test_issuer_files_round_trip_into_a_gate(tmp_path, dcc_issuer, qg_issuer) -> None:
    dcc_paths = write_issuer_files(dcc_issuer, tmp_path / "issuer")
    qg_paths = write_issuer_files(qg_issuer, tmp_path / "issuer", formats=["qrgate"])
    assert stat.S_IMODE(dcc_paths["private_key"].stat().st_mode) == 0o600
    assert set(dcc_paths) == {"private_key", "trust", "certificate"} and set(qg_paths) == {"private_key", "trust"}

    gate_dir = tmp_path / "gate"
    gate_dir.mkdir()
    (gate_dir / "vn.pem").write_bytes(dcc_paths["certificate"].read_bytes())
    (gate_dir / "hn.json").write_bytes(qg_paths["trust"].read_bytes())
    verifier = PassVerifier(TrustStore.from_paths([gate_dir]))

    reloaded_dcc = load_issuer_key(dcc_paths["private_key"].read_bytes(), "VN", dcc_issuer.certificate)
    reloaded_qg = load_issuer_key(qg_paths["private_key"].read_bytes(), "VN-HN")
    assert (reloaded_dcc.alg, reloaded_qg.alg, reloaded_qg.kid) == ("PS256", "EdDSA", qg_issuer.kid)
    hc1 = mint_dcc_pass(reloaded_dcc, dcc_issuer.certificate, fake_vaccination_payload("URN:UVCI:01:VN:1"), NOW,
                        NOW + 60)
    qg1 = mint_qrgate_pass(reloaded_qg, "VN-HN", b"\x02" * 8, "s", NOW, NOW + 60)
    assert verifier.verify(hc1, NOW).accepted and verifier.verify(qg1, NOW).accepted


def test_the_trust_entry_is_the_documented_json(qg_issuer) -> None:
    entry = json.loads(trust_file([trust_entry(qg_issuer, formats=["qrgate"], not_after=END)]))["keys"][0]
    assert set(entry) == {"kid", "alg", "public_key", "issuer", "not_after", "formats"}
    assert base64.b64decode(entry["kid"]) == qg_issuer.kid and entry["alg"] == "EdDSA"
    assert entry["public_key"].startswith("-----BEGIN PUBLIC KEY-----")


def test_qrgate_passes_refuse_rsa_keys() -> None:
    with pytest.raises(ValueError, match="ES256 or EdDSA"):
        mint_qrgate_pass(new_dcc_test_issuer("PS256", NOW), "VN-HN", b"\x01", "s", NOW, NOW + 60)


def test_private_keys_export_as_pkcs8_pem(qg_issuer) -> None:
    assert private_key_pem(qg_issuer).startswith(b"-----BEGIN PRIVATE KEY-----")
