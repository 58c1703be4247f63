"""The OpenCV sources: image files, a video file, and the USB camera path (fed from a video stream)."""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
import pytest
import segno

from qrgate.decoding.zxing import ZxingDecoder
from qrgate.errors import CameraUnavailable, FrameSourceError
from qrgate.frames.opencv import FileSource, UsbCamera, VideoFileSource


def qr_frame(text: str, size: tuple[int, int] = (240, 320)) -> np.ndarray:
    buf = io.BytesIO()
    segno.make_qr(text).save(buf, kind="png", scale=4, border=4)
    code = cv2.imdecode(np.frombuffer(buf.getvalue(), np.uint8), cv2.IMREAD_GRAYSCALE)
    frame = np.full(size, 180, np.uint8)
    frame[20 : 20 + code.shape[0], 30 : 30 + code.shape[1]] = code
    return frame


def write_video(path: Path, frames: list[np.ndarray], fps: float = 25.0) -> None:
    height, width = frames[0].shape
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), fps, (width, height))  # lossless
    if not writer.isOpened():
        pytest.skip("this OpenCV build has no FFV1 encoder to write a test video")
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR))
    writer.release()


@pytest.fixture
def image_dir(tmp_path: Path) -> Path:
    for k in range(3):
        cv2.imwrite(str(tmp_path / f"{k:02d}.png"), qr_frame(f"file {k}"))
    cv2.imwrite(str(tmp_path / "03.jpg"), cv2.cvtColor(qr_frame("file 3"), cv2.COLOR_GRAY2BGR))  # colour on disk
    (tmp_path / "notes.txt").write_text("not an image")
    return tmp_path


def test_file_source_reads_a_directory_in_name_order_as_grey(image_dir):
    decoder = ZxingDecoder()
    with FileSource(image_dir, fps=10.0) as source:
        frames = [source.read() for _ in range(4)]
        with pytest.raises(EOFError):
            source.read()
    assert [f.index for f in frames] == [0, 1, 2, 3]
    assert [f.captured_at for f in frames] == [0.0, 0.1, 0.2, 0.3]
    assert all(f.grey.ndim == 2 and f.grey.dtype == np.uint8 for f in frames)
    assert [decoder.decode(f.grey)[0].text for f in frames] == ["file 0", "file 1", "file 2", "file 3"]
    assert source.frames_dropped == 0


def test_file_source_loops_over_an_explicit_list(image_dir):
    with FileSource([image_dir / "02.png", image_dir / "00.png"], loop=True) as source:
        first = [source.read().grey.copy() for _ in range(5)]
    assert np.array_equal(first[0], first[2]) and np.array_equal(first[1], first[3])
    assert not np.array_equal(first[0], first[1])


def test_an_unreadable_image_is_named(tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with FileSource(broken) as source, pytest.raises(FrameSourceError, match=r"broken.png"):
        source.read()


def test_missing_paths_and_empty_directories_are_named(tmp_path):
    with pytest.raises(FrameSourceError, match=r"nowhere.png"):
        FileSource(tmp_path / "nowhere.png").start()
    with pytest.raises(FrameSourceError, match="no image files"):
        FileSource(tmp_path).start()


def test_video_file_source_reads_every_frame_then_eof(tmp_path):
    path = tmp_path / "gate.mkv"
    frames = [qr_frame(f"video {k}") for k in range(6)]
    write_video(path, frames, fps=25.0)
    decoder = ZxingDecoder()
    with VideoFileSource(path) as source:
        got = []
        while True:
            try:
                frame = source.read()
            except EOFError:
                break
            texts = [c.text for c in decoder.decode(frame.grey)]
            got.append((frame.index, frame.captured_at, texts, frame.grey.copy()))
    assert [g[0] for g in got] == list(range(6))
    assert [g[1] for g in got] == pytest.approx([k / 25.0 for k in range(6)])
    assert [g[2] for g in got] == [[f"video {k}"] for k in range(6)]
    assert np.array_equal(got[0][3], frames[0])  # lossless round trip, BGR back to grey


def test_video_file_errors_name_the_file(tmp_path):
    with pytest.raises(FrameSourceError, match=r"missing.mp4"):
        VideoFileSource(tmp_path / "missing.mp4").start()
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00" * 100)
    with pytest.raises(FrameSourceError, match=r"junk.mp4"):
        VideoFileSource(junk).start()


def test_usb_camera_that_does_not_exist_is_unavailable():
    with pytest.raises(CameraUnavailable, match="/dev/video99"):
        UsbCamera("/dev/video99").start()


def test_usb_camera_path_delivers_grey_frames_then_reports_the_stream_ending(tmp_path):
    # No camera here: a non-V4L2 string opens through FFmpeg, as a network camera would, which
    # exercises the same capture thread, BGR-to-grey conversion, slot and failure reporting.
    path = tmp_path / "stream.mkv"
    frames = [qr_frame(f"usb {k}") for k in range(40)]
    write_video(path, frames)
    decoder = ZxingDecoder()
    camera = UsbCamera(str(path), stall_timeout_s=0.2)
    read = []
    with camera:
        with pytest.raises(CameraUnavailable, match="stopped delivering frames"):
            while True:
                frame = camera.read(timeout=5)
                assert frame is not None
                assert frame.grey.shape == (240, 320) and frame.grey.dtype == np.uint8
                read.append((frame.index, decoder.decode(frame.grey)[0].text))
        dropped = camera.frames_dropped
    indices = [index for index, _ in read]
    assert indices == sorted(set(indices)) and read
    # the first frame is consumed by start() to learn the size; the thread numbers the rest
    assert all(text == f"usb {index + 1}" for index, text in read)
    assert len(read) + dropped <= len(frames) - 1
    camera.close()  # idempotent


def test_video_file_source_loops_when_asked(tmp_path):
    path = tmp_path / "short.mkv"
    write_video(path, [qr_frame(f"loop {k}") for k in range(3)], fps=10.0)
    decoder = ZxingDecoder()
    frames, texts = [], []
    with VideoFileSource(path, loop=True) as source:
        for _ in range(7):
            frames.append(source.read())
            texts.append(decoder.decode(frames[-1].grey)[0].text)  # a frame is valid until the next read
    assert texts == ["loop 0", "loop 1", "loop 2"] * 2 + ["loop 0"]
    assert [f.index for f in frames] == list(range(7))
    assert frames[-1].captured_at == pytest.approx(0.6)
