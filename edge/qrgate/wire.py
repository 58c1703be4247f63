"""The wire contract: MQTT topic names and payload schemas, shared by the daemon and operator tools.

Every topic puts the device id at a fixed level (``qrgate/v1/device/<device_id>/...``) so a broker
ACL pattern (``pattern write qrgate/v1/device/%c/#``) confines each device to its own subtree.
Payloads are JSON objects with a schema version ``v``; consumers ignore fields they do not know.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field

TOPIC_ROOT = "qrgate/v1"
SCHEMA_VERSION = 1

# Every device message is QoS 1 (at least once): check-ins must not be lost, and the retained
# availability/status messages must reach the broker even over a link that drops packets.
QOS = 1

ONLINE: Final = "online"
OFFLINE: Final = "offline"


def checkin_topic(device_id: str) -> str:
    """Check-in events (CheckinEvent JSON): QoS 1, not retained."""
    return f"{TOPIC_ROOT}/device/{device_id}/checkin"


def status_topic(device_id: str) -> str:
    """Retained DeviceStatus JSON: published when the device connects and when it stops cleanly.

    It is what the device last said about itself; whether it is reachable right now is the
    availability topic, which the broker sets to ``offline`` (LWT) when the link dies.
    """
    return f"{TOPIC_ROOT}/device/{device_id}/status"


def availability_topic(device_id: str) -> str:
    """Retained plain ``online``/``offline`` string, as Frigate's ``available`` topic.

    ``online`` is the birth message sent on every connect; ``offline`` is the Last Will (the broker
    publishes it when the connection dies without a DISCONNECT) and is also sent on a clean stop.
    """
    return f"{TOPIC_ROOT}/device/{device_id}/available"


def ack_topic(device_id: str) -> str:
    """End-to-end acknowledgements (CheckinAck JSON) from the province's consumer to one device:
    QoS 1, not retained. The device subscribes to its own; only consumers may write to them."""
    return f"{TOPIC_ROOT}/device/{device_id}/ack"


def telemetry_topic(device_id: str) -> str:
    """Periodic Telemetry JSON: QoS 1, not retained, sent only while connected (never queued)."""
    return f"{TOPIC_ROOT}/device/{device_id}/telemetry"


def command_topic(device_id: str) -> str:
    """Signed commands (SignedCommand JSON) from the province's operators to one device: QoS 1, not retained, MQTT 5
    request/response (the response topic and correlation data are the request's properties). Only the operator
    service may write here; the device refuses what is unsigned, forged, expired, replayed or for another device."""
    return f"{TOPIC_ROOT}/device/{device_id}/command"


def command_response_topic(device_id: str) -> str:
    """The device's answers to commands (CommandResponse JSON), in its own subtree; a request's response topic must
    be this one (a device writes nowhere else)."""
    return f"{TOPIC_ROOT}/device/{device_id}/response"


ALL_CHECKINS = f"{TOPIC_ROOT}/device/+/checkin"
ALL_STATUS = f"{TOPIC_ROOT}/device/+/status"
ALL_AVAILABILITY = f"{TOPIC_ROOT}/device/+/available"
ALL_TELEMETRY = f"{TOPIC_ROOT}/device/+/telemetry"
ALL_RESPONSES = f"{TOPIC_ROOT}/device/+/response"

# Province-wide, retained, written only by the trust-list issuer: every gate subscribes.
TRUST_LIST_TOPIC = f"{TOPIC_ROOT}/province/trust-list"
REVOCATION_TOPIC = f"{TOPIC_ROOT}/province/revocation"
RULE_SET_TOPIC = f"{TOPIC_ROOT}/province/rules"  # the signed validation rule set (docs/rules.md)
# The province's operations service says it has (re)started (ProvinceHello, not retained): every gate answers by
# publishing its status and telemetry again, so a restarted dashboard is never blank.
PROVINCE_HELLO_TOPIC = f"{TOPIC_ROOT}/province/hello"
# The latest daily report (retained), from qrgate-province report; its JSON is province.report's DailyReport.
DAILY_REPORT_TOPIC = f"{TOPIC_ROOT}/province/report/daily"


# What the gate decided about a check-in, as the event says it (Reason says why).
EventVerdict = Literal["accepted", "rejected", "identified"]

class CheckinEvent(BaseModel):
    """One check-in: a presentation of a code at the gate, accepted or rejected.

    No names, dates of birth or ID numbers: only the pass id and the pseudonymous subject id of a
    valid pass, which is what contact tracing needs.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    v: int = Field(SCHEMA_VERSION, description="Payload schema version.")
    event_id: str = Field(description="UUIDv7: unique, and sorts by creation time.")
    seq: int = Field(description="Per-device sequence number, 1-based, gap-free across restarts.")
    device_id: str = Field(description="Device that answered the visitor.")
    site_id: str = Field(description="Check-in point (bus station, market) the device belongs to.")
    gate: str = Field(description="Gate name within the site.")
    direction: Literal["in", "out"] = Field(description="Whether this gate checks people in or out.")
    time: str = Field(description="Wall-clock time of the decision, ISO 8601 UTC with milliseconds.")
    clock_synced: bool = Field(description="Whether the device clock was NTP/RTC-synchronised at that time.")
    verdict: EventVerdict = Field(
        description="What the gate showed: 'identified' is a chip ID card admitted by policy, not a verified pass."
    )
    reason: str = Field(description="'accepted' or the named rejection reason.")
    format: str = Field(description="Pass format: dcc, qrgate or unknown.")
    issuer: str | None = Field(None, description="Issuer of the pass, when known.")
    pass_id: str | None = Field(None, description="Pass id (qrgate) or certificate identifier (DCC), when readable.")
    subject_id: str | None = Field(None, description="Pseudonymous subject id; only for accepted passes.")
    trust_stale: bool = Field(
        False, description="The signed trust list in force was stale when this pass was verified.")

    def to_json(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()

    @classmethod
    def from_json(cls, payload: bytes | str) -> CheckinEvent:
        return cls.model_validate_json(payload)


class DeviceStatus(BaseModel):
    """What a device says about itself on its status topic (retained)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    v: int = Field(SCHEMA_VERSION, description="Payload schema version.")
    device_id: str = Field(description="Device this status is about.")
    site_id: str | None = Field(None, description="Check-in point (place) the device belongs to.")
    gate: str | None = Field(None, description="Gate name within the place.")
    direction: Literal["in", "out", "both"] | None = Field(
        None, description="Whether the gate checks people in, out, or both (direction from the last passage).")
    state: Literal["online", "offline"] = Field(
        description="'online' when sent at connect, 'offline' when sent at a clean stop."
    )
    time: str = Field(description="Wall-clock time the status was sent, ISO 8601 UTC with milliseconds.")
    software: str | None = Field(None, description="qrgate version running on the device.")
    pending: int | None = Field(
        None, description="Check-in events stored on the device and not yet acknowledged by the broker."
    )
    config_hash: str | None = Field(None, description="SHA-256 (first 16 hex digits) of the configuration file in "
                                                      "force.")
    trust_list_version: int | None = Field(None, description="Version of the signed trust list in force (absent: "
                                                             "static anchors only).")
    trust_list_age_s: int | None = Field(None, description="Seconds since the trust list in force was issued.")
    trust_stale: bool | None = Field(None, description="The trust list in force is older than trust.max_age_h or past "
                                                       "its expiry.")
    revocation_version: int | None = Field(None, description="Version of the revocation list in force.")
    rule_set_version: int | None = Field(
        None, description="Version of the validation rule set in force: 0 for the built-in set (or a configured file), "
        "absent when validation rules are off.",
    )
    rule_set_age_s: int | None = Field(
        None, description="Seconds since the signed rule set in force was issued (absent: not a signed one)."
    )
    clock_synced: bool | None = Field(None, description="Whether the device clock is NTP/RTC-synchronised.")
    outbox_over_limit: bool | None = Field(None, description="The outbox is above its size limit (events are kept, not "
                                                             "dropped).")
    storage_error: str | None = Field(
        None, description="The outbox's latest storage fault (disk full, read-only, corrupt) while it lasts; absent "
                          "when writes succeed."
    )

    def to_json(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()

    @classmethod
    def from_json(cls, payload: bytes | str) -> DeviceStatus:
        return cls.model_validate_json(payload)


class ProvinceHello(BaseModel):
    """The province's operations service has connected (PROVINCE_HELLO_TOPIC): gates re-publish their state."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    v: int = Field(SCHEMA_VERSION, description="Payload schema version.")
    service: str = Field(max_length=64, description="Client id of the service that said hello.")
    time: str = Field(description="When it said so, ISO 8601 UTC with milliseconds.")

    def to_json(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()

    @classmethod
    def from_json(cls, payload: bytes | str) -> ProvinceHello:
        return cls.model_validate_json(payload)


# An acknowledgement is one MQTT message; this many ids keep it under ~40 KB.
MAX_ACK_EVENT_IDS = 1000


class CheckinAck(BaseModel):
    """The province's consumer has committed these check-ins to its store (end-to-end acknowledgement).

    By event id, not by sequence range: a replaced or re-imaged gate that keeps its device id starts
    its sequence again at 1 and inherits the broker session (and any acknowledgement still queued in
    it), so a range could acknowledge events the consumer has never seen; an event id cannot.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    v: int = Field(SCHEMA_VERSION, description="Payload schema version.")
    event_ids: list[str] = Field(
        min_length=1, max_length=MAX_ACK_EVENT_IDS,
        description="Event ids of this device's check-ins the consumer has committed (new ones and duplicates alike).",
    )
    consumer: str | None = Field(None, description="Consumer instance that committed them, for tracing.")

    def to_json(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()

    @classmethod
    def from_json(cls, payload: bytes | str) -> CheckinAck:
        return cls.model_validate_json(payload)


class Telemetry(BaseModel):
    """What a connected device reports every ``service.telemetry_interval_s`` (not retained)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    v: int = Field(SCHEMA_VERSION, description="Payload schema version.")
    device_id: str = Field(description="Device this report is about.")
    time: str = Field(description="Wall-clock time of the report, ISO 8601 UTC with milliseconds.")
    uptime_s: int = Field(description="Seconds since the uplink started.")
    pending: int | None = Field(None, description="Check-in events stored on the device and not yet delivered (final).")
    awaiting_ack: int | None = Field(
        None, description="Of those, published and acknowledged by the broker, waiting for the consumer's "
                          "acknowledgement (end-to-end acks on)."
    )
    oldest_pending_s: int | None = Field(None, description="Age in seconds of the oldest pending event: how far behind "
                                                           "the province is.")
    outbox_bytes: int | None = Field(None, description="Bytes of the outbox database in use.")
    outbox_max_bytes: int | None = Field(None, description="The outbox's size limit (a reporting threshold: nothing is "
                                                           "dropped).")
    outbox_over_limit: bool | None = Field(None, description="The outbox is above its size limit.")
    disk_free_bytes: int | None = Field(None, description="Free bytes on the file system holding the outbox (for "
                                                          "unprivileged writers).")
    storage_error: str | None = Field(None, description="The outbox's latest storage fault while it lasts (disk full, "
                                                        "read-only, corrupt).")
    last_error: str | None = Field(None, description="The uplink's latest connection or storage problem (kept after "
                                                     "recovery).")
    last_refusal: str | None = Field(None, description="The broker's reason for the latest refused check-in, e.g. 'Not "
                                                       "authorized'.")
    sent: int = Field(description="Check-in PUBLISHes written since start, resends included.")
    resent: int = Field(description="Of those, resends after the consumer's acknowledgement did not come in time.")
    delivered: int = Field(description="Events that became delivered since start (PUBACK, or the consumer's "
                                       "acknowledgement).")
    refused: int = Field(description="PUBACKs with a failure reason code since start (the event stays pending).")
    accepted: int | None = Field(None, description="Presentations shown green since start.")
    rejected: int | None = Field(None, description="Presentations shown red since start (storage errors included).")
    storage_errors: int | None = Field(None, description="Check-ins that could not be stored since start (shown red).")
    rule_set_version: int | None = Field(
        None, description="Version of the validation rule set in force (0: built-in or a file; absent: rules off)."
    )
    rule_set_age_s: int | None = Field(
        None, description="Seconds since the signed rule set in force was issued (absent: not a signed one)."
    )
    frames_per_s: float | None = Field(None, description="Camera frames decoded per second over the last interval.")
    cpu_temp_c: float | None = Field(None, description="SoC temperature in degrees Celsius, where the board has one.")
    disk_total_bytes: int | None = Field(None, description="Size of the file system holding the outbox.")
    clock_synced: bool | None = Field(None, description="Whether the device clock is NTP/RTC-synchronised now.")

    def to_json(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()

    @classmethod
    def from_json(cls, payload: bytes | str) -> Telemetry:
        return cls.model_validate_json(payload)


# What an operator may ask a gate to do (qrgate.remote carries them out).
CommandName = Literal["status", "self_test", "reload_trust", "flush_outbox", "set_log_level", "restart"]
# Why a device refused a command, or "done": named, answered on the response topic and logged on both sides.
CommandOutcome = Literal["done", "malformed", "unknown_key", "bad_signature", "expired", "not_yet_valid",
                         "lifetime_too_long", "replayed", "wrong_device", "bad_argument", "failed"]
MAX_COMMAND_LIFETIME_S = 600  # issued_at .. expires_at: bounds how long a device must remember a nonce


class GateCommand(BaseModel):
    """What an operator asks of one device; signed as the exact bytes carried in SignedCommand.command."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    v: int = Field(SCHEMA_VERSION, description="Payload schema version.")
    command: CommandName = Field(description="What to do.")
    args: dict[str, str] = Field(default_factory=dict, description="Arguments, e.g. {'level': 'DEBUG'}.")
    device_id: str = Field(min_length=1, max_length=64, description="The one device this command is for.")
    issued_at: float = Field(description="Unix time the operator signed it.")
    expires_at: float = Field(description="Unix time after which the device refuses it.")
    nonce: str = Field(pattern=r"^[0-9a-f]{32}$", description="128 random bits, hex: a replay is refused.")
    operator: str = Field(min_length=1, max_length=64, description="Who sent it (the dashboard's user), for the logs.")


class SignedCommand(BaseModel):
    """A GateCommand's JSON bytes (base64url) and an operator key's Ed25519 signature over exactly those bytes:
    signing bytes, not a re-serialised object, so both sides agree on what was signed without canonical JSON."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    v: int = Field(SCHEMA_VERSION, description="Payload schema version.")
    kid: str = Field(min_length=1, max_length=64, description="Id of the operator key that signed it.")
    command: str = Field(max_length=8192, description="base64url of the GateCommand JSON.")
    signature: str = Field(max_length=128, description="base64url of the Ed25519 signature over those bytes.")

    def to_json(self) -> bytes:
        return self.model_dump_json().encode()


class CommandResponse(BaseModel):
    """A device's answer to a command, on its response topic, with the request's correlation data."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    v: int = Field(SCHEMA_VERSION, description="Payload schema version.")
    device_id: str = Field(description="The device that answers.")
    nonce: str | None = Field(None, description="The command's nonce, when it could be read.")
    command: str | None = Field(None, description="The command's name, when it could be read.")
    outcome: CommandOutcome = Field(description="'done', or why the command was refused or failed.")
    detail: str = Field("", max_length=2000, description="A human sentence: what was done, or the refusal's cause.")
    result: dict[str, object] = Field(default_factory=dict, description="What the command returned (e.g. status).")
    time: str = Field(description="When the device answered, ISO 8601 UTC with milliseconds.")

    def to_json(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()

    @classmethod
    def from_json(cls, payload: bytes | str) -> CommandResponse:
        return cls.model_validate_json(payload)


_uuid7_lock = threading.Lock()
_uuid7_last = 0


def new_event_id(now: float | None = None) -> str:
    """A UUIDv7 string (RFC 9562): 48-bit Unix milliseconds, then random bits.

    Within one process ids are strictly increasing even if the wall clock steps backwards: the
    timestamp field never decreases (time-ordering is for humans; the seq number is the order).
    Hand-written because uuid.uuid7 only arrives in Python 3.14.
    """
    global _uuid7_last  # noqa: PLW0603  (one process-wide high-water mark, under _uuid7_lock)
    ms = int((time.time() if now is None else now) * 1000)
    rand = int.from_bytes(os.urandom(10), "big") & ((1 << 74) - 1)  # rand_a (12 bits) + rand_b (62 bits)
    with _uuid7_lock:
        value = (ms << 74) | rand
        if value <= _uuid7_last:
            value = _uuid7_last + 1
        _uuid7_last = value
    ms_part, rest = value >> 74, value & ((1 << 74) - 1)
    as_int = (ms_part << 80) | (0x7 << 76) | ((rest >> 62) << 64) | (0b10 << 62) | (rest & ((1 << 62) - 1))
    h = f"{as_int:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def iso_utc(epoch: float) -> str:
    """ISO 8601 UTC with milliseconds and a Z."""
    secs = int(epoch)
    ms = round((epoch - secs) * 1000)
    if ms == 1000:
        secs, ms = secs + 1, 0
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{ms:03d}Z"
