"""The walk-forward optimiser end to end on the synthetic market: the grid evaluated by the
event engine, trials on a local process pool and on a local Ray instance (same seed → same
best parameters), and ``perpdesk optimize grid`` / ``optimize apply`` through the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from perpdesk.config import load_settings
from perpdesk.data.synthetic import SyntheticSpec, generate_market
from perpdesk.research.grid_backtest import GridEvaluator
from perpdesk.research.pools import LocalPool, RayPool
from perpdesk.research.walkforward import DAY_NS, optimize, parse_space
from perpdesk.strategies.grid.params import GridParams

SPACE = {"spacing_atr_mult": {"low": 0.5, "high": 3.0}, "levels_per_side": {"low": 2, "high": 6}}
START_NS = int(1704067200 * 1e9)  # 2024-01-01


@pytest.fixture(scope="module")
def market(tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("synth")
    generate_market(SyntheticSpec(seed=11, n_symbols=2, days=12, start="2024-01-01"), root)
    return root


def _search(root: Path, pool):  # type: ignore[no-untyped-def]
    ev = GridEvaluator(str(root), "synth", GridParams(), bars="perp_bars_5m")
    return optimize(
        ev,
        parse_space(SPACE),
        ["BTC", "ETH"],
        START_NS,
        START_NS + 12 * DAY_NS,
        n_trials=4,
        n_windows=2,
        holdout_frac=0.2,
        seed=5,
        batch_size=2,
        pool=pool,
    )


def test_process_pool_and_ray_agree(market: Path) -> None:
    local = LocalPool(2)
    try:
        a = _search(market, local)
    finally:
        local.close()
    ray_pool = RayPool("local", workers=2)
    try:
        b = _search(market, ray_pool)
    finally:
        ray_pool.close()
    assert a.best_params == b.best_params
    assert [t["fitness"] for t in a.trials] == [t["fitness"] for t in b.trials]
    assert len(a.oos) == 4 and len(a.holdout) == 2
    assert all("calmar" in r and "trades" in r for r in a.oos)


def test_cli_optimize_then_apply(market: Path, tmp_path: Path) -> None:
    out = tmp_path / "opt"
    cfg = tmp_path / "mine.toml"
    cfg.write_text("# my settings\n[carry]\nmax_positions = 4  # keep me\n")
    env = {
        **os.environ,
        "PERPDESK_PATHS__RUNS_DIR": str(tmp_path),
        "COLUMNS": "200",
        "PERPDESK_OPTIMIZE__GRID_SPACE": '{"levels_per_side": {"low": 2, "high": 6}}',
    }
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "perpdesk.app.cli",
            "optimize",
            "grid",
            "--data",
            str(market),
            "--venue",
            "synth",
            "--bars",
            "perp_bars_5m",
            "--coins",
            "BTC",
            "--coins",
            "ETH",
            "--trials",
            "2",
            "--windows",
            "1",
            "--workers",
            "1",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    assert "best of 2 trials" in run.stdout and (out / "trials.parquet").exists()
    app = subprocess.run(
        [
            sys.executable,
            "-m",
            "perpdesk.app.cli",
            "optimize",
            "apply",
            str(out),
            "--config",
            str(cfg),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd=tmp_path,
    )
    assert app.returncode == 0, app.stderr
    text = cfg.read_text()
    assert "# keep me" in text  # comments and other sections survive
    levels = tomllib.loads(text)["grid"]["params"]["levels_per_side"]
    assert 2 <= levels <= 6
    s = load_settings(cfg)
    assert s.grid.params["levels_per_side"] == levels and s.carry.max_positions == 4


def test_apply_without_result_is_one_line(tmp_path: Path) -> None:
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "perpdesk.app.cli",
            "optimize",
            "apply",
            str(tmp_path / "nope"),
            "--config",
            str(tmp_path / "c.toml"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert run.returncode == 2
    assert run.stderr.strip().startswith("error: ") and "best.json: no such file" in run.stderr
