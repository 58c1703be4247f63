"""``qrgate identity``: the gate's own mTLS identity, made on the gate (the provisioner runs this over SSH).

    qrgate identity new  --id GATE_ID --key PATH [--force] [--owner USER]   a new key; prints its CSR
    qrgate identity csr  --id GATE_ID --key PATH                            the CSR of an existing key
    qrgate identity show --cert PATH [--key PATH]                           a certificate's facts, as JSON

The private key is generated here and never leaves the gate: nothing but a CSR (public) goes to stdout,
and no message ever holds key material. The province's device CA signs the CSR (CN = the gate id, the
MQTT username the site broker's ACL confines) and the certificate and CA chain come back.

The key file is created 0600 from its first byte (``os.open`` with O_CREAT|O_EXCL and mode 0o600, under a
temporary name, then linked or renamed into place), so it is never readable by others, not even briefly,
and a run cut off half-way leaves either no key at PATH or a whole one, never a part. ``new`` refuses to
overwrite PATH unless ``--force``. Renewal and replacement write the new key beside the live one, e.g.
``--key /etc/qrgate/pki/device.key.new``, and the provisioner swaps it in once the certificate for it is
installed; until then the gate keeps using its old key and certificate. After a dropped link, ``csr``
re-prints the CSR of the key already made, so a re-run does not make a second key.

Exit status: 0 done, 1 refused or failed (the reason on stderr), 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import re
import stat
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ..config import ID_PATTERN  # the rule the gate's own config applies to device.id
from . import Subcommands

EXIT_OK, EXIT_FAILED = 0, 1
_ID = re.compile(ID_PATTERN)


class IdentityError(Exception):
    """Why the command refused or failed: printed on stderr, never with key material."""


def add_parser(subparsers: Subcommands) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "identity", help="make this gate's key and CSR, or show its certificate (provisioning)",
        description="The gate's mTLS identity. The private key is generated on the gate and never printed; the "
        "CSR (CN = the gate id) goes to stdout for the province's device CA to sign.",
    )
    actions = parser.add_subparsers(dest="identity_action", metavar="ACTION", required=True)

    new = actions.add_parser("new", help="generate a new EC P-256 key (mode 0600) and print its CSR",
                             description="Generate an EC P-256 private key at PATH (created 0600) and print the "
                             "CSR for GATE_ID. Refuses to overwrite PATH unless --force: renewals write "
                             "PATH.new beside the live key and swap it in once its certificate is installed.")
    new.add_argument("--id", required=True, dest="gate_id", metavar="GATE_ID", help="this gate's device id")
    new.add_argument("--key", required=True, type=Path, metavar="PATH", help="where to create the private key")
    new.add_argument("--force", action="store_true", help="replace an existing key at PATH (atomically)")
    new.add_argument("--owner", metavar="USER",
                     help="give the key file to USER and USER's group (run as root; e.g. qrgate, the service user)")
    new.set_defaults(run=run_new)

    csr = actions.add_parser("csr", help="print the CSR of an existing key (after a dropped link)",
                             description="Print the CSR for GATE_ID of the key at PATH, making no new key.")
    csr.add_argument("--id", required=True, dest="gate_id", metavar="GATE_ID", help="this gate's device id")
    csr.add_argument("--key", required=True, type=Path, metavar="PATH", help="the existing private key")
    csr.set_defaults(run=run_csr)

    show = actions.add_parser("show", help="print a certificate's subject, serial, fingerprint and expiry as JSON",
                              description="Print a certificate's subject, serial, SHA-256 fingerprint and "
                              "validity as JSON; with --key, also whether that key is the certificate's "
                              "(exit 1 if not).")
    show.add_argument("--cert", required=True, type=Path, metavar="PATH", help="a PEM certificate")
    show.add_argument("--key", type=Path, metavar="PATH", help="check that this private key belongs to it")
    show.set_defaults(run=run_show)
    return parser


def run_new(args: argparse.Namespace) -> int:
    return _guarded("new", lambda: _new(args.gate_id, args.key, force=args.force, owner=args.owner))


def run_csr(args: argparse.Namespace) -> int:
    return _guarded("csr", lambda: _csr(args.gate_id, args.key))


def run_show(args: argparse.Namespace) -> int:
    return _guarded("show", lambda: _show(args.cert, args.key))


def _guarded(action: str, body: Callable[[], int]) -> int:
    try:
        return body()
    except IdentityError as exc:
        print(f"qrgate identity {action}: {exc}", file=sys.stderr)
        return EXIT_FAILED


def _new(gate_id: str, path: Path, *, force: bool, owner: str | None) -> int:
    _check_id(gate_id)
    if not path.parent.is_dir():
        raise IdentityError(f"{path.parent}: no such directory (create it, owned by the gate's user, first)")
    if not force and (path.exists() or path.is_symlink()):
        raise IdentityError(f"{path} exists: re-print its CSR with 'qrgate identity csr', or replace it with --force")
    ids = _owner_ids(owner) if owner is not None else None
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    scratch = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            os.fchmod(fd, 0o600)  # 0600 already (the umask only takes bits away); said again for clarity
            if ids is not None:
                os.fchown(fd, *ids)
            written = 0
            while written < len(pem):
                written += os.write(fd, pem[written:])
            os.fsync(fd)
        finally:
            os.close(fd)
        if force:
            os.replace(scratch, path)  # atomic: the old key or the new one, never neither
        else:
            os.link(scratch, path)  # atomic and never overwrites: FileExistsError if PATH appeared meanwhile
            scratch.unlink()
        _fsync_directory(path.parent)
    except FileExistsError as exc:
        raise IdentityError(f"{path} exists: re-print its CSR with 'qrgate identity csr', or use --force") from exc
    except OSError as exc:
        raise IdentityError(f"{path}: cannot write the key: {exc.strerror or exc}") from exc
    finally:
        scratch.unlink(missing_ok=True)
    sys.stdout.write(_csr_pem(key, gate_id).decode("ascii"))
    return EXIT_OK


def _csr(gate_id: str, path: Path) -> int:
    _check_id(gate_id)
    sys.stdout.write(_csr_pem(_read_key(path), gate_id).decode("ascii"))
    return EXIT_OK


def _show(cert_path: Path, key_path: Path | None) -> int:
    try:
        certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except OSError as exc:
        raise IdentityError(f"{cert_path}: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise IdentityError(f"{cert_path}: not a PEM certificate") from exc
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    report: dict[str, object] = {
        "subject": certificate.subject.rfc4514_string(),
        "common_name": str(names[0].value) if names else None,
        "issuer": certificate.issuer.rfc4514_string(),
        "serial": format(certificate.serial_number, "x"),
        "fingerprint": certificate.fingerprint(hashes.SHA256()).hex(),
        "not_before": _iso(certificate.not_valid_before_utc),
        "not_after": _iso(certificate.not_valid_after_utc),
    }
    matches = True
    if key_path is not None:
        matches = _spki(_read_key(key_path).public_key()) == _spki(certificate.public_key())
        report["key_matches"] = matches
    print(json.dumps(report))
    return EXIT_OK if matches else EXIT_FAILED


def _check_id(gate_id: str) -> None:
    if not _ID.fullmatch(gate_id):
        raise IdentityError(f"{gate_id!r} is not a device id: 1-64 of A-Z a-z 0-9 _ . - starting with a letter or "
                            "digit (as device.id in the gate's config)")


def _owner_ids(owner: str) -> tuple[int, int]:
    try:
        entry = pwd.getpwnam(owner)
    except KeyError:
        raise IdentityError(f"--owner {owner!r}: no such user") from None
    return entry.pw_uid, entry.pw_gid


def _read_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """The EC private key at ``path``, refused if it is not a plain file or others could read it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise IdentityError(f"{path}: cannot open the key: {exc.strerror or exc}") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise IdentityError(f"{path}: not a regular file")
        if info.st_mode & 0o077:
            raise IdentityError(f"{path} is mode {stat.S_IMODE(info.st_mode):04o}: others may have read it; make "
                                "a new key ('qrgate identity new') rather than certify this one")
        with os.fdopen(os.dup(fd), "rb") as file:
            pem = file.read()
    finally:
        os.close(fd)
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise IdentityError(f"{path}: not an unencrypted PEM private key") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise IdentityError(f"{path}: not an EC key (qrgate identity new makes EC P-256 keys)")
    return key


def _csr_pem(key: ec.EllipticCurvePrivateKey, gate_id: str) -> bytes:
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, gate_id)]))
        .sign(key, hashes.SHA256())
    )
    return request.public_bytes(serialization.Encoding.PEM)


def _spki(public_key: object) -> bytes | None:
    """The DER SubjectPublicKeyInfo of an EC key; None for any other kind (which no key of ours matches)."""
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        return None
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
