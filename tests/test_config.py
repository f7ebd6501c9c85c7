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
            "acount = {'bankroll_usd': 1}: unknown key (known: account, carry, demo, paths, risk, store, grid, optimize)",
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
