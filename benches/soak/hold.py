#!/usr/bin/env python3
"""Holds N idle HTTP/1.1 keep-alive connections to HOST:PORT: each sends one request and reads the
answer, then stays open, sending another every INTERVAL seconds so the server's keep-alive timeout
(60 s for the gateway, 75 s for NGINX) does not close it. Prints `held N` once all are open, then a
line per round with how many are still open; reopens none (a closed one is counted lost).

    hold.py HOST:PORT N [INTERVAL]
"""
import asyncio
import sys

REQUEST = b"GET /v2/health/live HTTP/1.1\r\nHost: soak\r\n\r\n"


async def exchange(reader, writer):
    writer.write(REQUEST)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    if length:
        await reader.readexactly(length)


async def one(host, port, opened, interval, alive):
    reader, writer = await asyncio.open_connection(host, port)
    await exchange(reader, writer)
    opened.release()
    alive[0] += 1
    try:
        while True:
            await asyncio.sleep(interval)
            await exchange(reader, writer)
    except (OSError, asyncio.IncompleteReadError):
        alive[0] -= 1


async def main():
    host, port = sys.argv[1].rsplit(":", 1)
    n = int(sys.argv[2])
    interval = float(sys.argv[3]) if len(sys.argv) > 3 else 40.0
    opened = asyncio.Semaphore(0)
    alive = [0]
    tasks = []
    for i in range(n):
        tasks.append(asyncio.create_task(one(host, int(port), opened, interval + (i % 100) / 10, alive)))
        if i % 500 == 499:
            await asyncio.sleep(0.05)
    for _ in range(n):
        await opened.acquire()
    print(f"held {n}", flush=True)
    while True:
        await asyncio.sleep(60)
        print(f"alive {alive[0]}", flush=True)


asyncio.run(main())
