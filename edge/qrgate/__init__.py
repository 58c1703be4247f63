"""qrgate: the on-device daemon of a QR check-in gate."""

__version__ = "0.1.0"
