"""TLS for the uplink: the broker's certificate and host name are always verified, and a client certificate (one per
device) makes it mutual TLS. An unusable file is a configuration error, raised when the uplink is built and naming
the file, rather than a connection that fails forever."""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass

from cryptography import x509

from ..config import MqttConfig
from ..errors import UplinkError


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """TLS with server verification. ``ca_file`` None trusts the system's CAs; a client
    certificate and key (mutual TLS, one per device) go together."""

    ca_file: str | os.PathLike[str] | None
    cert_file: str | os.PathLike[str] | None = None
    key_file: str | os.PathLike[str] | None = None

    @classmethod
    def of(cls, config: MqttConfig) -> TlsSettings | None:
        """What an ``[mqtt]`` section asks for; None for ``tls = false`` (plain MQTT, e.g. to a loopback broker)."""
        if not config.tls:
            return None
        return cls(config.ca_file, config.cert_file, config.key_file)

    def context(self) -> ssl.SSLContext:
        """An SSLContext that verifies the broker's certificate and host name; UplinkError names
        the file that cannot be used."""
        if (self.cert_file is None) != (self.key_file is None):
            raise UplinkError("TLS client certificate and key go together: give both cert_file and key_file or neither")
        files = (("CA file", self.ca_file), ("client certificate", self.cert_file), ("client key", self.key_file))
        for role, path in files:
            if path is None:
                continue
            try:
                with open(path, "rb"):
                    pass
            except OSError as exc:
                raise UplinkError(f"TLS {role} {path}: {exc.strerror or exc}") from exc
        try:
            context = ssl.create_default_context(cafile=os.fspath(self.ca_file) if self.ca_file else None)
        except ssl.SSLError as exc:
            raise UplinkError(f"TLS CA file {self.ca_file} holds no usable certificate: {exc}") from exc
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.cert_file is not None:
            try:
                context.load_cert_chain(os.fspath(self.cert_file), os.fspath(self.key_file))  # type: ignore[arg-type]
            except ssl.SSLError as exc:
                raise UplinkError(
                    f"TLS client certificate {self.cert_file} / key {self.key_file}: not a matching PEM pair ({exc})"
                ) from exc
        return context

    def client_certificate_validity(self) -> tuple[float, float] | None:
        """The client certificate's notBefore/notAfter (epoch s), to explain a broker's refusal that
        TLS itself may not report (the alert can be lost when the broker closes at once)."""
        if self.cert_file is None:
            return None
        try:
            with open(self.cert_file, "rb") as pem:
                certificate = x509.load_pem_x509_certificate(pem.read())
        except (OSError, ValueError):
            return None  # context() has already named an unusable file
        return certificate.not_valid_before_utc.timestamp(), certificate.not_valid_after_utc.timestamp()
