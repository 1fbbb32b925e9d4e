"""The daemon's health endpoint asked over a plain HTTP/1.1 connection."""

from __future__ import annotations

import asyncio


async def get(port: int, path: str) -> tuple[int, str]:
    """``GET path`` on 127.0.0.1:``port``: the status code and the body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    try:
        answer = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = answer.decode().partition("\r\n\r\n")
    return int(head.split()[1]), body
