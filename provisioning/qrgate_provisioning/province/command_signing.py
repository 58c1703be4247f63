"""Operator keys and signed commands (issue 15): the province's side of ``qrgate.remote``.

An operator key is Ed25519, made on the operator service's machine (``qrgate-province command-key new``) and never
copied: its private half stays in a 0600 file there, its public half goes to every gate as an entry of
``/etc/qrgate/operators.json`` (``operator_keys_file``). A command is signed as its exact JSON bytes
(wire.SignedCommand), for one device, with a fresh 128-bit nonce and a short life (default 2 minutes, at most
wire.MAX_COMMAND_LIFETIME_S): a gate that is offline when it is sent does not act on it an hour later.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from qrgate.wire import MAX_COMMAND_LIFETIME_S, CommandName, GateCommand, SignedCommand

from ..errors import ProvinceError

DEFAULT_LIFETIME_S = 120.0


@dataclass(frozen=True)
class OperatorKey:
    """An operator signing key and its id."""

    kid: str
    private_key: Ed25519PrivateKey

    def public_entry(self) -> dict[str, str]:
        """This key's entry for a gate's operators.json."""
        raw = self.private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return {"kid": self.kid, "public_key": base64.b64encode(raw).decode()}


def new_operator_key(path: str | Path, kid: str) -> OperatorKey:
    """Make a key and write it to ``path`` (0600, refusing to overwrite one)."""
    key = OperatorKey(kid, Ed25519PrivateKey.generate())
    pem = key.private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption())
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ProvinceError(f"{path}: an operator key is already there; remove it first to make a new one") from None
    with os.fdopen(fd, "wb") as file:
        file.write(f"# qrgate operator key {kid}\n".encode() + pem)
    return key


def load_operator_key(path: str | Path) -> OperatorKey:
    """The key in ``path``, refusing a file others can read."""
    path = Path(path)
    try:
        mode = path.stat().st_mode & 0o777
        text = path.read_bytes()
    except OSError as exc:
        raise ProvinceError(f"operator key {path}: cannot read: {exc.strerror or exc}") from None
    if mode & 0o077:
        raise ProvinceError(f"operator key {path}: mode {mode:04o} lets others read it; chmod 600 it")
    first, _, pem = text.partition(b"\n")
    if not first.startswith(b"# qrgate operator key "):
        raise ProvinceError(f"operator key {path}: not a qrgate operator key file")
    try:
        private = serialization.load_pem_private_key(pem, password=None)
    except ValueError as exc:
        raise ProvinceError(f"operator key {path}: unreadable: {exc}") from None
    if not isinstance(private, Ed25519PrivateKey):
        raise ProvinceError(f"operator key {path}: not an Ed25519 key")
    return OperatorKey(first.removeprefix(b"# qrgate operator key ").decode().strip(), private)


def operator_keys_file(keys: list[OperatorKey]) -> str:
    """The JSON a gate installs as its operators.json."""
    return json.dumps({"keys": [key.public_entry() for key in keys]}, indent=2) + "\n"


def new_command(command: CommandName, device_id: str, operator: str, *, args: dict[str, str] | None = None,
                lifetime_s: float = DEFAULT_LIFETIME_S, now: float | None = None) -> GateCommand:
    """A command for one device with a fresh nonce, valid from now for ``lifetime_s``."""
    if not 0 < lifetime_s <= MAX_COMMAND_LIFETIME_S:
        raise ProvinceError(f"a command lives at most {MAX_COMMAND_LIFETIME_S} s, not {lifetime_s}")
    issued = time.time() if now is None else now
    return GateCommand(command=command, args=args or {}, device_id=device_id, issued_at=issued,
                       expires_at=issued + lifetime_s, nonce=secrets.token_hex(16), operator=operator)


def sign_command(key: OperatorKey, command: GateCommand) -> SignedCommand:
    """The command's JSON bytes and this key's signature over exactly them."""
    body = command.model_dump_json().encode()
    signature = key.private_key.sign(body)
    return SignedCommand(kid=key.kid, command=_b64url(body), signature=_b64url(signature))


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
