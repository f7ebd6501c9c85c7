"""Settings: file, environment, precedence, and one-line errors naming key, value and rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from perpdesk.config import Settings, load_settings
from perpdesk.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for k in list(__import__("os").environ):
        if k.startswith("PERPDESK_"):
            monkeypatch.delenv(k)
    monkeypatch.chdir(tmp_path)  # no ./perpdesk.toml here


def _toml(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "cfg.toml"
    p.write_text(text)
    return p


def test_example_file_holds_exactly_the_defaults() -> None:
    assert load_settings(REPO / "perpdesk.toml") == Settings()


def test_file_then_env_then_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = _toml(
        tmp_path, "[carry]\nentry_ann_pct = 30\nmax_positions = 4\n[account]\nbankroll_usd = 2e6\n"
    )
    s = load_settings(p)
    assert (s.carry.entry_ann_pct, s.carry.max_positions, s.account.bankroll_usd) == (30.0, 4, 2e6)
    assert s.carry_capital_usd() == 1e6
    monkeypatch.setenv("PERPDESK_CARRY__ENTRY_ANN_PCT", "40")
    assert load_settings(p).carry.entry_ann_pct == 40.0
    assert load_settings(p, carry={"entry_ann_pct": 50}).carry.entry_ann_pct == 50.0
    monkeypatch.setenv("PERPDESK_CONFIG", str(p))
    assert load_settings().carry.max_positions == 4


def test_local_perpdesk_toml_is_found(tmp_path: Path) -> None:
    (tmp_path / "perpdesk.toml").write_text("[carry]\nmax_positions = 3\n")
    assert load_settings().carry.max_positions == 3


def test_content_hash_tracks_results_not_paths() -> None:
    a = load_settings(None)
    assert a.content_hash() == load_settings(None, paths={"runs_dir": "/elsewhere"}).content_hash()
    assert a.content_hash() != load_settings(None, carry={"cost_bps_per_leg": 5}).content_hash()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "[carry]\nallocation_pct = -5\n",
            "carry.allocation_pct = -5: input should be greater than or equal to 0",
        ),
        (
            "[carry]\nentry_ann_pct = 2\n",
            "carry.entry_ann_pct = 2.0: must be above carry.exit_ann_pct (3.0)",
        ),
        (
            "[carry]\nentry_pct = 2\n",
            "carry.entry_pct = 2: unknown key (known: allocation_pct, entry_ann_pct, exit_ann_pct, "
            "cost_bps_per_leg, min_quote_volume_24h_usd, max_positions, perp_leverage, close_at_end)",
        ),
        (
            "[acount]\nbankroll_usd = 1\n",
            "acount = {'bankroll_usd': 1}: unknown key (known: account, carry, demo, paths, risk, store, grid, optimize, runner)",
        ),
        (
            "[account]\nbankroll_usd = 0\n",
            "account.bankroll_usd = 0: input should be greater than 0",
        ),
        (
            "[carry]\nmax_positions = 'ten'\n",
            "carry.max_positions = 'ten': input should be a valid integer",
        ),
    ],
)
def test_bad_values_give_one_line(tmp_path: Path, text: str, message: str) -> None:
    p = _toml(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_settings(p)
    assert str(e.value).startswith(f"config error in {p}: {message}")
    assert "\n" not in str(e.value)


def test_bad_env_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PERPDESK_CARRY__COST_BPS_PER_LEG", "-1")
    with pytest.raises(
        ConfigError, match=r"^config error: carry.cost_bps_per_leg = '-1': input should be greater"
    ):
        load_settings(None)


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_settings(tmp_path / "nope.toml")
    p = _toml(tmp_path, "[carry\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(p)


def test_grid_and_optimize_sections(tmp_path: Path) -> None:
    p = _toml(
        tmp_path,
        "[grid.params]\nlevels_per_side = 7\n[optimize.grid_space]\nk = {low = 1, high = 2}\n",
    )
    s = load_settings(p)
    assert s.grid.params == {"levels_per_side": 7}
    assert s.optimize.grid_space == {"k": {"low": 1, "high": 2}}
    with pytest.raises(
        ConfigError, match=r"grid.params: unknown field\(s\) nope \(known: kama_period"
    ):
        load_settings(_toml(tmp_path, "[grid.params]\nnope = 1\n"))
    with pytest.raises(ConfigError, match=r"GridParams\.levels_per_side = 0: must be >= 1"):
        load_settings(_toml(tmp_path, "[grid.params]\nlevels_per_side = 0\n"))
    with pytest.raises(
        ConfigError,
        match=r"optimize\.grid_space: search space k: low 3 must be a number below high 2",
    ):
        load_settings(_toml(tmp_path, "[optimize.grid_space]\nk = {low = 3, high = 2}\n"))


def test_runner_section_from_file_env_and_overrides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = _toml(
        tmp_path,
        '[runner]\nsymbols = ["ethusdt", " BTCUSDT"]\ncycle_s = 120\nvpin_entry_max = 0.7\n'
        'signals = "mark"\npaper_balance_usd = 2500\n',
    )
    r = load_settings(p).runner
    assert r.symbols == ("ETHUSDT", "BTCUSDT")  # upper-cased, stripped
    assert (r.cycle_s, r.vpin_entry_max, r.vpin_exit_min) == (120.0, 0.7, 0.9)
    assert (r.signals, r.paper_balance_usd, r.cycle_timeout_s) == ("mark", 2500.0, 60.0)
    monkeypatch.setenv("PERPDESK_RUNNER__CYCLE_TIMEOUT_S", "15")
    r = load_settings(p).runner
    assert (r.cycle_s, r.cycle_timeout_s) == (120.0, 15.0)
    # an override (the CLI's flags) wins and keeps the file's other keys
    r = load_settings(p, runner={"cycle_s": 5.0}).runner
    assert (r.cycle_s, r.cycle_timeout_s, r.vpin_entry_max) == (5.0, 15.0, 0.7)
    # the runtime section does not change the backtest's content hash
    assert load_settings(p).content_hash() == load_settings(None).content_hash()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[runner]\ncycle_s = 0\n", "runner.cycle_s = 0: input should be greater than 0"),
        (
            "[runner]\ncycle_timeout_s = -5\n",
            "runner.cycle_timeout_s = -5: input should be greater than 0",
        ),
        (
            "[runner]\nvpin_entry_max = 0.95\n",
            "runner.vpin_entry_max = 0.95: must be below runner.vpin_exit_min (0.9)",
        ),
        (
            "[runner]\nvpin_exit_min = 1.5\n",
            "runner.vpin_exit_min = 1.5: input should be less than or equal to 1",
        ),
        ("[runner]\nsymbols = []\n", "runner.symbols = []: give at least one perp symbol"),
        (
            '[runner]\nsymbols = ["BTCUSDT", "btcusdt"]\n',
            "runner.symbols = ['BTCUSDT', 'btcusdt']: BTCUSDT listed twice",
        ),
        (
            '[runner]\nrun_id = "far-too-long"\n',
            "runner.run_id = 'far-too-long': must be 1–8 characters",
        ),
        ('[runner]\nmode = "real"\n', "runner.mode = 'real': input should be 'paper' or 'live'"),
        (
            '[runner]\nsignals = "tv"\n',
            "runner.signals = 'tv': input should be 'scanner' or 'mark'",
        ),
        (
            "[runner]\npaper_balance_usd = -1\n",
            "runner.paper_balance_usd = -1: input should be greater than or equal to 0",
        ),
        ("[runner]\ncycle = 5\n", "runner.cycle = 5: unknown key (known: mode, venue,"),
    ],
)
def test_bad_runner_values_give_one_line_naming_the_key(
    tmp_path: Path, text: str, message: str
) -> None:
    p = _toml(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_settings(p)
    assert str(e.value).startswith(f"config error in {p}: {message}")
    assert "\n" not in str(e.value)
