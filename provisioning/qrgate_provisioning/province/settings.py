"""The province service's configuration file (``/etc/qrgate/province.toml``): one strict section per component.

Each component takes its own section as an object (the fleet listener ``BrokerSettings``, the dashboard
``WebSettings``), as the gate's components take theirs. Unknown keys are refused, and every problem is
reported at once with its line (``qrgate.config_file.validate_toml``, the same reader as the gate's).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from qrgate.config_file import validate_toml
from qrgate.errors import ConfigError
from qrgate.wire import MAX_COMMAND_LIFETIME_S

from .export_settings import ExportSettings, RetentionSettings

PositiveSeconds = Annotated[float, Field(gt=0, le=7 * 86400)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatabaseSettings(_Section):
    dsn: str = Field("dbname=qrgate host=/run/postgresql",
                     description="PostgreSQL connection string (libpq), the same database the consumer stores into.")


class BrokerSettings(_Section):
    host: str = Field("localhost", description="The provincial broker.")
    port: int = Field(8883, ge=1, le=65535, description="Its port (8883: MQTT over TLS).")
    ca_file: Path | None = Field(None, description="CA of the broker's certificate; enables TLS.")
    cert_file: Path | None = Field(None, description="This service's client certificate (mutual TLS).")
    key_file: Path | None = Field(None, description="This service's private key (0600, made on this machine).")
    username: str | None = Field(None, description="MQTT user name, where the broker uses passwords instead.")
    password_file: Path | None = Field(None, description="File holding the MQTT password (never the password here).")
    client_id: str = Field("qrgate-province", min_length=1, max_length=64,
                           description="Client id; stable, so the broker recognises the service after a restart.")
    keepalive_s: int = Field(30, ge=5, le=600, description="MQTT keep-alive.")


class FleetSettings(_Section):
    heartbeat_s: PositiveSeconds = Field(
        60, description="How often a gate sends telemetry (its service.telemetry_interval_s).")
    missed_heartbeats: int = Field(
        3, ge=1, le=100,
        description="A gate heard from nothing for this many heartbeats is offline, even without a last will "
                    "(a power cut takes the broker's keep-alive timeout to notice; this is the fallback).")


class AlertLimits(_Section):
    offline_s: PositiveSeconds = Field(900, description="Alert when a gate has been offline this long.")
    trust_list_max_age_h: float = Field(48, gt=0, le=24 * 365,
                                        description="Alert when a gate's trust list is older than this.")
    backlog_events: int = Field(500, ge=1, description="Alert when a gate holds this many undelivered events ...")
    backlog_growing_reports: int = Field(3, ge=2, le=100,
                                         description="... or its backlog grew over this many reports in a row.")
    rejections_in_row: int = Field(10, ge=2, le=10_000, description="Alert on this many rejections in a row at a gate.")
    disk_free_min_bytes: int = Field(200 * 1024 * 1024, ge=0,
                                     description="Alert when a gate's free disk falls below this.")


class WebSettings(_Section):
    bind: str = Field("127.0.0.1", description="Address the dashboard listens on (put a TLS proxy in front).")
    port: int = Field(8080, ge=1, le=65535, description="Its port.")
    session_max_age_s: int = Field(8 * 3600, ge=60, le=30 * 86400, description="A log-in lasts this long.")
    secure_cookies: bool = Field(True, description="Send cookies only over HTTPS (off only for a loopback test).")
    language: str = Field("vi", pattern=r"^(vi|en)$", description="Default language of the pages: vi or en.")
    metrics_token_file: Path | None = Field(
        None, description="File holding the bearer token Prometheus must send for /metrics (its "
                          "authorization.credentials_file); unset: /metrics is open and must be firewalled.")


class ReportSettings(_Section):
    timezone: str = Field("Asia/Ho_Chi_Minh", description="The authorities' day: the report counts its local day.")
    offline_hours_limit: float = Field(
        2.0, gt=0, le=24,
        description="A place whose gates were all offline longer than this during its opening hours does not comply.")
    output_dir: Path = Field(Path("/var/lib/qrgate-province/reports"),
                             description="Where each day's CSV and PDF are written.")
    publish: bool = Field(True, description="Publish each report as a retained MQTT message.")


class CommandSettings(_Section):
    key_file: Path | None = Field(
        None, description="The operator signing key (Ed25519, mode 0600, made on this machine with `qrgate-province "
                          "command-key new`; its public half is in every gate's operators.json) the dashboard signs "
                          "commands with; unset: the dashboard sends no commands and its command page says so.")
    lifetime_s: float = Field(
        120, gt=0, le=MAX_COMMAND_LIFETIME_S,
        description="How long after signing a gate may still act on a command (a gate offline when it was sent "
                    f"must not act on it much later); at most {MAX_COMMAND_LIFETIME_S} s, what a gate accepts.")
    timeout_s: float = Field(10, gt=0, le=60, description="How long the dashboard waits for the gate's answer.")
    broker_cert_file: Path | None = Field(
        None, description="A client certificate of its own for the command connection (its CN listed as a service "
                          "in the provincial broker's ACL). That broker makes a certificate's CN the client id, so "
                          "with [broker]'s certificate each command would knock the fleet listener off; unset: "
                          "[broker]'s certificate, for a broker that does not (a test's).")
    broker_key_file: Path | None = Field(None, description="Its private key (0600, made on this machine).")

    @model_validator(mode="after")
    def _key_with_cert(self) -> CommandSettings:
        if (self.broker_cert_file is None) != (self.broker_key_file is None):
            raise ValueError("broker_cert_file and broker_key_file go together")
        return self


class ProvinceConfig(_Section):
    database: DatabaseSettings = Field(default_factory=DatabaseSettings, description="The PostgreSQL store.")
    broker: BrokerSettings = Field(default_factory=BrokerSettings, description="The provincial broker.")
    fleet: FleetSettings = Field(default_factory=FleetSettings, description="Live fleet state.")
    alerts: AlertLimits = Field(default_factory=AlertLimits, description="When the dashboard raises an alert.")
    web: WebSettings = Field(default_factory=WebSettings, description="The dashboard.")
    report: ReportSettings = Field(default_factory=ReportSettings, description="The daily report.")
    export: ExportSettings = Field(default_factory=ExportSettings,
                                   description="The export to the national system (no endpoint: no export).")
    retention: RetentionSettings = Field(default_factory=RetentionSettings, description="How long check-ins are kept.")
    commands: CommandSettings = Field(default_factory=CommandSettings,
                                      description="Commands to gates from the dashboard (no key_file: none).")


def parse_province_config(text: str, source: str = "<province.toml>") -> ProvinceConfig:
    """Validate the service's TOML; ConfigError lists every problem as ``source:line: key: message``."""
    _data, config, _lines = validate_toml(ProvinceConfig, text, source,
                                          unknown_key_hint="see docs/operators.md for the keys")
    return config


def load_province_config(path: str | Path | None) -> ProvinceConfig:
    """The file at ``path``, or every default when ``path`` is None."""
    if path is None:
        return ProvinceConfig()
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    return parse_province_config(text, str(path))
