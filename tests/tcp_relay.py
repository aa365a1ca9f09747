"""A TCP relay that delays each direction of every connection, for kernels without ``netem``;
with ``--delay-ms 0``, a plain relay that a test kills to cut a link and starts again to mend it.

Each chunk read is forwarded ``delay_ms`` +- ``jitter_ms`` later, never before the chunk ahead
of it (TCP delivers bytes in order, so jitter cannot reorder a stream).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time


async def pump(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay_s: float, jitter_s: float
) -> None:
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def deliver() -> None:
        while True:
            due, data = await queue.get()
            if not data:
                break
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            writer.write(data)
            await writer.drain()
        writer.close()

    sender = asyncio.create_task(deliver())
    last_due = 0.0
    try:
        while data := await reader.read(65536):
            last_due = max(last_due, time.monotonic() + delay_s + random.uniform(-jitter_s, jitter_s))
            queue.put_nowait((last_due, data))
    except (ConnectionError, OSError):
        pass
    queue.put_nowait((last_due, b""))
    try:
        await sender
    except (ConnectionError, OSError):
        pass


async def serve(listen: str, target: str, delay_s: float, jitter_s: float) -> None:
    to_host, to_port = target.rsplit(":", 1)

    async def relay(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection(to_host, int(to_port))
        except OSError:
            client_w.close()
            return
        await asyncio.gather(
            pump(client_r, up_w, delay_s, jitter_s), pump(up_r, client_w, delay_s, jitter_s)
        )

    host, port = listen.rsplit(":", 1)
    server = await asyncio.start_server(relay, host, int(port))
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--listen", required=True, help="host:port to accept on")
    parser.add_argument("--to", required=True, help="host:port to forward to")
    parser.add_argument("--delay-ms", type=float, required=True, help="one-way delay")
    parser.add_argument("--jitter-ms", type=float, default=0.0, help="+- uniform jitter")
    args = parser.parse_args()
    asyncio.run(serve(args.listen, args.to, args.delay_ms / 1000, args.jitter_ms / 1000))


if __name__ == "__main__":
    main()
