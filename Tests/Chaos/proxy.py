"""A TCP proxy per service instance and link (broker or database), so that the network between one
instance and a server can be made slow, dropped or cut without touching the others.

Each accepted connection is paired with a new connection to the server and bytes are pumped both
ways, chunk by chunk. Three faults act on the pumps:
- latency: every chunk waits a random 20-100 ms before it is forwarded (order is kept);
- drop: every current connection is aborted at once (both sides see a reset), as when a NAT or a
  load balancer forgets them; new connections work;
- cut: nothing is forwarded any more, in either direction, and new connections are accepted but
  not connected onwards; bytes read are held, not lost. The peers see silence, as in a network
  partition, until the heartbeats (2 s for AMQP) or TCP timeouts make them give up. When the cut
  heals, whatever was held is delivered to peers that may have closed long ago.
"""

import asyncio
import random

CHUNK = 64 * 1024


class Proxy:
    def __init__(self, upstream_port):
        self.upstream_port = upstream_port
        self.port = None
        self.latency_ms = None  # (low, high) while latency is on
        self.flowing = asyncio.Event()  # cleared while the link is cut
        self.flowing.set()
        self.connections = set()  # (client writer, upstream writer)
        self.server = None

    async def start(self):
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def close(self):
        self.flowing.set()
        self.drop()
        if self.server:
            self.server.close()

    # -- faults ----------------------------------------------------------------------------

    def set_latency(self, low_ms, high_ms):
        self.latency_ms = (low_ms, high_ms)

    def clear_latency(self):
        self.latency_ms = None

    def drop(self):
        """Aborts every current connection; returns how many there were."""
        dropped = len(self.connections)
        for client, upstream in list(self.connections):
            for writer in (client, upstream):
                if writer is not None:
                    writer.transport.abort()
        self.connections.clear()
        return dropped

    def cut(self):
        self.flowing.clear()

    def heal(self):
        self.flowing.set()

    # -- forwarding ------------------------------------------------------------------------

    async def _accept(self, client_reader, client_writer):
        pair = [client_writer, None]
        entry = None
        try:
            # A connection accepted during a cut waits here: its peer sees a connection that
            # answers nothing.
            await self.flowing.wait()
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            pair[1] = upstream_writer
            entry = (client_writer, upstream_writer)
            self.connections.add(entry)
            await asyncio.gather(
                self._pump(client_reader, upstream_writer),
                self._pump(upstream_reader, client_writer))
        except (OSError, asyncio.IncompleteReadError):
            pass  # the server is down, or a side reset: the client sees its connection close
        finally:
            self.connections.discard(entry)
            for writer in pair:
                if writer is not None:
                    writer.transport.abort()

    async def _pump(self, reader, writer):
        try:
            while True:
                data = await reader.read(CHUNK)
                if not data:
                    break
                if self.latency_ms:
                    await asyncio.sleep(random.uniform(*self.latency_ms) / 1000)
                await self.flowing.wait()  # a cut holds the chunk here, and reading stops behind it
                writer.write(data)
                await writer.drain()
        finally:
            # One side closed: close the other, so the pair ends together.
            writer.transport.abort()
