"""The presence gate: skip decoding while the scene is static and shows nothing QR-like.

Most frames at a gate show the same empty scene. Comparing a thumbnail of each frame with a
slowly learnt background costs a tenth of a zxing-cpp call, and decides whether the frame can
be skipped. It is built never to delay a code:

* any change in the scene (a hand, a phone, a person, the lights) means decode;
* while the last decoded frame showed a code, or a QR the decoder could not read, every frame
  is decoded, however still the scene (a code held motionless is absorbed into the background);
* every ``decode_every``-th frame is decoded regardless, so a gate whose background has learnt
  something it should not have (a code held still from start-up) still looks at it.

A code cannot appear without changing the scene, so the first frame showing it is decoded.
"""

from __future__ import annotations

import cv2
import numpy as np

THUMBNAIL = (80, 60)  # (width, height): one sample per 8x8 pixels of a 640x480 frame


class PresenceGate:
    """Decides per frame whether to decode. One caller (the capture loop); ``active`` may be set
    from a decode thread (a plain attribute store, atomic in Python).

    ``threshold`` is the grey-level change of a thumbnail sample that counts as a change (sensor
    noise moves a sample by 1-3 levels); ``min_changed`` how many samples must change;
    ``learn_rate`` how fast the background absorbs a lasting change (0.25: a bag put down in
    view becomes background after about ten frames). Absorbing fast costs no code: a code that
    stays still and unread would decode the same way again, and moving it is a change.
    """

    def __init__(self, *, threshold: int = 10, min_changed: int = 4, decode_every: int = 10,
                 learn_rate: float = 0.25) -> None:
        if not 1 <= threshold <= 255 or min_changed < 1 or decode_every < 1 or not 0.0 < learn_rate <= 1.0:
            raise ValueError("threshold must be 1-255, min_changed and decode_every >= 1, learn_rate in (0, 1]")
        self.threshold = threshold
        self.min_changed = min_changed
        self.decode_every = decode_every
        self.learn_rate = learn_rate
        self.active = False  # the last decode saw a code or an unreadable QR: decode every frame
        self.frames = 0
        self.skipped = 0
        self._shape: tuple[int, int] | None = None
        self._since_decode = 0
        width, height = THUMBNAIL
        self._thumb = np.empty((height, width), np.uint8)
        self._diff = np.empty((height, width), np.uint8)
        self._background = np.empty((height, width), np.float32)
        self._background_u8 = np.empty((height, width), np.uint8)

    def wants(self, grey: np.ndarray) -> bool:
        """Whether ``grey`` should be decoded; updates the background. About 0.03 ms at 640x480."""
        self.frames += 1
        # INTER_LINEAR samples 2x2 pixels per thumbnail pixel: enough averaging to keep sensor
        # noise well below the threshold, at a tenth of INTER_AREA's cost (0.015 vs 0.16 ms).
        cv2.resize(grey, THUMBNAIL, dst=self._thumb, interpolation=cv2.INTER_LINEAR)
        if self._shape != grey.shape:  # first frame, or the camera changed size: start over
            self._shape = grey.shape
            self._background[:] = self._thumb
            self._background_u8[:] = self._thumb
            self._since_decode = 0
            return True
        cv2.absdiff(self._thumb, self._background_u8, dst=self._diff)
        cv2.threshold(self._diff, self.threshold, 255, cv2.THRESH_BINARY, dst=self._diff)
        changed = cv2.countNonZero(self._diff) >= self.min_changed
        cv2.accumulateWeighted(self._thumb, self._background, self.learn_rate)
        cv2.convertScaleAbs(self._background, dst=self._background_u8)
        self._since_decode += 1
        if changed or self.active or self._since_decode >= self.decode_every:
            self._since_decode = 0
            return True
        self.skipped += 1
        return False
