"""Walk-forward windows, fitness and the optimiser on serial, process and Ray pools."""

from __future__ import annotations

import math
import sys

import pytest

from perpdesk.errors import PerpdeskError
from perpdesk.research.pools import LocalPool, RayPool, SerialPool
from perpdesk.research.walkforward import (
    DAY_NS,
    Fitness,
    fitness_of,
    optimize,
    parse_space,
    walk_forward_windows,
)


def test_windows_tile_the_region() -> None:
    # 100 days, 20 % holdout → region [0, 80d); n=3, train 0.7:
    # L = 80 / (0.7 + 3 × 0.3) = 50 days; train 35, test 15.
    # w0: train [0,35) test [35,50); w1: [15,50) [50,65); w2: [30,65) [65,80)
    ws, hold = walk_forward_windows(0, 100 * DAY_NS, 3, 0.7, 0.2)
    assert hold == (80 * DAY_NS, 100 * DAY_NS)
    got = [(w.train_start_ns, w.test_start_ns, w.test_end_ns) for w in ws]
    want = [(0, 35, 50), (15, 50, 65), (30, 65, 80)]
    assert got == [tuple(d * DAY_NS for d in row) for row in want]


def test_windows_bad_input() -> None:
    with pytest.raises(PerpdeskError, match="windows = 0"):
        walk_forward_windows(0, DAY_NS, 0)
    with pytest.raises(PerpdeskError, match="train_frac"):
        walk_forward_windows(0, DAY_NS, 2, train_frac=1.0)


def test_parse_space() -> None:
    ps = parse_space(
        {
            "k": {"low": 0.5, "high": 2.0},
            "levels": {"low": 2, "high": 8},
            "mode": {"choices": ["a", "b"]},
        }
    )
    assert [p.name for p in ps] == ["k", "levels", "mode"]
    assert not ps[0].integer and ps[1].integer and ps[2].choices == ("a", "b")
    with pytest.raises(PerpdeskError, match="search space k: low 2 must be a number below high 1"):
        parse_space({"k": {"low": 2, "high": 1}})
    with pytest.raises(PerpdeskError, match="unknown keys"):
        parse_space({"k": {"low": 0, "high": 1, "stepp": 2}})


def test_fitness_by_hand() -> None:
    # two windows × two coins; calmar (2, 4) and (1, nan→0); trades 10 over 10 days each
    grid = [
        [{"calmar": 2.0, "trades": 10}, {"calmar": 4.0, "trades": 10}],
        [{"calmar": 1.0, "trades": 10}, {"calmar": math.nan, "trades": 10}],
    ]
    f = Fitness(var_penalty=0.5, trade_penalty=1.0, max_trades_per_day=0.5, clip=20)
    # S = (3, 0.5); mean 1.75; population std 1.25; trades/day 1 → excess 1/0.5 − 1 = 1
    value, s_w = fitness_of(grid, [10.0, 10.0], f)
    assert s_w == [3.0, 0.5]
    assert value == pytest.approx(1.75 - 0.5 * 1.25 - 1.0 * 1.0)


class Quadratic:
    """Deterministic toy backtest: calmar peaks at x = 2, y = 'b', a little coin/time
    dependence so windows differ."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, params, coin, start_ns, end_ns):  # type: ignore[no-untyped-def]
        self.calls += 1
        shift = (start_ns // DAY_NS % 7) * 0.01 + (0.1 if coin == "ETH" else 0.0)
        bonus = 1.0 if params["y"] == "b" else 0.0
        return {
            "calmar": 5.0 + bonus - (params["x"] - 2.0) ** 2 + shift,
            "trades": float(params["n"]),
        }

    def cache_key(self) -> str:
        return "quadratic-v1"


SPACE = {"x": {"low": 0.0, "high": 4.0}, "y": {"choices": ["a", "b"]}, "n": {"low": 1, "high": 5}}


def _run(pool, cache_dir=None, evaluator=None):  # type: ignore[no-untyped-def]
    return optimize(
        evaluator or Quadratic(),
        parse_space(SPACE),
        ["BTC", "ETH"],
        0,
        60 * DAY_NS,
        n_trials=16,
        n_windows=2,
        seed=7,
        batch_size=4,
        pool=pool,
        cache_dir=cache_dir,
    )


def test_optimize_finds_optimum_and_is_pool_independent(tmp_path) -> None:  # type: ignore[no-untyped-def]
    serial = _run(SerialPool())
    assert serial.best_params["y"] == "b"
    assert abs(serial.best_params["x"] - 2.0) < 1.0
    assert len(serial.trials) == 16 and len(serial.oos) == 4 and len(serial.holdout) == 2
    pool = LocalPool(2)
    try:
        local = _run(pool)
    finally:
        pool.close()
    assert local.best_params == serial.best_params
    assert [t["fitness"] for t in local.trials] == [t["fitness"] for t in serial.trials]
    paths = serial.save(tmp_path / "run")
    assert {"trials", "oos", "best"} <= set(paths)


def test_optimize_on_ray_matches_serial() -> None:
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    pool = RayPool("local", workers=2)
    try:
        on_ray = _run(pool)
    finally:
        pool.close()
    assert on_ray.best_params == _run(SerialPool()).best_params


def test_cache_resumes_without_recomputing(tmp_path) -> None:  # type: ignore[no-untyped-def]
    ev = Quadratic()
    first = _run(SerialPool(), tmp_path / "cache", ev)
    assert ev.calls > 0
    ev2 = Quadratic()
    again = _run(SerialPool(), tmp_path / "cache", ev2)
    assert ev2.calls == 0
    assert again.best_params == first.best_params


def test_ray_bad_address() -> None:
    with pytest.raises(PerpdeskError, match="expected 'local', 'auto'"):
        RayPool("http://nope")
