"""What ``qrgate run`` would refuse, found without starting anything: ``qrgate check-config`` runs it, as the
unit's ExecStartPre and as the technician's provisioning check, so a config that passes the check starts.

Each check builds the same object ``run`` builds from its config section (the trust store, the list signers, the
board profile, the TLS context, the validation rules, the CCCD key, the operator keys) by calling the same function,
so the two can never disagree; nothing is opened that a running gate holds (the camera, the outbox, the GPIO lines,
the command nonces).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from .config import GateConfig
from .errors import QrgateError
from .feedback import configured_profile
from .passes.signed_list import SignerKeys
from .passes.trust import TrustStore
from .remote.auth import OperatorKeys
from .uplink.tls import TlsSettings


def preflight(config: GateConfig) -> list[str]:
    """Every problem ``run`` would stop at, each as ``section.key: what is wrong``; empty when it would start."""
    # Imported here: service.py pulls in OpenCV and paho, which the syntax check alone does not need.
    from .policies import baseline_rules, cccd_policy

    problems: list[str] = []

    def check(where: str, build: Callable[[], object]) -> None:
        try:
            build()
        except (QrgateError, OSError, ValueError) as exc:
            problems.append(f"{where}: {exc}")

    trust = config.trust
    check("trust.paths", lambda: TrustStore.from_paths(trust.paths))
    if trust.signers_dir:
        signers_dir = trust.signers_dir
        check("trust.signers_dir", lambda: SignerKeys.from_pem_dir(signers_dir))
    check("rules.baseline", lambda: baseline_rules(config.rules))
    check("cccd.hash_key_file", lambda: cccd_policy(config))
    check("feedback.board", lambda: configured_profile(config.feedback))
    tls = TlsSettings.of(config.mqtt)
    if config.mqtt.enabled and tls is not None:
        check("mqtt (TLS files)", tls.context)
    operator_keys = config.remote.operator_keys
    if operator_keys:
        check("remote.operator_keys", lambda: OperatorKeys.load(operator_keys))
    _check_writable("outbox.path", Path(config.outbox.path), "the outbox", problems)
    if operator_keys:
        _check_writable("remote.nonces_path", Path(config.remote.nonces_path), "the command nonces", problems)
    camera = config.camera
    if camera.source in ("files", "video") and camera.path and not Path(camera.path).exists():
        problems.append(f"camera.path: {camera.path}: no such file or directory")
    return problems


def _check_writable(where: str, path: Path, what: str, problems: list[str]) -> None:
    """The nearest existing directory above ``path`` must let this user create it there."""
    directory = path.parent
    existing = next((p for p in (directory, *directory.parents) if p.exists()), None)
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        problems.append(f"{where}: {existing} is not writable by this user: {what} could not be created")
