"""Lightweight Reflex tabs: asyncio websocket clients that speak Engine.IO 4 / Socket.IO 5.

Each client does what a browser tab's `connect()` (reflex_base/.templates/web/utils/state.js)
does on the wire and nothing more: open `/_event/?EIO=4&transport=websocket&token=<uuid4>`,
read the Engine.IO open packet, send the Socket.IO CONNECT packet whose auth carries the boot
event (`<root state>.hydrate_and_load`, as `initialEvents()` makes it, with the router data of
`withRouterData()`), answer pings, and record every frame the server sends: arrival time
(`time.time()`), size in bytes and text. The page's on_load events then run on the server.

Neither `websockets` nor `aiohttp` is installed in the project's environment (and
python-socketio's AsyncClient needs aiohttp), so the WebSocket framing (RFC 6455, client side,
no extensions) is done here on asyncio streams: a few lines, and cheap per frame.
"""

import asyncio
import base64
import contextlib
import json
import os
import struct
import time
import uuid
from dataclasses import dataclass, field

from reflex_base import constants

ROOT_STATE = "reflex___state____state"  # reflex.state.State.get_full_name()
HYDRATE_AND_LOAD = f"{ROOT_STATE}.{constants.CompileVars.HYDRATE_AND_LOAD}"
EVENT_PATH = "/_event/"  # the Socket.IO path: str(constants.Endpoint.EVENT) + "/"
# The Socket.IO namespace (rx.Config.get_event_namespace()): socket.io-client takes it from the
# path of the URL the page connects to, so every packet but the Engine.IO ones names it.
NAMESPACE = "/_event"
ROUTER_DATA = {"pathname": "/", "query": {}, "asPath": "/"}

OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10


@dataclass
class Frame:
    """One Socket.IO packet from the server as the client got it."""

    at: float  # time.time() when its last byte was read
    size: int  # payload bytes on the wire (the WebSocket message, headers excluded)
    text: str


def boot_auth(token: str) -> dict[str, object]:
    """The CONNECT packet's auth: the hydrate event a freshly opened tab sends."""
    event = {"name": HYDRATE_AND_LOAD, "payload": {}, "router_data": dict(ROUTER_DATA)}
    return {"event": event, "state_schema": None}


class WebSocket:
    """A minimal RFC 6455 client connection (text frames, no extensions)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, host: str, port: int, path: str, subprotocol: str) -> "WebSocket":
        """Connect and do the opening handshake; raises ConnectionError on refusal."""
        reader, writer = await asyncio.open_connection(host, port, limit=2**24)
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Protocol: {subprotocol}\r\nOrigin: http://{host}:{port}\r\n\r\n"
        )
        writer.write(request.encode())
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            writer.close()
            raise ConnectionError(f"handshake refused: {head.decode(errors='replace')[:200]}")
        return cls(reader, writer)

    def send(self, text: str, opcode: int = OP_TEXT) -> None:
        """Queue one masked frame (clients must mask)."""
        payload = text.encode()
        length = len(payload)
        if length < 126:
            header = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
        elif length < 2**16:
            header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
        else:
            header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
        mask = os.urandom(4)
        # XOR with the repeated mask, done on one big integer (no per-byte Python loop).
        repeated = (mask * (length // 4 + 1))[:length]
        masked = (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(
            length, "big"
        )
        self.writer.write(header + mask + masked)

    async def receive(self) -> tuple[int, bytes]:
        """The next whole message (opcode, payload); control frames are returned as they come."""
        parts: list[bytes] = []
        message_opcode = OP_TEXT
        while True:
            first, second = await self.reader.readexactly(2)
            fin, opcode, length = first & 0x80, first & 0x0F, second & 0x7F
            if length == 126:
                (length,) = struct.unpack("!H", await self.reader.readexactly(2))
            elif length == 127:
                (length,) = struct.unpack("!Q", await self.reader.readexactly(8))
            payload = await self.reader.readexactly(length) if length else b""
            if opcode >= OP_CLOSE:
                return opcode, payload
            if opcode != OP_CONTINUATION:
                message_opcode = opcode
            parts.append(payload)
            if fin:
                return message_opcode, b"".join(parts)

    async def close(self) -> None:
        """Send a close frame and drop the connection."""
        with contextlib.suppress(Exception):
            self.send("", OP_CLOSE)
            await self.writer.drain()
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


@dataclass
class ReflexClient:
    """One tab: connects, hydrates, then records every Socket.IO packet the server sends.

    `watch`: names (image files) to look for in every frame; `arrivals[name]` is the arrival
    time of the first frame whose text contains it (kept as frames come, so waiting on many
    clients costs a dict look-up, not a search through every stored frame).
    """

    host: str
    port: int
    watch: tuple[str, ...] = ()
    token: str = field(default_factory=lambda: str(uuid.uuid4()))
    frames: list[Frame] = field(default_factory=list)
    arrivals: dict[str, float] = field(default_factory=dict)
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    error: str = ""
    _socket: WebSocket | None = None

    async def run(self) -> None:
        """Connect and read until cancelled or closed (an error is kept in `error`)."""
        path = f"{EVENT_PATH}?EIO=4&transport=websocket&token={self.token}"
        try:
            self._socket = socket = await WebSocket.open(
                self.host, self.port, path, constants.Reflex.VERSION
            )
            while True:
                opcode, payload = await socket.receive()
                at = time.time()
                if opcode == OP_PING:
                    socket.send(payload.decode(), OP_PONG)
                    continue
                if opcode == OP_CLOSE:
                    self.error = self.error or "closed by the server"
                    return
                if opcode != OP_TEXT:
                    continue
                self._on_packet(socket, payload.decode(), len(payload), at)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # recorded; the benchmark reports clients that failed
            self.error = f"{type(error).__name__}: {error}"
        finally:
            if self._socket is not None:
                await self._socket.close()

    def _on_packet(self, socket: WebSocket, text: str, size: int, at: float) -> None:
        """Engine.IO: 0 open, 2 ping, 4 message; Socket.IO inside: 0 connect, 2 event."""
        kind = text[:1]
        if kind == "0":  # open: join the default namespace with the boot event
            auth = json.dumps(boot_auth(self.token), separators=(",", ":"))
            socket.send(f"40{NAMESPACE},{auth}")
        elif kind == "2":
            socket.send("3")
        elif text.startswith(f"42{NAMESPACE},"):
            self.frames.append(Frame(at, size, text))
            for name in self.watch:
                if name not in self.arrivals and name in text:
                    self.arrivals[name] = at
        elif text.startswith(f"40{NAMESPACE},"):
            self.connected.set()
        elif text.startswith(f"44{NAMESPACE},"):
            self.error = f"connect refused: {text[:200]}"

    def bytes_between(self, start: float, end: float) -> int:
        """Total size of the frames received in [start, end]."""
        return sum(frame.size for frame in self.frames if start <= frame.at <= end)


class ClientPool:
    """N clients running side by side in this event loop."""

    def __init__(self, host: str, port: int, count: int, watch: tuple[str, ...] = ()) -> None:
        self.clients = [ReflexClient(host, port, watch) for _ in range(count)]
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self, batch: int = 50, pause_s: float = 0.05) -> None:
        """Open the connections in batches (a burst of 500 handshakes at once can time out)."""
        for first in range(0, len(self.clients), batch):
            for client in self.clients[first : first + batch]:
                self._tasks.append(asyncio.create_task(client.run()))
            await asyncio.sleep(pause_s)

    async def wait_for(self, name: str, timeout_s: float) -> list[ReflexClient]:
        """Wait until every client got a frame containing `name` (one of the watched names);
        returns the clients that did not within `timeout_s`, or that stopped."""
        deadline = time.monotonic() + timeout_s
        while True:
            missing = [client for client in self.clients if name not in client.arrivals]
            if not missing or time.monotonic() > deadline:
                return missing
            if all(client.error for client in missing):
                return missing
            await asyncio.sleep(0.1)

    def errors(self) -> list[str]:
        """The distinct errors of clients that stopped."""
        return sorted({client.error for client in self.clients if client.error})

    async def stop(self) -> None:
        """Cancel every client and close its socket."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
