"""``qrgate-issuer trust-list``, ``revocation``, ``rules``, ``publish``: build, sign and deliver the province's lists.

``add_parsers(subparsers)`` registers the four commands on the issuer CLI (``rules publish`` is ``publish``
for rule sets only: the same code); each handler is the
parser's ``run`` default and returns the exit code: 0 done, 1 failed (message on stderr), 2 usage.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from importlib import resources
from pathlib import Path

from qrgate.errors import TrustStoreError
from qrgate.passes.revocation import HASH_BYTES, HashType, country_uci_hash, pass_id_hash, uci_hash
from qrgate.passes.signed_list import ListType
from qrgate.rules.policy import BUILTIN_RULE_SET
from qrgate.wire import REVOCATION_TOPIC, RULE_SET_TOPIC, TRUST_LIST_TOPIC

from .trustlist import (
    LIST_SIGNER_ALGORITHMS,
    build_revocation_delta,
    build_revocation_snapshot,
    build_rule_set,
    build_trust_list,
    describe_list,
    entries_from_paths,
    load_list_signer,
    load_public_spki,
    new_list_signer,
    pass_hashes,
    spki,
    write_list_signer,
)

HOUR_S = 3_600
DEFAULT_VALID_HOURS = 168.0  # a week: the hard end; gates call a list stale long before (trust.max_age_h)
DAY_S = 86_400
DEFAULT_RULE_SET_VALID_DAYS = 90.0  # a gate refuses a rule set offered after this: publish the next one before
TOPICS = {ListType.TRUST_LIST: TRUST_LIST_TOPIC, ListType.REVOCATION: REVOCATION_TOPIC,
          ListType.RULE_SET: RULE_SET_TOPIC}

# Input files of ``revocation build``: option stem -> how one line becomes (hash type, hash) pairs.
# Lines are stripped; blank lines and lines starting with "#" are skipped.
_HASH_INPUTS: dict[str, tuple[str, Callable[[str], Iterable[tuple[HashType, bytes]]]]] = {
    "uci": ("one certificate identifier (UVCI) per line", lambda line: [(HashType.UCI, uci_hash(line))]),
    "country-uci": ('"<issuing country> <UVCI>" per line, e.g. "VN URN:UVCI:01:VN:..."',
                    lambda line: [(HashType.COUNTRY_UCI, country_uci_hash(*_two_fields(line)))]),
    "pass-id": ("one qrgate pass id in hex per line", lambda line: [(HashType.QRGATE_PASS_ID, pass_id_hash(bytes.fromhex(line)))]),
    "pass": ("one whole pass text (HC1:/QG1:) per line: every hash of that pass", lambda line: pass_hashes(line).items()),
    "hash": (f'"<hash type> <{HASH_BYTES * 2} hex digits>" per line, already hashed (hash types: '
             f'{", ".join(HashType)})', lambda line: [_hashed(line)]),
}


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    _add_trust_list(subparsers)
    _add_revocation(subparsers)
    _add_rules(subparsers)
    _add_publish(subparsers)


# --- trust-list ---------------------------------------------------------------------------------------------------


def _add_trust_list(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "trust-list", help="build and sign the province's trust list; create list-signing keys",
        description="The trust list is every issuer key the gates trust, signed by a list key the gates pin.",
    )
    commands = parser.add_subparsers(dest="trust_list_command", required=True, metavar="COMMAND")

    build = commands.add_parser(
        "build", help="build and sign a trust list",
        description="Sign a trust list holding every key found in --keys (certificates and JSON key files, as a "
        "gate's trust.paths). Its list keys are the signer and every --next-signer: to rotate, first sign with the old "
        "key naming the new one, later with the new key alone (docs/trust.md).",
    )
    build.add_argument("--signer", required=True, type=Path, metavar="KEY.pem", help="the list key's private PEM (ES256 or Ed25519)")
    build.add_argument("--keys", required=True, nargs="+", action="extend", type=Path, metavar="DIR_OR_FILE",
                       help="issuer certificates (.pem/.crt/.cer/.der) and JSON key files, or directories of them")
    build.add_argument("--version", required=True, type=_positive_int, metavar="N", help="list version: higher than any published")
    build.add_argument("--valid-hours", type=_positive_float, default=DEFAULT_VALID_HOURS, metavar="H",
                       help=f"hours until the list expires (default {DEFAULT_VALID_HOURS:g})")
    build.add_argument("--next-signer", action="append", default=[], type=Path, metavar="PUB.pem",
                       help="another list key the gates pin from this list on (its public PEM); repeatable")
    build.add_argument("--out", required=True, type=Path, metavar="FILE", help="where to write the signed list")
    build.set_defaults(run=_run_trust_list_build)

    signer = commands.add_parser(
        "new-signer", help="create a list-signing key",
        description="Write list-<kid>.key (private, mode 0600: keep it offline) and list-<kid>.pem (the public key "
        "gates pin in their trust-list signer directory).",
    )
    signer.add_argument("--alg", choices=LIST_SIGNER_ALGORITHMS, default="EdDSA", help="signature algorithm (default EdDSA)")
    signer.add_argument("--out-dir", required=True, type=Path, metavar="DIR")
    signer.set_defaults(run=_run_new_signer)


def _run_trust_list_build(args: argparse.Namespace) -> int:
    try:
        signer = load_list_signer(args.signer)
        entries = entries_from_paths(args.keys)
        next_signers = [load_public_spki(path) for path in args.next_signer]
        issued_at = int(time.time())
        document = build_trust_list(signer, entries, version=args.version, issued_at=issued_at,
                                    expires_at=issued_at + int(args.valid_hours * HOUR_S), next_signers=next_signers)
        _write_atomically(args.out, document)
    except (OSError, ValueError, TrustStoreError) as exc:
        return _fail(exc)
    print(f"trust list v{args.version}: {len(entries)} keys, {len({spki(signer), *next_signers})} list key(s), "
          f"expires {_iso(issued_at + int(args.valid_hours * HOUR_S))}, {len(document)} bytes -> {args.out}")
    return 0


def _run_new_signer(args: argparse.Namespace) -> int:
    try:
        paths = write_list_signer(new_list_signer(args.alg), args.out_dir)
    except (OSError, ValueError) as exc:
        return _fail(exc)
    print(f"private key {paths['private_key']} (keep offline), public key {paths['public_key']} (pin on gates)")
    return 0


# --- revocation ---------------------------------------------------------------------------------------------------


def _add_revocation(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "revocation", help="build and sign revocation lists (snapshots and deltas)",
        description="Revocation lists name revoked passes by truncated SHA-256 hashes, as the EU DCC revocation scheme.",
    )
    commands = parser.add_subparsers(dest="revocation_command", required=True, metavar="COMMAND")
    build = commands.add_parser(
        "build", help="build and sign a revocation snapshot or delta",
        description="A snapshot lists every revoked pass; a delta adds (input files) and removes (--remove-* files) "
        "entries on the list of version --base, which the gates must hold.",
    )
    kind = build.add_mutually_exclusive_group(required=True)
    kind.add_argument("--snapshot", action="store_true", help="a full list")
    kind.add_argument("--delta", action="store_true", help="changes to the list of version --base")
    build.add_argument("--base", type=_positive_int, metavar="N", help="with --delta: the version it applies to")
    build.add_argument("--version", required=True, type=_positive_int, metavar="N")
    build.add_argument("--signer", required=True, type=Path, metavar="KEY.pem", help="a list key's private PEM")
    build.add_argument("--valid-hours", type=_positive_float, default=DEFAULT_VALID_HOURS, metavar="H",
                       help=f"hours until the list expires (default {DEFAULT_VALID_HOURS:g})")
    for stem, (meaning, _) in _HASH_INPUTS.items():
        build.add_argument(f"--{stem}-file", dest=f"add_{stem}", action="append", default=[], type=Path, metavar="F",
                           help=f"revoke: {meaning}; repeatable")
    for stem, (meaning, _) in _HASH_INPUTS.items():
        build.add_argument(f"--remove-{stem}-file", dest=f"remove_{stem}", action="append", default=[], type=Path,
                           metavar="F", help=f"with --delta, revoke no more: {meaning}")
    build.add_argument("--out", required=True, type=Path, metavar="FILE")
    build.set_defaults(run=_run_revocation_build)


def _run_revocation_build(args: argparse.Namespace) -> int:
    removals = any(getattr(args, f"remove_{stem}") for stem in _HASH_INPUTS)
    if args.delta != (args.base is not None) or (args.snapshot and removals):
        print("qrgate-issuer revocation build: --base goes with --delta, and --remove-* files only with --delta", file=sys.stderr)
        return 2
    try:
        signer = load_list_signer(args.signer)
        add = _read_hashes(args, "add")
        issued_at = int(time.time())
        fields = {"version": args.version, "issued_at": issued_at, "expires_at": issued_at + int(args.valid_hours * HOUR_S)}
        if args.snapshot:
            document = build_revocation_snapshot(signer, add, **fields)
        else:
            document = build_revocation_delta(signer, base_version=args.base, add=add, remove=_read_hashes(args, "remove"), **fields)
        _write_atomically(args.out, document)
    except (OSError, ValueError) as exc:
        return _fail(exc)
    counts = ", ".join(f"{len(v)} {t}" for t, v in add.items() if v) or "no entries"
    kind = "snapshot" if args.snapshot else f"delta on v{args.base}"
    print(f"revocation {kind} v{args.version}: {counts}; {len(document)} bytes -> {args.out}")
    return 0


def _read_hashes(args: argparse.Namespace, role: str) -> dict[HashType, list[bytes]]:
    hashes: dict[HashType, set[bytes]] = {t: set() for t in HashType}
    for stem, (_, to_hashes) in _HASH_INPUTS.items():
        for path in getattr(args, f"{role}_{stem}"):
            with path.open(encoding="utf-8") as lines:
                for number, line in enumerate(lines, start=1):
                    line = line.strip()
                    if not line or line.startswith("#"):
                        continue
                    try:
                        for hash_type, digest in to_hashes(line):
                            hashes[hash_type].add(digest)
                    except (ValueError, KeyError, IndexError) as exc:
                        raise ValueError(f"{path}:{number}: {exc or 'unreadable line'}") from None
    return {t: sorted(v) for t, v in hashes.items()}


def _two_fields(line: str) -> tuple[str, str]:
    fields = line.split()
    if len(fields) != 2:
        raise ValueError("expected two fields separated by a space")
    return fields[0], fields[1]


def _hashed(line: str) -> tuple[HashType, bytes]:
    name, digits = _two_fields(line)
    digest = bytes.fromhex(digits)
    if len(digest) != HASH_BYTES:
        raise ValueError(f"a hash is {HASH_BYTES} bytes ({HASH_BYTES * 2} hex digits)")
    return HashType(name), digest


# --- rules --------------------------------------------------------------------------------------------------------


def _add_rules(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "rules", help="build, sign and publish the validation rule set (which certificates are green)",
        description="A rule set is the province's policy as EU-DCC business rules in CertLogic, each naming the "
        "reason a gate shows when it fails (docs/rules.md). Gates accept it like a trust list: signed by a list key "
        "they pin, newer than the one in force, not expired.",
    )
    commands = parser.add_subparsers(dest="rules_command", required=True, metavar="COMMAND")
    build = commands.add_parser(
        "build", help="sign a rule set",
        description="Sign the rule-set JSON of --source (default: the built-in Vietnam 2021-22 set) as version N. "
        "Every rule is checked as a gate checks it; one invalid rule fails the build.",
    )
    build.add_argument("--source", type=Path, default=_builtin_source(), metavar="FILE.json",
                       help=f"the rule set as JSON (default: qrgate's built-in {BUILTIN_RULE_SET})")
    build.add_argument("--version", required=True, type=_positive_int, metavar="N", help="higher than any published")
    build.add_argument("--valid-days", type=_positive_float, default=DEFAULT_RULE_SET_VALID_DAYS, metavar="D",
                       help=f"days until gates refuse it when offered (default {DEFAULT_RULE_SET_VALID_DAYS:g})")
    build.add_argument("--signer", required=True, type=Path, metavar="KEY.pem", help="a list key's private PEM")
    build.add_argument("--out", required=True, type=Path, metavar="FILE")
    build.set_defaults(run=_run_rules_build)
    publish = commands.add_parser(
        "publish", help="deliver a signed rule set: MQTT (retained) or a drop directory",
        description=f"Publish FILE retained on {RULE_SET_TOPIC} (QoS 1), or copy it atomically into a gate's drop "
        "directory. The same as `publish`, for rule sets only.",
    )
    _publish_arguments(publish, ListType.RULE_SET)


def _builtin_source() -> Path:
    return Path(str(resources.files("qrgate").joinpath("data", BUILTIN_RULE_SET)))


def _run_rules_build(args: argparse.Namespace) -> int:
    try:
        signer = load_list_signer(args.signer)
        content = args.source.read_text(encoding="utf-8")
        issued_at = int(time.time())
        expires_at = issued_at + int(args.valid_days * DAY_S)
        document = build_rule_set(signer, content, version=args.version, issued_at=issued_at, expires_at=expires_at)
        _write_atomically(args.out, document)
    except (OSError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        return _fail(exc)
    print(f"rule set v{args.version} from {args.source}: expires {_iso(expires_at)}, {len(document)} bytes "
          f"-> {args.out}")
    return 0


# --- publish ------------------------------------------------------------------------------------------------------


def _add_publish(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "publish", help="deliver a signed list to the gates: MQTT (retained) or a drop directory",
        description="Publish FILE on the province topic for its type (QoS 1; trust lists and revocation snapshots "
        "retained, deltas not, so a gate connecting later gets the latest full list), or copy it atomically into "
        "a gate's drop directory. The list is read, not verified: gates verify it.",
    )
    _publish_arguments(parser, None)


def _publish_arguments(parser: argparse.ArgumentParser, only: ListType | None) -> None:
    """The options of ``publish`` (``only``: None) and ``rules publish`` (``only``: a rule set)."""
    parser.add_argument("file", type=Path, metavar="FILE",
                        help="a list written by trust-list build, revocation build or rules build")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--mqtt-host", metavar="HOST", help="the province broker")
    target.add_argument("--to-dir", type=Path, metavar="DIR", help="a drop directory (file delivery)")
    parser.add_argument("--mqtt-port", type=int, metavar="PORT", help="broker port (default 8883 with --tls, else 1883)")
    parser.add_argument("--tls", action="store_true", help="connect with TLS")
    parser.add_argument("--ca-file", metavar="PEM", help="CA certificate of the broker (with --tls)")
    parser.add_argument("--cert-file", metavar="PEM", help="client certificate (with --tls)")
    parser.add_argument("--key-file", metavar="PEM", help="client private key (with --tls)")
    parser.add_argument("--username", help="MQTT username")
    parser.add_argument("--password-file", type=Path, metavar="FILE", help="file holding the MQTT password")
    parser.add_argument("--topic", help=f"override the topic ({', '.join(TOPICS.values())})")
    parser.add_argument("--retain", action=argparse.BooleanOptionalAction, default=None,
                        help="override retention (default: retained unless a revocation delta)")
    parser.add_argument("--timeout", type=_positive_float, default=30.0, metavar="S", help="seconds to wait for the broker")
    parser.set_defaults(run=_run_publish, only=only)


def _run_publish(args: argparse.Namespace) -> int:
    try:
        document = args.file.read_bytes()
        about = describe_list(document)
        if args.only is not None and about["type"] is not args.only:
            raise ValueError(f"{args.file}: a {about['type']}, not a {args.only}")
    except (OSError, ValueError) as exc:
        return _fail(exc)
    name = f"{about['type']}-v{about['version']:010d}.cose"
    if args.to_dir is not None:
        try:
            _write_atomically(args.to_dir / name, document)
        except OSError as exc:
            return _fail(exc)
        print(f"{about['type']} v{about['version']} -> {args.to_dir / name}")
        return 0
    topic = args.topic or TOPICS[about["type"]]
    retain = args.retain if args.retain is not None else about.get("kind") != "delta"
    port = args.mqtt_port or (8883 if args.tls else 1883)
    try:
        _publish_mqtt(args, port, topic, document, retain)
    except (OSError, ValueError, RuntimeError) as exc:
        return _fail(exc)
    print(f"{about['type']} v{about['version']} published on {topic} ({'retained' if retain else 'not retained'}, QoS 1)")
    return 0


def _publish_mqtt(args: argparse.Namespace, port: int, topic: str, document: bytes, retain: bool) -> None:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"qrgate-issuer-{os.getpid()}", protocol=mqtt.MQTTv5)
    if args.tls:
        client.tls_set(ca_certs=args.ca_file, certfile=args.cert_file, keyfile=args.key_file)
    if args.username:
        password = args.password_file.read_text().strip() if args.password_file else None
        client.username_pw_set(args.username, password)
    connected, acknowledged = threading.Event(), threading.Event()
    outcome: dict[str, object] = {}

    def on_connect(_client, _userdata, _flags, reason, _properties) -> None:
        outcome["connect"] = reason
        connected.set()

    def on_publish(_client, _userdata, _mid, reason, _properties) -> None:
        outcome["publish"] = reason
        acknowledged.set()

    client.on_connect, client.on_publish = on_connect, on_publish
    client.connect(args.mqtt_host, port, keepalive=60)
    client.loop_start()
    try:
        if not connected.wait(args.timeout):
            raise RuntimeError(f"no answer from {args.mqtt_host}:{port} within {args.timeout:g} s")
        if outcome["connect"].is_failure:  # type: ignore[attr-defined]
            raise RuntimeError(f"{args.mqtt_host}:{port} refused the connection: {outcome['connect']}")
        client.publish(topic, document, qos=1, retain=retain)
        if not acknowledged.wait(args.timeout):
            raise RuntimeError(f"the broker did not acknowledge the list within {args.timeout:g} s")
        if outcome["publish"].is_failure:  # type: ignore[attr-defined]
            raise RuntimeError(f"the broker refused the list: {outcome['publish']}")
    finally:
        client.disconnect()
        client.loop_stop()


# --- helpers ------------------------------------------------------------------------------------------------------


def _write_atomically(path: Path, data: bytes) -> None:
    """Write ``path`` so that a reader (a gate polling its drop directory) never sees half of it."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _fail(exc: Exception) -> int:
    print(f"qrgate-issuer: {exc}", file=sys.stderr)
    return 1


def _iso(epoch: int) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).isoformat(timespec="seconds")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return value
