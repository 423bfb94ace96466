"""A TCP relay in front of the real broker that a test can cut and restore: to the client, the
broker goes away and comes back (at the same address), while the broker itself keeps running.
It can also hold back what clients send, so that a test can kill a client whose last frames
(an acknowledgement) never reached the broker.

With several upstream ports it is also the smallest load balancer with failover: each new
connection goes to the first upstream that accepts it (the web replica tests put it in front
of two web apps)."""

import asyncio
import contextlib


class BrokerRelay:
    def __init__(self, *upstream_ports: int) -> None:
        self.upstream_ports = list(upstream_ports or (5672,))  # tried in order
        self.port = 0  # chosen by the first start, kept by the next ones
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()
        self.sending = asyncio.Event()  # cleared by hold(): client bytes wait in the relay
        self.sending.set()

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, upstream: bool
    ) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                if upstream:
                    await self.sending.wait()
                if writer.is_closing():  # cut while held: the held bytes are dropped
                    break
                writer.write(data)
                await writer.drain()
        writer.close()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for port in self.upstream_ports:
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
                break
            except OSError:
                continue
        else:
            writer.close()
            return
        self.writers |= {writer, up_writer}
        await asyncio.gather(
            self._pipe(reader, up_writer, upstream=True),
            self._pipe(up_reader, writer, upstream=False),
        )

    def hold(self) -> None:
        """From now on, what clients send stays in the relay (until `stop` drops it)."""
        self.sending.clear()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    def cut(self) -> None:
        """Cut every open connection (new ones are still accepted)."""
        for writer in self.writers:
            writer.close()
        self.writers.clear()

    async def stop(self) -> None:
        """Refuse new connections and cut every open one."""
        if self.server is None:
            return
        self.server.close()
        self.cut()
        self.sending.set()
        await self.server.wait_closed()
        self.server = None
