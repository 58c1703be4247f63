"""The settings of the export to the national system and of retention: two sections of the service's TOML file
(``[export]`` and ``[retention]`` of ``ProvinceConfig``), in the style of ``settings``: strict, frozen, every key
described. They live here, beside the rooms that read them, so that ``settings`` only gathers sections.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Seconds = Annotated[float, Field(gt=0, le=86400)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ExportSettings(_Section):
    endpoint: str | None = Field(
        None, description="HTTPS URL the batches are POSTed to (the national system's intake); unset: no export.")
    source: str = Field("province", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
                        description="This province's code as the national system knows it; sent in every batch.")
    ca_file: Path | None = Field(None, description="CA certificate(s) the endpoint's certificate must chain to "
                                                   "(PEM); unset: the system's trusted CAs.")
    cert_file: Path | None = Field(None, description="This service's client certificate (PEM), where the national "
                                                     "system asks for mutual TLS.")
    key_file: Path | None = Field(None, description="Its private key (PEM, 0600, made on this machine).")
    token_file: Path | None = Field(None, description="File holding a bearer token sent as 'Authorization: Bearer' "
                                                      "(never the token here).")
    batch_size: int = Field(500, ge=1, le=10_000, description="Check-ins per batch.")
    timeout_s: Seconds = Field(30.0, description="How long to wait to connect, and for each read of the answer.")
    max_retries: int = Field(5, ge=0, le=1000, description="Retries of a batch after a temporary failure (a 5xx, a "
                                                           "timeout, a dropped connection) before the run stops.")
    backoff_s: Seconds = Field(2.0, description="Wait before the first retry; it doubles with each further one.")
    backoff_max_s: Seconds = Field(300.0, description="The longest wait between two tries.")
    poll_interval_s: Seconds = Field(60.0, description="When caught up, how long the export service waits before "
                                                       "looking for new check-ins.")

    @field_validator("endpoint")
    @classmethod
    def _https_only(cls, value: str | None) -> str | None:
        # Personal (if pseudonymous) data leaves the province here: never in clear text, never to a half-URL.
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme != "https" or not parts.hostname:
            raise ValueError("must be an https:// URL with a host name")
        if parts.username or parts.password:
            raise ValueError("must not carry credentials (use token_file or a client certificate)")
        return value

    @model_validator(mode="after")
    def _key_with_cert(self) -> ExportSettings:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together (mutual TLS needs both)")
        return self


class RetentionSettings(_Section):
    days: int = Field(28, ge=1, le=3650, description="Check-ins older than this many days (by the time of the "
                                                     "check-in) are purged from the store.")
    batch_size: int = Field(5000, ge=100, le=1_000_000,
                            description="Rows deleted per transaction, so the purge never holds the table long.")
