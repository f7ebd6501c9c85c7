"""L2 order book rebuilt from a REST depth snapshot + websocket depth diffs (Binance rules).

Binance's "How to manage a local order book correctly":

* drop every diff whose final update id ``u`` is below the snapshot's ``lastUpdateId``
  (USD-M: ``u < lastUpdateId``; spot: ``u <= lastUpdateId``);
* the first diff applied must straddle the snapshot — USD-M ``U <= lastUpdateId <= u``,
  spot ``U <= lastUpdateId + 1 <= u``;
* after that the diffs must chain: USD-M ``pu`` == previous diff's ``u``; spot ``U`` ==
  previous ``u + 1``. A break is a **sequence gap**: the local book is no longer valid and
  must be resynced from a new snapshot. :func:`rebuild_book` raises :class:`SequenceGapError`
  (a :class:`CatalogError` naming the file/line) or, with ``on_gap="stop"``, returns the
  states up to the gap and reports it in :attr:`BookStates.gap_index`.
* each diff carries absolute quantities per price level; quantity 0 removes the level.

Diff arrays are columnar (:class:`DepthDiffs`); the book itself is a dict + sorted price
list per side (``bisect``), which processes the real captures in well under a second.
After each applied diff the best bid/ask and the top ``levels`` price levels are recorded
with the diff's ``u`` and event time (:class:`BookStates`).
"""

from __future__ import annotations

from bisect import bisect_left, insort
from dataclasses import dataclass

import numpy as np

from perpdesk.errors import CatalogError


class SequenceGapError(CatalogError):
    """A depth diff does not chain onto the previous one: the book needs a resync."""


@dataclass(frozen=True)
class DepthSnapshot:
    """A REST ``/depth`` snapshot: ``lastUpdateId`` and absolute levels (price, qty)."""

    last_update_id: int
    bids: list[tuple[float, float]]
    asks: list[tuple[float, float]]
    event_ts_ns: int | None
    ts_recv_ns: int
    line: int
    source: str


@dataclass(frozen=True)
class DepthDiffs:
    """Depth-diff messages of one symbol, in file order, as flat arrays.

    Diff ``k`` updates bids ``bid_px/bid_qty[bid_offsets[k]:bid_offsets[k+1]]`` and the
    same for asks. ``prev_update_id`` (``pu``) is -1 for spot diffs.
    """

    symbol: str
    market: str  # "usdm" | "spot"
    source: str
    first_update_id: np.ndarray  # U
    last_update_id: np.ndarray  # u
    prev_update_id: np.ndarray  # pu (USD-M) or -1
    event_ts_ns: np.ndarray  # E
    ts_recv_ns: np.ndarray
    line: np.ndarray  # 1-based line in the source file
    bid_offsets: np.ndarray
    bid_px: np.ndarray
    bid_qty: np.ndarray
    ask_offsets: np.ndarray
    ask_px: np.ndarray
    ask_qty: np.ndarray

    def __len__(self) -> int:
        return int(self.last_update_id.size)

    def take(self, idx: np.ndarray) -> DepthDiffs:
        """The diffs at ``idx`` (e.g. to drop one, for tests)."""
        idx = np.asarray(idx, dtype=np.int64)

        def side(offs: np.ndarray, px: np.ndarray, qty: np.ndarray) -> tuple[np.ndarray, ...]:
            starts, ends = offs[idx], offs[idx + 1]
            sel = (
                np.concatenate([np.arange(s, e) for s, e in zip(starts, ends, strict=True)])
                if idx.size
                else np.zeros(0, np.int64)
            ).astype(np.int64)
            new_offs = np.concatenate([[0], np.cumsum(ends - starts)]).astype(np.int64)
            return new_offs, px[sel], qty[sel]

        bo, bp, bq = side(self.bid_offsets, self.bid_px, self.bid_qty)
        ao, ap, aq = side(self.ask_offsets, self.ask_px, self.ask_qty)
        return DepthDiffs(
            self.symbol,
            self.market,
            self.source,
            self.first_update_id[idx],
            self.last_update_id[idx],
            self.prev_update_id[idx],
            self.event_ts_ns[idx],
            self.ts_recv_ns[idx],
            self.line[idx],
            bo,
            bp,
            bq,
            ao,
            ap,
            aq,
        )

    @staticmethod
    def concat(parts: list[DepthDiffs]) -> DepthDiffs:
        """Diffs of consecutive captures of one symbol (e.g. a day's two files), chained.
        ``line``/``source`` keep the first part's source; lines of later parts are kept
        as they are in their own files."""
        p0 = parts[0]

        def offs(name: str) -> np.ndarray:
            out, base = [np.zeros(1, np.int64)], 0
            for p in parts:
                o = getattr(p, name)
                out.append(o[1:] + base)
                base += int(o[-1])
            return np.concatenate(out)

        def cat(name: str) -> np.ndarray:
            return np.concatenate([getattr(p, name) for p in parts])

        return DepthDiffs(
            p0.symbol,
            p0.market,
            " + ".join(p.source for p in parts),
            cat("first_update_id"),
            cat("last_update_id"),
            cat("prev_update_id"),
            cat("event_ts_ns"),
            cat("ts_recv_ns"),
            cat("line"),
            offs("bid_offsets"),
            cat("bid_px"),
            cat("bid_qty"),
            offs("ask_offsets"),
            cat("ask_px"),
            cat("ask_qty"),
        )


def find_gaps(diffs: DepthDiffs) -> np.ndarray:
    """Indices ``k`` (≥ 1) where diff ``k`` does not chain onto diff ``k - 1``: USD-M
    ``pu[k] != u[k-1]``, spot ``U[k] != u[k-1] + 1``."""
    u = diffs.last_update_id
    if u.size < 2:
        return np.zeros(0, dtype=np.int64)
    if diffs.market == "spot":
        bad = diffs.first_update_id[1:] != u[:-1] + 1
    else:
        bad = diffs.prev_update_id[1:] != u[:-1]
    return (np.flatnonzero(bad) + 1).astype(np.int64)


@dataclass(frozen=True)
class BookStates:
    """The book after each applied diff. Row ``j`` is the state after diff
    ``diff_index[j]``; ``bid_px[j, 0]`` is the best bid (NaN where a side is shorter than
    ``levels``). ``gap_index`` is the diff index of a sequence gap that stopped the
    rebuild (``on_gap="stop"``), else -1."""

    diff_index: np.ndarray
    first_update_id: np.ndarray  # U of the diff
    update_id: np.ndarray  # u of the diff
    event_ts_ns: np.ndarray
    ts_recv_ns: np.ndarray
    bid_px: np.ndarray  # (n, levels)
    bid_qty: np.ndarray
    ask_px: np.ndarray
    ask_qty: np.ndarray
    n_dropped: int  # diffs before the snapshot (u < lastUpdateId)
    gap_index: int = -1

    @property
    def best_bid(self) -> np.ndarray:
        return self.bid_px[:, 0]

    @property
    def best_ask(self) -> np.ndarray:
        return self.ask_px[:, 0]


class OrderBook:
    """A price-level book: ``{price: qty}`` plus a sorted price list per side."""

    def __init__(self) -> None:
        self.bids: dict[float, float] = {}
        self.asks: dict[float, float] = {}
        self._bp: list[float] = []  # ascending; best bid last
        self._ap: list[float] = []  # ascending; best ask first

    @classmethod
    def from_snapshot(cls, snap: DepthSnapshot) -> OrderBook:
        book = cls()
        book.bids = {p: q for p, q in snap.bids if q > 0}
        book.asks = {p: q for p, q in snap.asks if q > 0}
        book._bp = sorted(book.bids)
        book._ap = sorted(book.asks)
        return book

    @staticmethod
    def _apply_side(
        levels: dict[float, float], prices: list[float], px: np.ndarray, qty: np.ndarray
    ) -> None:
        for p, q in zip(px.tolist(), qty.tolist(), strict=True):
            if q == 0.0:
                if p in levels:
                    del levels[p]
                    del prices[bisect_left(prices, p)]
            else:
                if p not in levels:
                    insort(prices, p)
                levels[p] = q

    def apply(
        self, bid_px: np.ndarray, bid_qty: np.ndarray, ask_px: np.ndarray, ask_qty: np.ndarray
    ) -> None:
        """Apply one diff's absolute level quantities (0 removes the level)."""
        self._apply_side(self.bids, self._bp, bid_px, bid_qty)
        self._apply_side(self.asks, self._ap, ask_px, ask_qty)

    def top(self, levels: int) -> tuple[list[float], list[float], list[float], list[float]]:
        """``(bid_px, bid_qty, ask_px, ask_qty)`` of the best ``levels`` levels per side."""
        bp = self._bp[: -levels - 1 : -1]
        ap = self._ap[:levels]
        return bp, [self.bids[p] for p in bp], ap, [self.asks[p] for p in ap]

    def best_bid(self) -> float:
        return self._bp[-1] if self._bp else float("nan")

    def best_ask(self) -> float:
        return self._ap[0] if self._ap else float("nan")


def rebuild_book(
    snapshot: DepthSnapshot | None,
    diffs: DepthDiffs,
    *,
    levels: int = 5,
    on_gap: str = "raise",
) -> BookStates:
    """Replay ``diffs`` onto ``snapshot`` with Binance's rules (module docstring).

    Raises :class:`CatalogError` when there is no snapshot (a book is never invented from
    diffs alone) or no diff straddles it, and :class:`SequenceGapError` at the first gap unless
    ``on_gap="stop"`` (then the states up to the gap are returned with ``gap_index``).
    """
    if on_gap not in ("raise", "stop"):
        raise ValueError(f"on_gap must be 'raise' or 'stop', not {on_gap!r}")
    if snapshot is None:
        raise CatalogError(
            f"{diffs.source}: no REST depth snapshot; the order book of {diffs.symbol} "
            "cannot be rebuilt from depth diffs alone"
        )
    spot = diffs.market == "spot"
    last_id = snapshot.last_update_id
    U, u, pu = diffs.first_update_id, diffs.last_update_id, diffs.prev_update_id
    stale = u <= last_id if spot else u < last_id
    live = np.flatnonzero(~stale)
    if live.size == 0:
        raise CatalogError(
            f"{diffs.source}: no depth diff of {diffs.symbol} reaches the snapshot's "
            f"lastUpdateId {last_id} (line {snapshot.line})"
        )
    first = int(live[0])
    target = last_id + 1 if spot else last_id
    if not (U[first] <= target <= u[first]):
        raise SequenceGapError(
            f"{diffs.source}: line {diffs.line[first]}: first depth diff after the snapshot "
            f"(line {snapshot.line}, lastUpdateId {last_id}) has U={U[first]} u={u[first]}, "
            f"which does not straddle it; resync needed"
        )
    if stale[first:].any():
        k = first + int(np.flatnonzero(stale[first:])[0])
        raise SequenceGapError(
            f"{diffs.source}: line {diffs.line[k]}: depth diff u={u[k]} goes back before "
            "the snapshot after the book was synced"
        )
    book = OrderBook.from_snapshot(snapshot)
    n = len(diffs) - first
    bpx = np.full((n, levels), np.nan)
    bq = np.full((n, levels), np.nan)
    apx = np.full((n, levels), np.nan)
    aq = np.full((n, levels), np.nan)
    bo, ao = diffs.bid_offsets, diffs.ask_offsets
    gap = -1
    prev_u = None
    j = 0
    for k in range(first, len(diffs)):
        if prev_u is not None:
            chained = U[k] == prev_u + 1 if spot else pu[k] == prev_u
            if not chained:
                if on_gap == "raise":
                    want = f"U={prev_u + 1}" if spot else f"pu={prev_u}"
                    got = f"U={U[k]}" if spot else f"pu={pu[k]}"
                    raise SequenceGapError(
                        f"{diffs.source}: line {diffs.line[k]}: depth sequence gap in "
                        f"{diffs.symbol} (diff {k}: {got}, expected {want}); resync needed"
                    )
                gap = k
                break
        book.apply(
            diffs.bid_px[bo[k] : bo[k + 1]],
            diffs.bid_qty[bo[k] : bo[k + 1]],
            diffs.ask_px[ao[k] : ao[k + 1]],
            diffs.ask_qty[ao[k] : ao[k + 1]],
        )
        b, bqq, a, aqq = book.top(levels)
        bpx[j, : len(b)] = b
        bq[j, : len(b)] = bqq
        apx[j, : len(a)] = a
        aq[j, : len(a)] = aqq
        prev_u = int(u[k])
        j += 1
    idx = np.arange(first, first + j, dtype=np.int64)
    return BookStates(
        diff_index=idx,
        first_update_id=U[idx],
        update_id=u[idx],
        event_ts_ns=diffs.event_ts_ns[idx],
        ts_recv_ns=diffs.ts_recv_ns[idx],
        bid_px=bpx[:j],
        bid_qty=bq[:j],
        ask_px=apx[:j],
        ask_qty=aq[:j],
        n_dropped=first,
        gap_index=gap,
    )
