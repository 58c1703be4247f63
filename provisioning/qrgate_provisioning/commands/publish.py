"""``qrgate-issuer publish``: deliver a signed list to the gates, over MQTT (retained) or into a drop directory.

The list is read, not verified: gates verify it. Trust lists, revocation snapshots and rule sets
are published retained, so a gate connecting later gets the latest full list; revocation deltas
are not, since they share the snapshots' topic and a retained delta would take the snapshot's
place. ``rules publish`` is this command for rule sets only (``add_publish_arguments`` with a list
type).
"""

from __future__ import annotations

import argparse
import os
import threading
from pathlib import Path

from qrgate.passes.signed_list import ListType
from qrgate.wire import REVOCATION_TOPIC, RULE_SET_TOPIC, TRUST_LIST_TOPIC

from ..trustlist import describe_list
from . import EXIT_OK, PROG, Subcommands
from .arguments import positive_float
from .output import fail, write_list_atomically

TOPICS = {ListType.TRUST_LIST: TRUST_LIST_TOPIC, ListType.REVOCATION: REVOCATION_TOPIC,
          ListType.RULE_SET: RULE_SET_TOPIC}
DEFAULT_TIMEOUT_S = 30.0


def add_parser(subparsers: Subcommands) -> None:
    parser = subparsers.add_parser(
        "publish", help="deliver a signed list to the gates: MQTT (retained) or a drop directory",
        description="Publish FILE on the province topic for its type (QoS 1; trust lists and revocation snapshots "
        "retained, deltas not, so a gate connecting later gets the latest full list), or copy it atomically into "
        "a gate's drop directory. The list is read, not verified: gates verify it.",
    )
    add_publish_arguments(parser, None)


def add_publish_arguments(parser: argparse.ArgumentParser, only: ListType | None) -> None:
    """The options of ``publish`` (``only``: None) and ``rules publish`` (``only``: a rule set)."""
    parser.add_argument("file", type=Path, metavar="FILE",
                        help="a list written by trust-list build, revocation build or rules build")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--mqtt-host", metavar="HOST", help="the province broker")
    target.add_argument("--to-dir", type=Path, metavar="DIR", help="a drop directory (file delivery)")
    parser.add_argument("--mqtt-port", type=int, metavar="PORT",
                        help="broker port (default 8883 with --tls, else 1883)")
    parser.add_argument("--tls", action="store_true", help="connect with TLS")
    parser.add_argument("--ca-file", metavar="PEM", help="CA certificate of the broker (with --tls)")
    parser.add_argument("--cert-file", metavar="PEM", help="client certificate (with --tls)")
    parser.add_argument("--key-file", metavar="PEM", help="client private key (with --tls)")
    parser.add_argument("--username", help="MQTT username")
    parser.add_argument("--password-file", type=Path, metavar="FILE", help="file holding the MQTT password")
    parser.add_argument("--topic", help=f"override the topic ({', '.join(TOPICS.values())})")
    parser.add_argument("--retain", action=argparse.BooleanOptionalAction, default=None,
                        help="override retention (default: retained unless a revocation delta)")
    parser.add_argument("--timeout", type=positive_float, default=DEFAULT_TIMEOUT_S, metavar="S",
                        help="seconds to wait for the broker")
    parser.set_defaults(run=run, only=only)


def run(args: argparse.Namespace) -> int:
    try:
        document = args.file.read_bytes()
        about = describe_list(document)
        if args.only is not None and about["type"] is not args.only:
            raise ValueError(f"{args.file}: a {about['type']}, not a {args.only}")
    except (OSError, ValueError) as exc:
        return fail(exc)
    name = f"{about['type']}-v{about['version']:010d}.cose"
    if args.to_dir is not None:
        try:
            write_list_atomically(args.to_dir / name, document)
        except OSError as exc:
            return fail(exc)
        print(f"{about['type']} v{about['version']} -> {args.to_dir / name}")
        return EXIT_OK
    topic = args.topic or TOPICS[about["type"]]
    retain = args.retain if args.retain is not None else about.get("kind") != "delta"
    port = args.mqtt_port or (8883 if args.tls else 1883)
    try:
        _publish_mqtt(args, port, topic, document, retain)
    except (OSError, ValueError, RuntimeError) as exc:
        return fail(exc)
    print(f"{about['type']} v{about['version']} published on {topic} "
          f"({'retained' if retain else 'not retained'}, QoS 1)")
    return EXIT_OK


def _publish_mqtt(args: argparse.Namespace, port: int, topic: str, document: bytes, retain: bool) -> None:
    """Publish once at QoS 1 and wait for the broker's PUBACK, so exit 0 means the broker has the list."""
    # paho only here: the other commands run on an offline machine without a broker.
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    from paho.mqtt.reasoncodes import ReasonCode

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{PROG}-{os.getpid()}", protocol=mqtt.MQTTv5)
    if args.tls:
        client.tls_set(ca_certs=args.ca_file, certfile=args.cert_file, keyfile=args.key_file)
    if args.username:
        password = args.password_file.read_text().strip() if args.password_file else None
        client.username_pw_set(args.username, password)
    connected, acknowledged = threading.Event(), threading.Event()
    outcome: dict[str, object] = {}

    def on_connect(_client: mqtt.Client, _userdata: object, _flags: object, reason: ReasonCode,
                   _properties: object) -> None:
        outcome["connect"] = reason
        connected.set()

    def on_publish(_client: mqtt.Client, _userdata: object, _mid: int, reason: ReasonCode,
                   _properties: object) -> None:
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
