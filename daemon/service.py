"""The daemon: intake, scheduler and outbox relay around one store, until told to stop.

Once intake has started, ``/readyz`` stops answering ``starting`` and the ready file (when
one is asked for) holds ``{"pid": ..., "metrics": URL or null}``; it is removed when the
daemon starts stopping, and a stale one (a daemon killed) when the next one starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
from collections.abc import Callable
from pathlib import Path

from aiokafka import AIOKafkaConsumer

from daemon.broker import EmbeddedBroker
from daemon.changelog_writer import ChangelogWriter
from daemon.command_relay import CommandRelay
from daemon.errors import ConfigError, StoreFull
from daemon.generation import PhaseRunner
from daemon.intake import Cluster, Intake
from daemon.jobs import JobRunner, record_deaths
from daemon.kafka import make_consumer, make_producer
from daemon.llm import AnthropicProvider, LLMProvider, RecordingProvider, ReplayProvider
from daemon.metrics import HealthServer, Metrics, not_ready
from daemon.outbox import OutboxRelay
from daemon.outputs import OutputWriter
from daemon.ownership import Ownership
from daemon.progress import open_progress
from daemon.ratelimit import RateLimiter
from daemon.retention import Pruner
from daemon.scheduler import Scheduler
from daemon.settings import EMBEDDED, Settings
from daemon.states import JobState
from daemon.store import Store
from daemon.topics import ensure_daemon_topics

log = logging.getLogger(__name__)
FLUSH_TIMEOUT_S = 10.0
FLUSH_ON_REVOKE_S = 5.0


def broker_address_file(settings: Settings) -> Path:
    """Where a daemon with an embedded broker tells other commands its address."""
    return settings.store.path.with_name(settings.store.path.name + ".broker")


async def stop_consumer(consumer: AIOKafkaConsumer) -> None:
    """Stop a consumer. aiokafka's fetcher, closing while a fetch waits out its retry
    backoff (the broker was unreachable), awaits the fetch it cancelled and lets that
    CancelledError out of ``stop()``; it is not a cancellation of this task."""
    try:
        await consumer.stop()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
        log.debug("the consumer's fetcher was cancelled while it closed")


def make_provider(settings: Settings, record_dir: Path | None = None) -> LLMProvider:
    llm = settings.llm
    provider: LLMProvider
    if llm.provider == "replay":
        if llm.cassette_dir is None:
            raise ConfigError("llm.provider = 'replay' needs llm.cassette_dir")
        provider = ReplayProvider(llm.cassette_dir)
    else:
        provider = AnthropicProvider(
            llm.timeout_s, llm.http_client, llm.call_deadline_s, llm.max_answer_bytes
        )
    return RecordingProvider(provider, record_dir) if record_dir else provider


def write_ready_file(path: Path, metrics_url: str | None) -> None:
    """This process's pid and its metrics URL, written whole: a reader never sees part of it."""
    partial = path.with_name(path.name + ".partial")
    try:
        partial.write_text(json.dumps({"pid": os.getpid(), "metrics": metrics_url}) + "\n")
        os.replace(partial, path)
    except OSError as exc:
        raise ConfigError(f"--ready-file: cannot write {path} ({exc.strerror or exc})") from None


class Daemon:
    """``await Daemon(settings).run()`` consumes, runs jobs and publishes until SIGTERM/SIGINT
    (or ``request_stop()``), then drains and closes everything in order."""

    def __init__(
        self,
        settings: Settings,
        llm: LLMProvider | None = None,
        record_dir: Path | None = None,
        ready_file: Path | None = None,
    ) -> None:
        self.settings = settings
        self._ready_file = ready_file
        self._llm = llm or make_provider(settings, record_dir)
        self._stop = asyncio.Event()
        self._resources = contextlib.AsyncExitStack()
        self._tasks: list[asyncio.Task[None]] = []
        self._side_tasks: set[asyncio.Task[None]] = set()
        self._stopping: set[asyncio.Task[JobState]] = set()  # jobs of lost partitions
        self.bootstrap_servers = settings.kafka.bootstrap_servers
        self.started = asyncio.Event()
        self.metrics = Metrics()
        self.metrics_port: int | None = None  # bound by _serve_health
        self.metrics.readiness.set("start", "starting")

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal)
        try:
            await self._start()
            self._announce_ready()
            self.started.set()
            await self._wait_for_stop()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            await self._shutdown()

    def _on_signal(self) -> None:
        if self._stop.is_set():
            log.warning("second signal: exiting now (every committed step is in the store)")
            os._exit(1)
        log.info("stopping: finishing running phases, then closing")
        self._stop.set()

    async def _wait_for_stop(self) -> None:
        stop = asyncio.create_task(self._stop.wait(), name="stop")
        done, _ = await asyncio.wait([stop, *self._tasks], return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        for task in done - {stop}:
            task.result()  # a side task that died takes the daemon down with its error

    async def _start(self) -> None:
        settings, kafka, resources = self.settings, self.settings.kafka, self._resources
        self._withdraw_ready()  # left by a daemon that was killed
        resources.push_async_callback(self._llm.aclose)
        self.store = Store(settings.store.path, changelog=kafka.cluster_mode)
        resources.callback(self.store.close)
        self.progress = open_progress(settings.store.path)
        resources.callback(self.progress.close)
        if not kafka.cluster_mode:  # in cluster mode, each restore of a partition does
            with contextlib.suppress(StoreFull):  # else the job runner records them later
                record_deaths(self.store, self.progress)
        await self._connect_broker()
        await ensure_daemon_topics(kafka, self.bootstrap_servers)
        self.producer = make_producer(kafka, self.bootstrap_servers)
        await self.producer.start()
        resources.push_async_callback(self.producer.stop)
        # Cluster mode: the changelog's records on a producer of their own, which takes a
        # file or a request of any size the daemon handles (the events may be capped lower).
        self.changelog_producer = self.producer
        if kafka.cluster_mode:
            self.changelog_producer = make_producer(
                kafka, self.bootstrap_servers, kafka.changelog_max_bytes
            )
            await self.changelog_producer.start()
            resources.push_async_callback(self.changelog_producer.stop)
        self.consumer = make_consumer(kafka, self.bootstrap_servers)
        await self.consumer.start()
        resources.push_async_callback(stop_consumer, self.consumer)
        self._build_services()
        await self._serve_health()
        if restored := self.runner.restore_outputs():
            log.info("wrote the output files of %d phases not yet announced", restored)
        self.intake.subscribe()
        if self.ownership is None:  # in cluster mode, each restore of a partition does
            await self._until_written(self._resume_jobs)
        self._tasks = [
            asyncio.create_task(self.relay.run(), name="outbox-relay"),
            asyncio.create_task(self.scheduler.run(), name="scheduler"),
            asyncio.create_task(self.intake.run(), name="intake"),
        ]
        if self.commands is not None:
            self._tasks.append(asyncio.create_task(self.commands.run(), name="commands"))
        if settings.store.retention_days > 0:
            pruner = Pruner(self.store, settings.store.retention_days)
            self._tasks.append(asyncio.create_task(pruner.run(), name="retention"))
        log.info(
            "codegend running: brokers %s, store %s, model provider %s",
            self.bootstrap_servers,
            settings.store.path,
            settings.llm.provider,
        )

    def _build_cluster(self) -> None:
        """In cluster mode: the partitions this daemon owns (restored from the changelog,
        fenced by their claims), and the writer that sends the changelog's records ahead
        of the events (docs/cluster-design.md)."""
        kafka = self.settings.kafka
        self.ownership: Ownership | None = None
        self.writer: ChangelogWriter | None = None
        self.commands: CommandRelay | None = None
        if not kafka.cluster_mode:
            return
        self.store.forget_ownership()  # nothing is ours until the group says so
        self.ownership = Ownership(
            kafka,
            self.bootstrap_servers,
            self.store,
            self.changelog_producer,
            self.consumer,
            metrics=self.metrics,
            progress=self.progress,
            on_ready=self._on_partition_ready,
            on_lost=self._on_partitions_lost,
        )
        self._resources.push_async_callback(self.ownership.close)
        self.writer = ChangelogWriter(
            self.store, self.changelog_producer, kafka.changelog_topic, tenures=self.ownership
        )
        # remote cancel and resume of the owned partitions' jobs (section 5.1)
        self.commands = CommandRelay(
            kafka,
            self.bootstrap_servers,
            self.store,
            self.producer,
            self.ownership,
            on_commit=self._on_new_work,
        )

    def _on_partition_ready(self, partition: int) -> None:
        self.scheduler.wake()
        self.relay.wake()
        if self.commands is not None:
            self.commands.partition_ready(partition)

    def _on_partitions_lost(self, partitions: set[int]) -> None:
        self._retire(self.scheduler.stop_jobs(partitions))

    def _retire(self, stopping: list[asyncio.Task[JobState]]) -> None:
        """Once the stopped jobs' tasks have ended, drop the rows of partitions that are
        not ours (a full disk leaves them for the next time)."""

        self._stopping.update(stopping)

        async def retire() -> None:
            # every job stopped so far: a lost partition's tasks may still be ending
            await asyncio.gather(*self._stopping, return_exceptions=True)
            self._stopping.difference_update(t for t in list(self._stopping) if t.done())
            if self.ownership is not None:
                with contextlib.suppress(StoreFull):
                    self.ownership.forget_dormant()

        task = asyncio.create_task(retire(), name="retire-partitions")
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    def _on_assigned(self, partitions: set[int]) -> None:
        """Each daemon takes the share of the account's rate limits that its partitions
        are of the requests topic's (docs/cluster-design.md section 6.1)."""
        every = self.consumer.partitions_for_topic(self.settings.kafka.requests_topic)
        if every:
            self.limiter.set_share(len(partitions & every) / len(every))

    async def _on_revoked(self, partitions: set[int]) -> None:
        """Before partitions may move: publish what is committed for them, briefly (the
        whole group waits for this member)."""
        if partitions and self._tasks:
            await self.relay.flush(FLUSH_ON_REVOKE_S)

    def _build_services(self) -> None:
        settings = self.settings
        self._build_cluster()
        ownership = self.ownership
        self.outputs = OutputWriter(settings.output.dir)
        self._resources.callback(self.outputs.close)
        self.relay = OutboxRelay(
            self.store,
            self.producer,
            settings.kafka.events_topic,
            settings.kafka.max_publish_bytes,
            metrics=self.metrics,
            before_publish=self.outputs.written,
            changelog=self.writer,
        )
        call_slots = asyncio.Semaphore(settings.llm.max_concurrent_requests)
        llm = settings.llm
        self.limiter = limiter = RateLimiter(
            llm.requests_per_min, llm.input_tokens_per_min, llm.output_tokens_per_min
        )
        guard = ownership.guard if ownership is not None else None
        phases = PhaseRunner(self._llm, settings, call_slots, limiter, self.metrics, guard)
        self.runner = JobRunner(
            self.store,
            phases,
            self.outputs,
            self.relay.wake,
            jobs=settings.jobs,
            llm=settings.llm,
            metrics=self.metrics,
            progress=self.progress,
            guard=guard,
        )
        self.scheduler = Scheduler(
            self.store,
            self.runner,
            settings.jobs,
            self.metrics.readiness,
            partitions=ownership.ready_partitions if ownership is not None else lambda: None,
        )
        cluster = None
        if ownership is not None and self.writer is not None:
            cluster = Cluster(
                ownership, self.writer, on_assigned=self._on_assigned, on_revoked=self._on_revoked
            )
        self.intake = Intake(
            self.consumer,
            self.producer,
            self.store,
            settings.kafka,
            settings.llm.max_image_bytes,
            self._on_new_work,
            max_unfinished=settings.jobs.max_unfinished,
            metrics=self.metrics,
            allowed_models=settings.allowed_models(),
            verify=settings.verify.enabled,
            cluster=cluster,
        )

    async def _serve_health(self) -> None:
        """/metrics, /healthz and /readyz on metrics.host:metrics.port, closed first at exit."""
        self.metrics.watch(self.store, self.consumer, self.limiter)
        metrics = self.settings.metrics
        if not metrics.enabled:
            return
        server = HealthServer(self.metrics, self._not_ready)
        self.metrics_port = await server.start(metrics)
        self._resources.push_async_callback(server.close)
        log.info("metrics and health on http://%s:%d/metrics", metrics.host, self.metrics_port)

    async def _not_ready(self) -> str | None:
        if self._stop.is_set():
            return "stopping"
        held = self.metrics.readiness.reason()
        if held is not None:
            return held
        return await not_ready(self.store, self.producer)

    def _announce_ready(self) -> None:
        """Intake runs: /readyz no longer says ``starting``, and the ready file is written."""
        self.metrics.readiness.clear("start")
        if self._ready_file is None:
            return
        host = self.settings.metrics.host
        url = f"http://{host}:{self.metrics_port}" if self.metrics_port else None
        write_ready_file(self._ready_file, url)

    def _withdraw_ready(self) -> None:
        if self._ready_file is not None:
            self._ready_file.unlink(missing_ok=True)

    def _on_new_work(self) -> None:
        self.scheduler.wake()
        self.relay.wake()

    async def _connect_broker(self) -> None:
        if self.settings.kafka.bootstrap_servers != EMBEDDED:
            return
        broker = EmbeddedBroker()
        await broker.start()
        self._resources.push_async_callback(broker.stop)
        self.bootstrap_servers = broker.bootstrap_servers
        address_file = broker_address_file(self.settings)
        address_file.write_text(self.bootstrap_servers)
        self._resources.callback(address_file.unlink, missing_ok=True)
        log.info("embedded broker (tansu) listening on %s", self.bootstrap_servers)

    def _resume_jobs(self) -> None:
        """At start: every unfinished job is announced as resumed (one transaction), and
        the jobs put aside for the model API's refusal may run at once."""
        for job_id, state in self.store.announce_resumed("daemon restart"):
            log.info("resuming at %s", state.name, extra={"job_id": job_id})
        if held := self.store.release_held():
            log.info("%d jobs put aside for the model API's refusal run again", held)

    async def _until_written(self, write: Callable[[], None]) -> None:
        """Run a write of the start-up, waiting (with /readyz saying why) while the disk is
        full, rather than exiting to be restarted into the same full disk."""
        delay_s = 1.0
        while True:
            try:
                write()
            except StoreFull as exc:
                if self._stop.is_set():
                    raise
                self.metrics.readiness.set("disk:start", f"store: disk full at start ({exc})")
                log.warning("%s; trying again in %.0f s", exc, delay_s)
                await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 2, 30.0)
                continue
            self.metrics.readiness.clear("disk:start")
            return

    async def _shutdown(self) -> None:
        """Stop intake, let running phases finish within the grace period, publish what is
        committed, then close consumer, producer, store and broker (in that order)."""
        self._withdraw_ready()
        if self._tasks:
            self.intake.stop()
            await self.scheduler.drain(self.settings.jobs.shutdown_grace_s)
            await self.relay.flush(FLUSH_TIMEOUT_S)
            self.relay.stop()
        for task in (*self._tasks, *self._side_tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, *self._side_tasks, return_exceptions=True)
        await self._resources.aclose()
        log.info("codegend stopped")
