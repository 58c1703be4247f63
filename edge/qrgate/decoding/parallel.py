"""Decoding on several cores, latest frame wins.

zxing-cpp, OpenCV and ZBar (through ctypes) release the GIL while they work: two threads decoding
640x480 frames here do 1.9-2.0x the frames of one (measured: docs/performance.md). So the
workers are threads, sharing the read-only decoders, with no process or shared-memory machinery.

The capture loop (the main thread) calls ``submit(frame)``: the presence gate decides there whether the frame
needs decoding at all, then the frame is copied into an idle worker's buffer (0.02 ms for
640x480; the camera reuses its buffers, so a worker cannot keep a view). When every worker is
busy the frame waits in a single pending slot; a newer frame replaces it and the replaced one is
counted in ``frames_dropped``. A worker that finishes takes the pending frame, so no backlog ever
forms and a result is never older than the frames in hand at the time.

Results go to ``on_decoded(frame, codes)`` on the worker's thread, one call at a time (never two
at once), as soon as each frame is decoded: a hard frame that runs the repair ladder does not hold
back the result of an easy frame behind it. Consequently results can arrive out of capture
order, by at most ``workers - 1`` frames; ``frame.captured_at`` is each frame's own.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import numpy as np

from ..frames.base import Frame
from .base import DecodedCode
from .pipeline import FramePipeline

log = logging.getLogger(__name__)

OnDecoded = Callable[[Frame, list[DecodedCode]], None]


class _Worker:
    __slots__ = ("buffer", "frame", "thread")

    def __init__(self) -> None:
        self.buffer: np.ndarray | None = None
        self.frame: Frame | None = None  # the job in hand; None while idle
        self.thread: threading.Thread | None = None


class ParallelDecoder:
    """``workers`` decode threads behind a latest-frame-wins hand-off."""

    def __init__(self, pipeline: FramePipeline, on_decoded: OnDecoded, *, workers: int = 2) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.pipeline = pipeline
        self.workers = workers
        self._on_decoded = on_decoded
        self._cond = threading.Condition()
        self._deliver = threading.Lock()
        self._workers = [_Worker() for _ in range(workers)]
        self._pending: Frame | None = None
        self._pending_buffer: np.ndarray | None = None
        self._closed = False
        self._error: BaseException | None = None
        self.frames_submitted = 0
        self.frames_skipped = 0  # the presence gate saw nothing to decode
        self.frames_dropped = 0  # replaced in the pending slot before a worker was free
        self.frames_decoded = 0
        for n, worker in enumerate(self._workers):
            worker.thread = threading.Thread(target=self._run, args=(worker,), name=f"qrgate-decode-{n}", daemon=True)
            worker.thread.start()

    def submit(self, frame: Frame, *, wait: bool = False) -> None:
        """Hand ``frame`` over for decoding; returns at once (after a 640x480 copy).

        ``wait=True`` blocks until a worker is free instead of dropping a pending frame, for
        finite sources (files, video) whose every frame should be decoded. Raises the exception
        a worker died of, if one did; RuntimeError once closed.
        """
        self._raise_if_failed()
        self.frames_submitted += 1
        if not self.pipeline.wants(frame.grey):
            self.frames_skipped += 1
            return
        with self._cond:
            if self._closed:
                raise RuntimeError("the parallel decoder is closed")
            idle = self._idle_worker()
            while idle is None and wait:
                self._cond.wait()
                self._raise_if_failed()
                idle = self._idle_worker()
            if idle is not None:
                idle.buffer = _copy_into(idle.buffer, frame.grey)
                idle.frame = Frame(idle.buffer, frame.captured_at, frame.index)
                self._cond.notify_all()
                return
            if self._pending is not None:
                self.frames_dropped += 1
            self._pending_buffer = _copy_into(self._pending_buffer, frame.grey)
            self._pending = Frame(self._pending_buffer, frame.captured_at, frame.index)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until every submitted frame has been decoded and delivered; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._pending is not None or any(w.frame is not None for w in self._workers):
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining)
        self._raise_if_failed()
        return True

    def close(self) -> None:
        """Stop the workers after the frames they hold; a pending frame is discarded. Idempotent."""
        with self._cond:
            self._closed = True
            self._pending = None
            self._cond.notify_all()
        for worker in self._workers:
            if worker.thread is not None and worker.thread is not threading.current_thread():
                worker.thread.join()

    def __enter__(self) -> ParallelDecoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _idle_worker(self) -> _Worker | None:
        return next((w for w in self._workers if w.frame is None), None)

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def _run(self, worker: _Worker) -> None:
        read = self.pipeline.read
        while True:
            with self._cond:
                while worker.frame is None and not self._closed:
                    self._cond.wait()
                if worker.frame is None:
                    return
                frame = worker.frame
            try:
                codes = read(frame.grey)
                with self._deliver:
                    self.frames_decoded += 1
                    self._on_decoded(frame, codes)
            except BaseException as exc:  # surfaced by the next submit(): the capture loop must not go on blind
                log.exception("decode worker failed")
                with self._cond:
                    self._error = exc
                    worker.frame = None
                    self._closed = True
                    self._cond.notify_all()
                return
            with self._cond:
                worker.frame = None
                if self._pending is not None:
                    # Take the pending frame by swapping buffers: no copy.
                    worker.buffer, self._pending_buffer = self._pending_buffer, worker.buffer
                    worker.frame, self._pending = self._pending, None
                self._cond.notify_all()


def _copy_into(buffer: np.ndarray | None, grey: np.ndarray) -> np.ndarray:
    if buffer is None or buffer.shape != grey.shape:
        buffer = np.empty(grey.shape, np.uint8)
    np.copyto(buffer, grey)
    return buffer
