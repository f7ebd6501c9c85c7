"""A loopback fake of Binance USD-M market-data websockets, replaying recorded frames.

A real websocket server (``websockets``) on 127.0.0.1 at a free port, in a background
thread with its own event loop, so tests drive clients with ``asyncio.run`` in the main
thread. Routes, as on ``wss://fstream.binance.com``:

- ``/stream?streams=a/b/c`` — combined streams: frames ``{"stream": ..., "data": ...}``
  (sent as recorded);
- ``/ws/a/b/c`` — raw streams: only the ``data`` object of each frame.

The server holds a list of recorded frames (``(recv_ns, json_text)``, read from the
captures in ``shared/data`` by :func:`load_capture`) and sends a connection, in recorded
order, the frames of the streams it asked for, as text frames, as fast as the client
reads. Like the real exchange it does not rewind: each set of streams has a cursor, and a
reconnecting client continues where the previous connection stopped (``resume_overlap``
frames earlier, to model a reconnect that sees some frames again). After the last frame
the connection stays open and idle.

Faults (:class:`Faults`; positions are indices into the recorded list, so they mean the
same frame whatever the subscription):

- ``drop_after``: close the TCP connection (no close frame, the client sees 1006) after
  that many frames on a connection, for the first ``drop_connections`` connections of
  each subscription;
- ``duplicate`` / ``swap`` / ``skip`` / ``malformed``: send a frame twice / after the next
  frame of the same subscription / not at all (an id gap) / truncated to half (invalid JSON);
- ``stall_after`` + ``stall_s``: stop sending for ``stall_s`` seconds (or until the client
  closes) after that many frames on the first connection of each subscription, keeping the
  socket open;
- ``max_connection_s``: close normally (code 1000) after that long, as Binance does after
  24 hours.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from tests.realdata import shared_file


def load_capture(rel: str, limit: int | None = None) -> list[tuple[int, str]]:
    """Combined-stream frames of a capture under ``shared/data`` as ``(recv_ns, text)``.

    Two recorded formats: hftbacktest's ``<recv ns|µs> <json>`` lines (``binance-ws/``,
    gzip) and cryptofeed's ``<recv s float>: <json>`` lines with URL header lines
    (``exchange-responses/cryptofeed/``). Lines that are not stream frames (REST snapshot,
    headers) are left out; ``limit`` cuts the file after that many lines.
    """
    path = shared_file(rel)
    opener = gzip.open if path.read_bytes()[:2] == b"\x1f\x8b" else open
    out = []
    with opener(path, "rt", encoding="utf-8") as fh:
        for n, line in enumerate(fh):
            if limit is not None and n >= limit:
                break
            if not line[:1].isdigit():
                continue
            if ": " in line[:30]:
                stamp, _, text = line.partition(": ")
                recv_ns = round(float(stamp) * 1e9)
            else:
                stamp, _, text = line.partition(" ")
                v = int(stamp)
                recv_ns = v if v >= 10**17 else v * 1000
            text = text.strip()
            if text.startswith('{"stream"'):
                out.append((recv_ns, text))
    return out


def stream_of(text: str) -> str:
    """The ``stream`` name of a recorded combined-stream frame."""
    return json.loads(text)["stream"]


@dataclass
class Faults:
    """Faults to inject (see the module docstring)."""

    drop_after: int | None = None
    drop_connections: int = 1
    duplicate: frozenset[int] = frozenset()
    swap: frozenset[int] = frozenset()
    skip: frozenset[int] = frozenset()
    malformed: frozenset[int] = frozenset()
    stall_after: int | None = None
    stall_s: float = 0.0
    max_connection_s: float | None = None
    resume_overlap: int = 0


@dataclass
class ConnectionLog:
    """What one client connection asked for and got."""

    path: str
    streams: tuple[str, ...]
    sent: int = 0
    how_closed: str = ""


@dataclass
class _Feed:
    frames: list[str]
    cursor: int = 0
    connections: int = 0


class FakeBinanceWS:
    """Loopback Binance USD-M websocket server replaying ``frames`` (see module docstring).

    Usage::

        with FakeBinanceWS(load_capture("binance-ws/usdm/btcusdt_20240719.gz", 3000)) as ws:
            url = ws.url  # "ws://127.0.0.1:PORT"
    """

    def __init__(self, frames: Sequence[tuple[int, str]], faults: Faults | None = None) -> None:
        self.frames = list(frames)
        self.streams = [stream_of(t) for _, t in self.frames]
        self.faults = faults or Faults()
        self.connections: list[ConnectionLog] = []
        self._feeds: dict[frozenset[str], _Feed] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server = None
        self._ready = threading.Event()
        self.port = 0

    # -- what a subscription gets ----------------------------------------------------------
    def frames_for(self, streams: frozenset[str]) -> list[str]:
        """Frames a subscription receives in total, faults applied (no drops/stalls)."""
        f = self.faults
        out: list[str] = []
        swaps: list[int] = []
        for i, ((_, text), s) in enumerate(zip(self.frames, self.streams, strict=True)):
            if s not in streams or i in f.skip:
                continue
            if i in f.malformed:
                text = text[: len(text) // 2]
            if i in f.swap:
                swaps.append(len(out))
            out.extend([text, text] if i in f.duplicate else [text])
        for j in swaps:
            if j + 1 < len(out):
                out[j], out[j + 1] = out[j + 1], out[j]
        return out

    def expected(self, streams: Sequence[str]) -> int:
        """How many frames a subscription to ``streams`` receives (faults applied)."""
        return len(self.frames_for(frozenset(streams)))

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    # -- server ----------------------------------------------------------------------------
    async def _handler(self, ws: ServerConnection) -> None:
        path = ws.request.path
        parts = urlsplit(path)
        if parts.path == "/stream":
            names = parse_qs(parts.query).get("streams", [""])[0].split("/")
            combined = True
        elif parts.path.startswith("/ws/"):
            names = parts.path[4:].split("/")
            combined = False
        else:
            await ws.close(code=1008, reason="unknown path")
            return
        key = frozenset(n for n in names if n)
        feed = self._feeds.get(key)
        if feed is None:
            feed = self._feeds[key] = _Feed(self.frames_for(key))
        log = ConnectionLog(path, tuple(sorted(key)))
        self.connections.append(log)
        feed.connections += 1
        n_conn = feed.connections
        f = self.faults
        start = max(0, feed.cursor - f.resume_overlap)
        t0 = asyncio.get_running_loop().time()
        try:
            for i in range(start, len(feed.frames)):
                dropping = f.drop_after is not None and n_conn <= f.drop_connections
                if dropping and log.sent >= f.drop_after:
                    log.how_closed = "dropped"
                    ws.transport.close()  # TCP close after the sent bytes, no close frame
                    await asyncio.sleep(0)
                    return
                if f.stall_after is not None and n_conn == 1 and log.sent == f.stall_after:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(ws.wait_closed(), f.stall_s)
                age_s = asyncio.get_running_loop().time() - t0
                if f.max_connection_s is not None and age_s >= f.max_connection_s:
                    log.how_closed = "closed 1000"
                    await ws.close(code=1000, reason="24h")
                    return
                text = feed.frames[i]
                if not combined:
                    text = json.dumps(json.loads(text)["data"], separators=(",", ":"))
                await ws.send(text)
                log.sent += 1
                feed.cursor = max(feed.cursor, i + 1)
                if log.sent % 256 == 0:
                    await asyncio.sleep(0)
            if f.max_connection_s is not None:
                await asyncio.sleep(
                    max(0.0, f.max_connection_s - (asyncio.get_running_loop().time() - t0))
                )
                log.how_closed = "closed 1000"
                await ws.close(code=1000, reason="24h")
                return
            await ws.wait_closed()
            log.how_closed = "client"
        except ConnectionClosed:
            log.how_closed = "client"

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()

        async def main() -> None:
            self._server = await serve(self._handler, "127.0.0.1", 0, compression=None)
            self.port = self._server.sockets[0].getsockname()[1]
            self._ready.set()
            await self._server.wait_closed()

        self._loop.run_until_complete(main())
        self._loop.close()

    def start(self) -> FakeBinanceWS:
        self._thread = threading.Thread(target=self._run, name="fake-binance-ws", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fake websocket server did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._server is not None:
            self._loop.call_soon_threadsafe(self._server.close)
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> FakeBinanceWS:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
