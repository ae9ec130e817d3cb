"""A scriptable TCP receiver for transport tests: records bytes per connection and can hang up
(FIN or RST), stop reading, or refuse to talk, on the test's command."""

from __future__ import annotations

import asyncio
import socket
import struct
from typing import Literal

Mode = Literal["read", "close_at_once", "never_read"]


class StreamReceiver:
    def __init__(self, mode: Mode = "read", rcvbuf: int | None = None, port: int = 0) -> None:
        self.mode = mode
        self.rcvbuf = rcvbuf
        self.connections: list[bytearray] = []
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None
        self._release = asyncio.Event()
        self.port = port  # 0: a free one

    async def __aenter__(self) -> StreamReceiver:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if self.rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
        sock.bind(("127.0.0.1", self.port))
        self.port = sock.getsockname()[1]
        self._server = await asyncio.start_server(self._handle, sock=sock)
        return self

    async def __aexit__(self, *_: object) -> None:
        self._release.set()
        for writer in self._writers:
            writer.close()
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = bytearray()
        self.connections.append(data)
        self._writers.append(writer)
        if self.mode == "close_at_once":
            writer.close()
            return
        if self.mode == "never_read":
            await self._release.wait()
            return
        while chunk := await reader.read(65536):
            data += chunk

    def received(self) -> int:
        return sum(len(c) for c in self.connections)

    async def hang_up(self, *, reset: bool) -> None:
        """Close the newest connection: FIN, or RST (what a killed receiver's kernel sends)."""
        writer = self._writers[-1]
        if reset:
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.close()
        await writer.wait_closed()
