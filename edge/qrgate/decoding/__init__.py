"""QR decoders behind one interface: zxing-cpp (default), pyzbar (backend and fallback)."""
