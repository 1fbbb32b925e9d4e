"""The daemon prunes the store by itself, at the default retention (store.retention_days)."""

from __future__ import annotations

import asyncio
import time

import pytest

from daemon.errors import JobNotFound
from daemon.store import Store
from tests.support.daemons import running
from tests.support.store_records import DAY_S, finished_job, publish_job


async def test_the_daemon_prunes_old_finished_jobs_soon_after_start(make_settings):
    settings = make_settings()
    assert settings.store.retention_days == 30
    store = Store(settings.store.path)
    finished_job(store, "old-1")
    publish_job(store, "old-1", time.time() - 31 * DAY_S)
    finished_job(store, "recent-1")
    publish_job(store, "recent-1", time.time() - 29 * DAY_S)
    store.close()
    async with running(settings) as daemon:
        async with asyncio.timeout(30):
            while any(row["job_id"] == "old-1" for row in daemon.store.jobs()):
                await asyncio.sleep(0.2)
        assert daemon.store.job("recent-1").state.name == "COMPLETED"
        with pytest.raises(JobNotFound):
            daemon.store.job("old-1")
