"""Is this command really from an operator, for this gate, now, and new? Pure checks in a fixed order, each with its
named outcome, so the answer on the response topic and the log line say exactly why a command was refused.

Order matters: nothing of the command is believed before its signature is good (a forged command's claimed
device or expiry is never echoed as if it were true), and the nonce is claimed last, only for a command that
passed everything else (a forged command cannot burn a real one's nonce).

Operator keys are Ed25519 (``cryptography``), listed in a JSON file the province installs with the gate
(``remote.operator_keys``): ``{"keys": [{"kid": "ops-2026", "public_key": "<base64 raw 32 bytes>"}]}``.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import ValidationError

from ..errors import ConfigError, QrgateError
from ..wire import MAX_COMMAND_LIFETIME_S, CommandOutcome, GateCommand, SignedCommand
from .nonces import NonceStore, NonceStoreError

CLOCK_SKEW_S = 30.0  # a command issued this far in the gate's future is still taken (clocks differ a little)


class CommandRefused(QrgateError):
    """The command is refused; ``outcome`` names why (wire.CommandOutcome). A refusal, not a fault of the gate."""

    def __init__(self, outcome: CommandOutcome, detail: str, command: GateCommand | None = None) -> None:
        super().__init__(f"{outcome}: {detail}")
        self.outcome: CommandOutcome = outcome
        self.detail = detail
        self.command = command


@dataclass(frozen=True, slots=True)
class OperatorKeys:
    """The operator keys this gate trusts, by key id."""

    keys: dict[str, Ed25519PublicKey]

    @classmethod
    def load(cls, path: str | Path) -> OperatorKeys:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            entries = data["keys"]
            keys = {str(e["kid"]): Ed25519PublicKey.from_public_bytes(base64.b64decode(e["public_key"], validate=True))
                    for e in entries}
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such file (remote.operator_keys)") from None
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, binascii.Error) as exc:
            raise ConfigError(f"{path}: not an operator key list ({exc})") from None
        return cls(keys)


def _b64url(text: str) -> bytes:
    """Strict base64url: a character outside the alphabet is an error, not silently dropped (the stdlib default)."""
    return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)


class CommandAuthenticator:
    """Checks SignedCommand payloads for one device against its trusted operator keys and its nonce store."""

    def __init__(self, device_id: str, keys: OperatorKeys, nonces: NonceStore) -> None:
        self.device_id = device_id
        self._keys = keys
        self._nonces = nonces

    def authenticate(self, payload: bytes, now: float) -> GateCommand:
        """The command, if it passes every check; CommandRefused with the outcome otherwise."""
        try:
            signed = SignedCommand.model_validate_json(payload)
            body, signature = _b64url(signed.command), _b64url(signed.signature)
        except (ValidationError, ValueError, binascii.Error) as exc:
            raise CommandRefused("malformed", f"not a signed command: {type(exc).__name__}") from None
        key = self._keys.keys.get(signed.kid)
        if key is None:
            raise CommandRefused("unknown_key", f"no trusted operator key {signed.kid!r}")
        try:
            key.verify(signature, body)
        except InvalidSignature:
            raise CommandRefused("bad_signature", f"the signature does not verify with key {signed.kid!r}") from None
        try:
            command = GateCommand.model_validate_json(body)
        except ValidationError as exc:
            raise CommandRefused("malformed", f"signed, but not a command: {exc.error_count()} problem(s)") from None
        if command.device_id != self.device_id:
            raise CommandRefused("wrong_device", f"for {command.device_id!r}, not this gate", command)
        if not command.issued_at <= command.expires_at <= command.issued_at + MAX_COMMAND_LIFETIME_S:
            raise CommandRefused("lifetime_too_long",
                                 f"valid for {command.expires_at - command.issued_at:.0f} s; at most "
                                 f"{MAX_COMMAND_LIFETIME_S} s and not negative", command)
        if now > command.expires_at:
            raise CommandRefused("expired", f"expired {now - command.expires_at:.0f} s ago", command)
        if command.issued_at > now + CLOCK_SKEW_S:
            raise CommandRefused("not_yet_valid", f"issued {command.issued_at - now:.0f} s in this gate's future",
                                 command)
        try:
            fresh = self._nonces.claim(command.nonce, command.expires_at, now)
        except NonceStoreError as exc:
            raise CommandRefused("failed", str(exc), command) from None
        if not fresh:
            raise CommandRefused("replayed", "this command was already received", command)
        return command
