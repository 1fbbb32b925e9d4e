"""A small TCP proxy for outage tests: 127.0.0.1:port forwards to an upstream address.

The proxy runs its own event loop in a daemon thread, so it serves in-process tests and
daemons in subprocesses alike. ``cut()`` closes every open connection (with a reset) and
stops listening, so new connections are refused; ``restore()`` listens again on the same
port. The calls block until the proxy is in the new state.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

HOST = "127.0.0.1"
READ_BYTES = 64 * 1024
CONTROL_TIMEOUT_S = 10.0
T = TypeVar("T")


class TcpProxy:
    def __init__(self, upstream_port: int, port: int = 0, upstream_host: str = HOST) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = port
        self.accepted = 0
        self.bytes_forwarded = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="tcp-proxy", daemon=True
        )
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._connections: set[asyncio.Task[None]] = set()

    # -- control, from any thread but the proxy's

    def start(self) -> TcpProxy:
        self._thread.start()
        self._call(self._listen())
        return self

    def cut(self) -> None:
        """Drop every connection and refuse new ones until ``restore()``."""
        self._call(self._cut())

    def restore(self) -> None:
        self._call(self._listen())

    def stop(self) -> None:
        if self._thread.is_alive():
            self._call(self._close())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(CONTROL_TIMEOUT_S)
        self._loop.close()

    @property
    def listening(self) -> bool:
        return self._server is not None

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(CONTROL_TIMEOUT_S)

    # -- in the proxy's loop

    async def _listen(self) -> None:
        if self._server is not None:
            return
        self._server = await asyncio.start_server(self._serve, HOST, self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _cut(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._writers):
            _reset(writer)
        self._writers.clear()

    async def _close(self) -> None:
        await self._cut()
        await asyncio.gather(*self._connections, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._server is None:  # accepted just before the cut
            _reset(writer)
            return
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        task.add_done_callback(self._connections.discard)
        self.accepted += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            _reset(writer)
            return
        pair = {writer, up_writer}
        self._writers.update(pair)
        try:
            await asyncio.gather(
                self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True
            )
        finally:
            for side in pair:
                self._writers.discard(side)
                side.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(READ_BYTES):
                writer.write(data)
                self.bytes_forwarded += len(data)
                await writer.drain()
        finally:
            # one side ended: end the other too, so neither waits on a half-open pair
            writer.close()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST, as a broken network or a dead broker would, not with a polite FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
