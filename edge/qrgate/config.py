"""The device configuration: one TOML file, modelled strictly in pydantic.

Unknown keys are errors (a misspelt key silently ignored is a gate that behaves differently from what
the technician wrote); every field has a description and a default that suits a Raspberry Pi gate.
Reading the file is config_file.py's: ``load_config`` reports every problem at once, each with the file, line
and dotted key.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# MQTT topic levels must not contain '/', '+' or '#'; the device id is also a file name and an ACL user.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
# Rungs in the whole repair ladder (decoding.cascade.default_attempts with every decoder installed; a test keeps
# the two equal): max_repairs = LADDER_RUNGS runs them all, as ``qrgate scan`` does.
LADDER_RUNGS = 13
MAX_STATIC_DECODE_GAP_S = 5.0  # see GateConfig._static_scene_still_decoded


class _Section(BaseModel):
    # strict: a string where a boolean or a number goes is an error, not a guess ("off" is not False).
    model_config = ConfigDict(extra="forbid", validate_default=True, strict=True)


class DeviceConfig(_Section):
    id: str = Field("gate-demo-01", pattern=ID_PATTERN, description="Device id; also the MQTT client id and ACL user.")
    site_id: str = Field("site-demo", pattern=ID_PATTERN,
                         description="Check-in point (bus station, market) this gate belongs to.")
    gate: str = Field("main", min_length=1, max_length=64,
                      description="Gate name within the site, e.g. 'north-entrance'.")
    direction: Literal["in", "out", "both"] = Field(
        "in", description="Whether the gate checks people in, out, or both ways (a single door): 'both' takes each "
        "person's direction from their last passage at this gate (qrgate.passage).")
    passage_memory_h: float = Field(
        16.0, gt=0, le=7 * 24,
        description="A both-ways gate forgets a passage after this many hours: the next one counts as 'in' again.")
    mode: Literal["gate", "demo"] = Field(
        "gate", description="'gate': a real gate, whose config file must name its device id, site and camera (a real "
        "one); 'demo': a bench-top or demo gate, which may run the synthetic scene (qrgate run --demo says the same).")


class CameraConfig(_Section):
    source: Literal["picamera2", "usb", "files", "video", "synthetic"] = Field(
        "picamera2", description="Where frames come from: the Pi camera, a USB/V4L2 camera, image files, a video file, "
                                 "or the synthetic gate scene."
    )
    width: int = Field(640, ge=160, le=4096, description="Width of the grey image the decoder sees (the Pi camera's "
                                                         "lores stream).")
    height: int = Field(480, ge=120, le=3072, description="Height of the grey image the decoder sees.")
    fps: float = Field(30.0, gt=0, le=240, description="Frames per second requested from the camera (synthetic: "
                                                       "simulated rate).")
    max_exposure_us: int = Field(
        16_666, ge=100, le=1_000_000,
        description="Longest frame duration the Pi camera may use, in microseconds; short exposures limit motion blur "
                    "of a waving hand.",
    )
    autofocus: bool = Field(True, description="Continuous fast autofocus when the camera has it (Camera Module 3).")
    usb_device: int | str = Field(0, description="V4L2 device index or path (e.g. /dev/video0) for source = 'usb'.")
    path: str | None = Field(None, description="Image directory or video file for source = 'files' / 'video'.")
    loop: bool = Field(False, description="Start again at the end of a files/video/synthetic source instead of "
                                          "stopping.")
    seed: int = Field(7, description="Random seed of the synthetic scene.")

    @model_validator(mode="after")
    def _path_needed(self) -> CameraConfig:
        if self.source in ("files", "video") and not self.path:
            raise ValueError(f"camera.path is required when camera.source = '{self.source}'")
        return self


class DecoderConfig(_Section):
    backend: Literal["zxing", "zbar"] = Field("zxing", description="Primary QR decoder: zxing-cpp (fast, default) or "
                                                                   "pyzbar.")
    fallback: Literal["zxing", "zbar", "none"] = Field(
        "zbar", description="Decoder tried only when the primary sees a QR it cannot read; \"none\" disables it."
    )
    try_rotate: bool = Field(False, description="Also try 90/270-degree rotations (slower; QR is rotation-invariant "
                                                "already).")
    # On since issue 10: a phone held close fills the frame (try_downscale) and dark-mode screens are light on dark
    # (try_invert); measured in docs/performance.md, where the bench ran with them on while this said off.
    try_invert: bool = Field(True, description="Also read inverted (light-on-dark) codes: phones in dark mode, some "
                                               "posters.")
    try_downscale: bool = Field(
        True, description="Also read the frame shrunk (1/3, 1/9...): a code filling the frame, a phone held close to "
                          "the camera."
    )
    repair: bool = Field(
        True, description="On a QR zxing-cpp locates but cannot read, retry its region with image fixes and the other "
                          "decoders (the repair ladder)."
    )
    max_repairs: int = Field(
        8, ge=0, le=LADDER_RUNGS,
        description="Most ladder rungs tried per region; a region no rung reads costs about 20 ms here (median), "
                    "80-180 ms on a Pi 4. 3 keeps 149 of the 185 synthetic rescues at about 6 ms; the 7th and 8th "
                    "rungs are for real photos (textured modules, bent codes).",
    )
    presence_gate: bool = Field(
        True, description="Skip frames where the scene has not changed and nothing QR-like was seen; never the first "
                          "frame showing a code."
    )
    presence_threshold: int = Field(10, ge=1, le=255, description="Grey-level change of an 80x60 thumbnail sample that "
                                                                  "counts as a change.")
    decode_every: int = Field(10, ge=1, le=1000, description="Decode at least every Nth frame even in a static scene.")
    track: bool = Field(
        True, description="After a read, decode the code's region first, and give it the repair ladder when the whole "
                          "frame fails."
    )
    workers: int = Field(
        2, ge=0, le=8,
        description="Decode threads with latest-frame-wins hand-off, drops counted; 0 decodes in the capture loop. Pi "
                    "4/5: 2-3.",
    )

    @model_validator(mode="after")
    def _fallback_differs(self) -> DecoderConfig:
        if self.fallback == self.backend:
            raise ValueError("decoder.fallback must differ from decoder.backend (or be omitted)")
        return self


class TrustConfig(_Section):
    paths: list[str] = Field(
        default_factory=lambda: ["/etc/qrgate/trust"],
        description="Trust anchors: directories of issuer certificates (PEM/DER) and/or JSON key files.",
    )
    clock_skew_s: int = Field(300, ge=0, le=86_400, description="Tolerance in seconds for issued-at in the future and "
                                                                "for expiry.")
    signers_dir: str | None = Field(
        None,
        description="Directory of the province's trust-list signing public keys (*.pem), pinned at provisioning. "
        "When set, signed trust and revocation lists are accepted, and once a trust list is in force it "
        "replaces the static anchors of trust.paths (docs/trust.md).",
    )
    state_dir: str = Field("/var/lib/qrgate/trust", description="Where accepted signed lists are kept: current and "
                                                                "last good, replaced atomically.")
    drop_dir: str | None = Field(
        "/var/lib/qrgate/trust-drop",
        description="Directory polled for list files (provisioning, sites without network); accepted files are "
        "deleted, refused ones renamed *.refused.",
    )
    drop_poll_s: float = Field(10.0, gt=0, le=86_400, description="How often the drop directory is polled.")
    max_age_h: float = Field(24.0, gt=0, description="A signed trust list older than this (from its issued_at) or past "
                                                     "its expiry is stale.")
    stale_policy: Literal["flag", "refuse"] = Field(
        "flag",
        description="With a stale trust list: 'flag' keeps verifying and marks every event trust_stale; "
        "'refuse' rejects passes that would be accepted, with reason trust_stale.",
    )


class RulesConfig(_Section):
    baseline: str = Field(
        "builtin", min_length=1,
        description="Validation rules a genuine DCC must pass (docs/rules.md) until the province delivers a signed "
        "rule set (MQTT or the drop directory; needs trust.signers_dir), which then replaces them: 'builtin' "
        "(Vietnam's 2021-22 policy shipped with qrgate), 'none' (no rules: every genuine, unexpired DCC is "
        "accepted), or the path of a rule-set JSON file.",
    )


class DecisionConfig(_Section):
    presence_gap_s: float = Field(
        0.8, gt=0, le=10, description="A code unseen for longer than this has left the camera; shorter gaps are the "
                                      "same presentation."
    )
    repeat_window_s: float = Field(
        30.0, ge=0, le=86_400, description="The same code shown again within this window gets feedback again but no "
                                           "second event."
    )


class PatternConfig(_Section):
    accepted_on_s: float = Field(1.0, gt=0, le=10, description="How long the green LED stays on for an accepted pass.")
    accepted_beeps: int = Field(1, ge=0, le=10, description="Short beeps for an accepted pass.")
    rejected_on_s: float = Field(1.5, gt=0, le=10, description="How long the red LED stays on for a rejected code.")
    rejected_beeps: int = Field(3, ge=0, le=10, description="Short beeps for a rejected code.")
    beep_s: float = Field(0.1, gt=0, le=2, description="Length of one beep and of the pause between beeps.")
    relay_pulse_s: float = Field(1.5, gt=0, le=30, description="How long the relay (turnstile/gate) is energised after "
                                                               "an accepted pass.")
    identified_opens_relay: bool = Field(
        True, description="Whether an ID card admitted as 'identified, not verified' (CCCD policy) also opens the "
                          "relay."
    )


class FeedbackConfig(_Section):
    board: str = Field("rpi-gate-v1", description="Board pin profile: a name under hardware/profiles/ or a path to a "
                                                  "TOML profile.")
    pins: dict[str, int] = Field(
        default_factory=dict, description="Per-output overrides of the board profile's BCM pin numbers, e.g. {relay = "
                                          "6}."
    )
    relay: bool = Field(True, description="Drive the relay output of the board profile; false for a gate without "
                                          "turnstile or lock.")
    relay_active_low: bool | None = Field(None, description="Override the profile's relay polarity (most relay modules "
                                                            "are active-low).")
    mock_pins: bool = Field(
        False, description="Use gpiozero's mock pin factory instead of real GPIO (demo, development off a Pi)."
    )
    patterns: PatternConfig = Field(default_factory=PatternConfig, description="LED and buzzer timings.")


class OutboxConfig(_Section):
    path: str = Field("/var/lib/qrgate/outbox.sqlite", description="SQLite file that holds every check-in until the "
                                                                   "broker acknowledges it.")
    max_mb: int = Field(
        512, ge=1, le=1_000_000,
        description="Size above which the outbox is reported as over its limit; events are never dropped (see "
                    "docs/mqtt.md).",
    )


class MqttConfig(_Section):
    enabled: bool = Field(True, description="Publish check-in events; when false, events stay in the outbox.")
    host: str = Field("localhost", min_length=1, description="Broker host (the site broker, normally on the gate "
                                                             "itself or the site's router).")
    port: int = Field(8883, ge=1, le=65535, description="Broker port (8883 = MQTT over TLS).")
    tls: bool = Field(True, description="Use TLS with server certificate verification.")
    ca_file: str | None = Field("/etc/qrgate/pki/ca.pem", description="CA certificate that signed the broker's "
                                                                      "certificate.")
    cert_file: str | None = Field("/etc/qrgate/pki/device.pem", description="This device's client certificate (mTLS).")
    key_file: str | None = Field("/etc/qrgate/pki/device.key",
                                 description="This device's private key (mTLS); readable only by the qrgate user.")
    client_id: str | None = Field(None, description="MQTT client id; defaults to the device id.")
    keepalive_s: int = Field(30, ge=5, le=3600, description="MQTT keep-alive interval; dead links are noticed after "
                                                            "1.5x this.")
    session_expiry_s: int = Field(86_400, ge=0, description="MQTT v5 session expiry: how long the broker keeps our "
                                                            "session while we are away.")
    max_inflight: int = Field(20, ge=1, le=1000, description="Most check-in events published but not yet acknowledged.")
    reconnect_min_s: float = Field(1.0, gt=0, description="First reconnect delay; doubles up to reconnect_max_s, with "
                                                          "full jitter.")
    reconnect_max_s: float = Field(120.0, gt=0, description="Longest reconnect delay.")
    end_to_end_ack: bool = Field(
        False,
        description="Keep each event until the province's consumer acknowledges its event id on "
        "qrgate/v1/device/<id>/ack (a PUBACK only proves the next hop has it); send it again when that is overdue.",
    )
    ack_timeout_s: float = Field(
        30.0, gt=0, le=3600,
        description="With end_to_end_ack: how long after the PUBACK to wait for the consumer's ack before sending "
        "again; the wait doubles (up to 16x) while the consumer is silent.",
    )
    ack_window: int = Field(
        500, ge=1, le=100_000,
        description="With end_to_end_ack: most events published and waiting for the consumer's ack; the rest wait "
        "on the gate. Keep it below the brokers' max_queued_messages.",
    )
    max_backlog_rate: float = Field(
        20.0, ge=0,
        description="Most events per second when draining a backlog after an outage; check-ins made after the "
        "reconnect go ahead of it. 0 = no limit (strictly oldest first).",
    )
    hello_jitter_s: float = Field(
        5.0, ge=0, le=300,
        description="When the province's service says hello (it restarted), answer with status and telemetry after "
        "a random delay of up to this many seconds, so thousands of gates do not answer in the same instant.",
    )

    @model_validator(mode="after")
    def _tls_files(self) -> MqttConfig:
        if self.enabled and self.tls and not self.ca_file:
            raise ValueError("mqtt.ca_file is required when mqtt.tls = true")
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError("mqtt.cert_file and mqtt.key_file go together")
        return self


class ClockConfig(_Section):
    rtc: bool = Field(
        False, description="The device has a battery-backed RTC (Pi 5 with its cell, DS3231); the clock is trusted "
                           "while it agrees with it."
    )
    unsynchronised_policy: Literal["accept_and_flag", "refuse"] = Field(
        "accept_and_flag",
        description="While no source vouches for the wall clock: keep verifying and flag events clock_synced=false, "
        "or refuse passes whose verdict depended on the clock (red, clock_unsynchronised).",
    )


class CccdConfig(_Section):
    enabled: bool = Field(
        False, description="Accept chip ID card (CCCD) QR codes as 'identified, not verified'; otherwise reject them "
                           "as unsigned_pass."
    )
    hash_key_file: str | None = Field(
        None,
        description="Province secret for hashing ID numbers (at least 32 bytes, mode 0600, the same on every gate of "
        "the province, never on the backend). Events carry only the keyed hash, never the number.",
    )

    @model_validator(mode="after")
    def _key_needed(self) -> CccdConfig:
        if self.enabled and not self.hash_key_file:
            raise ValueError("cccd.hash_key_file is required when cccd.enabled = true")
        return self


class ServiceConfig(_Section):
    status_interval_s: float = Field(5.0, gt=0, le=3600, description="How often the live status line (systemd STATUS=) "
                                                                     "is refreshed.")
    telemetry_interval_s: float = Field(
        60.0, ge=0, le=86_400,
        description="How often a connected gate publishes telemetry and re-checks its outbox for the retained status; "
                    "0 = no telemetry.",
    )
    stop_flush_s: float = Field(5.0, ge=0, le=120, description="On stop, how long to keep publishing pending events "
                                                               "before disconnecting.")
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Log level (logs never contain personal data).")


class RemoteConfig(_Section):
    operator_keys: str | None = Field(
        None,
        description="JSON file of the operator public keys whose signed commands this gate obeys (status, "
        "self_test, reload_trust, flush_outbox, set_log_level, restart; docs/mqtt.md); unset: commands are off and "
        "the command topic is not subscribed.",
    )
    nonces_path: str = Field(
        "/var/lib/qrgate/command-nonces.sqlite",
        description="SQLite file of the nonces of accepted commands, kept until each expires, so a replay is "
        "refused even after a restart.",
    )


class GateConfig(_Section):
    """The whole device configuration (one TOML file)."""

    device: DeviceConfig = Field(default_factory=DeviceConfig, description="Who this gate is.")
    camera: CameraConfig = Field(default_factory=CameraConfig, description="Where frames come from.")
    decoder: DecoderConfig = Field(default_factory=DecoderConfig, description="How QR codes are read.")
    trust: TrustConfig = Field(default_factory=TrustConfig, description="Which issuers' signatures are trusted.")
    rules: RulesConfig = Field(default_factory=RulesConfig, description="Which genuine certificates the policy admits.")
    decision: DecisionConfig = Field(default_factory=DecisionConfig, description="How presentations are debounced.")
    feedback: FeedbackConfig = Field(default_factory=FeedbackConfig, description="LEDs, buzzer and relay.")
    outbox: OutboxConfig = Field(default_factory=OutboxConfig, description="Durable store of check-in events.")
    mqtt: MqttConfig = Field(default_factory=MqttConfig, description="Uplink to the broker.")
    clock: ClockConfig = Field(default_factory=ClockConfig, description="How far the wall clock is trusted.")
    cccd: CccdConfig = Field(default_factory=CccdConfig, description="Chip citizen ID cards for people without a "
                                                                     "signed pass.")
    service: ServiceConfig = Field(default_factory=ServiceConfig, description="Daemon housekeeping.")
    remote: RemoteConfig = Field(default_factory=RemoteConfig, description="Signed commands from the province's "
                                                                       "operators.")

    @model_validator(mode="after")
    def _static_scene_still_decoded(self) -> GateConfig:
        # The watchdog counts decoded frames as progress (service.py): a static scene must still be decoded
        # well within the unit's WatchdogSec (20 s, fed every 10 s), or a healthy gate would be restarted.
        every_s = self.decoder.decode_every / self.camera.fps
        if every_s > MAX_STATIC_DECODE_GAP_S:
            raise ValueError(f"decoder.decode_every = {self.decoder.decode_every} at camera.fps = {self.camera.fps:g} "
                             f"decodes a static scene every {every_s:.1f} s; at most {MAX_STATIC_DECODE_GAP_S:g} s")
        return self
