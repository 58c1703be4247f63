"""The dashboard under uvicorn: on the calling thread for ``qrgate-province serve`` (which then gets uvicorn's own
SIGTERM and SIGINT handling: finish the requests in flight, then return), or on a thread of its own for a test.

Either way the stop sets ``ProvinceContext.stopping`` first: an open live-update stream never ends by itself, and
uvicorn waits for every open response before it stops. ``timeout_graceful_shutdown`` is the backstop.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING

import uvicorn

from ...errors import ProvinceError
from .app import create_app

if TYPE_CHECKING:
    from .context import ProvinceContext

GRACEFUL_STOP_S = 5


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, stopping: threading.Event) -> None:
        super().__init__(config)
        self._stopping = stopping

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # uvicorn's own handler records the signal and raises it again once stopped, which kills the process
        # before ``serve`` can stop the fleet listener and close the database; here a stop is a stop (exit 0).
        self._stopping.set()  # the event streams end at their next poll
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True  # a second Ctrl-C: do not wait for the requests in flight
        else:
            self.should_exit = True


class DashboardServer:
    """The app over ``context`` served at ``bind``:``port`` (port 0: a free one, see ``port`` once started)."""

    def __init__(self, context: ProvinceContext, *, bind: str, port: int, log_level: str = "warning") -> None:
        self.context = context
        self.app = create_app(context)
        config = uvicorn.Config(self.app, host=bind, port=port, log_level=log_level, access_log=False,
                                lifespan="off", timeout_graceful_shutdown=GRACEFUL_STOP_S, server_header=False)
        self._server = _Server(config, context.stopping)
        self._thread: threading.Thread | None = None
        self._failed: BaseException | None = None

    @property
    def port(self) -> int:
        """The port listened on (the one the system chose, when asked for 0)."""
        for server in self._server.servers:
            for sock in server.sockets:
                return int(sock.getsockname()[1])
        raise RuntimeError("the dashboard is not listening yet")

    @property
    def started(self) -> bool:
        return bool(self._server.started)

    def run(self, on_ready: Callable[[], None] | None = None) -> None:
        """Serve until SIGTERM or SIGINT (on the main thread) or ``stop``; ``on_ready`` once listening.
        ProvinceError if it cannot listen (uvicorn has logged why)."""
        asyncio.run(self._serve(on_ready))
        if self._failed is not None:
            config = self._server.config
            raise ProvinceError(f"the dashboard cannot listen on {config.host}:{config.port} (see above)")

    async def _serve(self, on_ready: Callable[[], None] | None) -> None:
        serving = asyncio.create_task(self._serve_until_stopped())
        while not self._server.started and not serving.done():
            await asyncio.sleep(0.02)
        if self._server.started and on_ready is not None:
            on_ready()
        await serving

    async def _serve_until_stopped(self) -> None:
        try:
            await self._server.serve()
        except SystemExit as exc:  # what uvicorn does when it cannot bind, after logging why
            self._failed = exc

    def start(self, timeout: float = 30) -> DashboardServer:
        """Serve on a thread of its own; returns once listening."""
        def target() -> None:
            try:
                self.run()
            except BaseException as exc:  # noqa: BLE001  # reported by start(), below
                self._failed = exc

        self._thread = threading.Thread(target=target, name="qrgate-dashboard", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the dashboard did not start: {self._failed or 'timed out'}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.context.stopping.set()
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=GRACEFUL_STOP_S + 10)
