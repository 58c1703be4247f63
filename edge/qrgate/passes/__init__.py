"""Signed pass verification, offline: EU DCC (HC1:) and qrgate's own check-in pass."""
