"""The COSE signature algorithms qrgate accepts (IANA COSE Algorithms registry)."""

from __future__ import annotations

ES256 = -7  # ECDSA P-256 with SHA-256: the DCC primary algorithm, and qrgate passes
EDDSA = -8  # Ed25519: qrgate passes (smallest signature and fastest check on a Pi)
PS256 = -37  # RSASSA-PSS with SHA-256: the DCC secondary algorithm (Vietnam signs with it)

BY_NAME = {"ES256": ES256, "EdDSA": EDDSA, "PS256": PS256}
NAMES = {value: name for name, value in BY_NAME.items()}
