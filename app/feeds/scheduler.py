"""The feed scheduler: what a worker's chore calls every ``GATEWAY_FEED_SCHEDULER_SECONDS``.

Each tick asks the service to start every run that is due by the scheduler's clock. Every
worker ticks; each run is claimed in a transaction on its feed, so it starts once however many
tick at the same moment. The clock is injectable: a test runs a ``* * * * *`` feed through
several minutes of a fast clock in seconds, with the very code the workers run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from app.feeds.service import FeedService
from app.platform.clock import utcnow

log = logging.getLogger(__name__)


class FeedScheduler:
    def __init__(self, feeds: FeedService, clock: Callable[[], datetime] = utcnow) -> None:
        self.feeds = feeds
        self.clock = clock

    async def tick(self) -> list[str]:
        """Start the runs due now; answers the export ids started."""
        started = await self.feeds.tick(self.clock())
        if started:
            log.info("feed runs started", extra={"export_ids": started})
        return started
