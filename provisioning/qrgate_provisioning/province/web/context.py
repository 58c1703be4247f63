"""What the dashboard's pages work on, made once by ``qrgate-province serve`` (or a test) and handed to
``create_app``: the pages hold no state of their own besides it."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

if TYPE_CHECKING:
    from ..accounts import Accounts
    from ..db import Database
    from ..fleet import FleetState
    from ..fleet_listener import FleetListener
    from ..registry import Registry
    from ..settings import ProvinceConfig


@dataclass
class ProvinceContext:
    """The service's parts, as the pages see them. ``stopping`` is set when the service shuts down, so that the
    live-update streams (which would otherwise never end) close and the server can stop at once."""

    config: ProvinceConfig
    database: Database
    registry: Registry
    fleet: FleetState
    accounts: Accounts
    listener: FleetListener | None = None  # set once started: /metrics and /healthz say whether it is connected
    stopping: threading.Event = field(default_factory=threading.Event)

    @cached_property
    def zone(self) -> ZoneInfo:
        """The province's time zone (``report.timezone``): the pages show local times, and "today" is its day."""
        from ..report import zone_of

        return zone_of(self.config.report.timezone)
