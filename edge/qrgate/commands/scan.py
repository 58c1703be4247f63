"""``qrgate scan FILE... [--json]``: read the QR codes in image files with the gate's decoder chain.

For technicians checking a photo taken at a site, and for measuring the decoders on photo sets.
The chain is the gate's (zxing-cpp, then the repair ladder on a QR it located but could not read),
with every rung of the ladder allowed and whole-image passes after it for what it left unread
(decoding/photo.py): a photo is not a frame with a deadline, and it may hold several codes.

Prints per file each code's text, its four corners (x, y in image pixels, clockwise from the one
nearest the top-left) and the decode time; ``--json`` prints one JSON object per file and line:
``{"file", "codes": [{"text", "corners"}], "ms"}`` (an unreadable file: ``{"file", "error"}``).
Exit 0 if any file held a code, 1 if none did, 2 if a file could not be read (or a usage error).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import TYPE_CHECKING

from . import Subcommands

if TYPE_CHECKING:
    import numpy as np

EXIT_FOUND, EXIT_NONE, EXIT_ERROR = 0, 1, 2


def add_parser(subparsers: Subcommands) -> None:
    parser = subparsers.add_parser(
        "scan",
        help="read the QR codes in image files (text, corners, time)",
        description="Decode image files with the gate's decoder chain and print each code's text, its four "
        "corner points and the time taken. Exit 0 if any code was found, 1 if none, 2 if a file could not be read.",
    )
    parser.add_argument("files", metavar="FILE", nargs="+", help="image files (PNG, JPEG, anything OpenCV reads)")
    parser.add_argument("--json", action="store_true", help="one JSON object per file and line")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    # Imported here, not at the top: the CLI imports every subcommand module to build its parser.
    from ..decoding.factory import build_photo_decoder

    decoder = build_photo_decoder()
    found_any = failed = False
    for path in args.files:
        grey, error = _read_grey(path)
        if grey is None:
            failed = True
            if args.json:
                print(json.dumps({"file": path, "error": error}))
            else:
                print(f"qrgate scan: {path}: {error}", file=sys.stderr)
            continue
        start = time.perf_counter()
        codes = decoder.decode(grey)
        ms = (time.perf_counter() - start) * 1000.0
        found_any |= bool(codes)
        if args.json:
            entries = [{"text": code.text, "corners": [list(point) for point in code.corners]} for code in codes]
            print(json.dumps({"file": path, "codes": entries, "ms": round(ms, 3)}, ensure_ascii=False))
            continue
        print(f"{path}: {len(codes)} code{'s' if len(codes) != 1 else ''} in {ms:.1f} ms")
        for code in codes:
            corners = " ".join(f"({x},{y})" for x, y in code.corners)
            # repr-style escapes keep control characters in a binary payload from garbling the terminal.
            text = code.text.encode("unicode_escape").decode("ascii") if not code.text.isprintable() else code.text
            print(f"  {text}")
            print(f"    corners {corners}  read by {code.backend}")
    if failed:
        return EXIT_ERROR
    return EXIT_FOUND if found_any else EXIT_NONE


def _read_grey(path: str) -> tuple[np.ndarray | None, str]:
    """The image at ``path`` as grey, or None and why not. Reads the bytes itself: ``cv2.imread``
    gives no reason and prints OpenCV warnings of its own."""
    import cv2
    import numpy as np

    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError as exc:
        return None, exc.strerror or str(exc)
    grey = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE) if data else None
    if grey is None:
        return None, "not an image OpenCV can decode"
    return grey, ""
