"""Technician and issuer side of qrgate: keys, trust anchors, pass minting, device provisioning."""
