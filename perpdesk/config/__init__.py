"""Settings: defaults in code, a ``perpdesk.toml`` file, ``PERPDESK_*`` environment overrides.

Precedence, highest first: explicit keyword overrides (the CLI), environment variables
(``PERPDESK_CARRY__ENTRY_ANN_PCT=25`` — nested keys joined by ``__``), the TOML file
(``--config PATH``, else ``$PERPDESK_CONFIG``, else ``./perpdesk.toml`` when present),
then the defaults below.

Every money amount the platform commits is ``account.bankroll_usd × <something>_pct / 100``
(cryptarch's rule): ``bankroll_usd`` is the one knob that scales the whole operation.
Any value that breaks a rule raises :class:`ConfigError` with one line naming the key,
the value and the rule.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from perpdesk.errors import ConfigError

__all__ = [
    "AccountSettings",
    "CarrySettings",
    "ConfigError",
    "DemoSettings",
    "GridSettings",
    "LayerAllocationSettings",
    "OptimizeSettings",
    "PathsSettings",
    "RiskSettings",
    "RunnerSettings",
    "Settings",
    "StoreSettings",
    "load_settings",
]

_HOME = Path("~/.perpdesk")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class AccountSettings(_Section):
    """The account: its size is the scale of everything."""

    bankroll_usd: float = Field(
        100_000.0, gt=0, description="Capital in USD; every amount is a pct of it."
    )


class CarrySettings(_Section):
    """Funding-rate carry: short perp + long spot while annualised funding stays high.

    Rules after CLRS-style carry studies: enter when annualised funding (rate per
    settlement × settlements per year × 100, with the symbol's own interval) exceeds
    ``entry_ann_pct``; exit when it falls below ``exit_ann_pct``.
    """

    allocation_pct: float = Field(50.0, ge=0, le=100, description="% of bankroll given to carry.")
    entry_ann_pct: float = Field(
        20.0, description="Enter when annualised funding is above this (%)."
    )
    exit_ann_pct: float = Field(3.0, description="Exit when annualised funding is below this (%).")
    cost_bps_per_leg: float = Field(
        8.0, ge=0, description="Fee + slippage per leg per trade (bps)."
    )
    min_quote_volume_24h_usd: float = Field(
        10_000_000.0, ge=0, description="Universe filter: trailing 24h perp quote volume (USD)."
    )
    max_positions: int = Field(10, ge=1, description="At most this many pairs at once.")
    perp_leverage: float = Field(
        3.0, gt=0, le=125, description="Perp leverage: a slot's capital C buys spot X = C·L/(L+1)."
    )
    close_at_end: bool = Field(
        True, description="Close open pairs at the last timestamp, paying exit costs."
    )

    @model_validator(mode="after")
    def _entry_above_exit(self) -> CarrySettings:
        if self.entry_ann_pct <= self.exit_ann_pct:
            raise ValueError(
                f"carry.entry_ann_pct = {self.entry_ann_pct}: must be above "
                f"carry.exit_ann_pct ({self.exit_ann_pct})"
            )
        return self


class DemoSettings(_Section):
    """The embedded synthetic market that ``perpdesk demo`` builds and backtests."""

    seed: int = Field(7, description="Generator seed (same seed, same market).")
    n_symbols: int = Field(16, ge=1, le=40, description="Number of perps (with their spot legs).")
    days: int = Field(365, ge=2, le=3660, description="Days of history.")
    start: str = Field("2024-01-01", pattern=r"^\d{4}-\d{2}-\d{2}$", description="UTC start date.")


class PathsSettings(_Section):
    """Where perpdesk keeps data and run outputs (``~`` is expanded)."""

    data_dir: Path = Field(_HOME / "data", description="Catalogs and caches.")
    runs_dir: Path = Field(_HOME / "runs", description="Backtest outputs (reports, trades).")


class LayerAllocationSettings(_Section):
    """Hard cap on each strategy layer's gross notional, % of bankroll (checked by the
    safeguards at submit time, whatever the strategy's own sizing says). A layer at 0 may
    only reduce. The sum may not exceed 100."""

    carry: float = Field(50.0, ge=0, le=100, description="Funding carry (% of bankroll).")
    cascade: float = Field(0.0, ge=0, le=100, description="Liquidation-cascade capture (%).")
    tail_hedge: float = Field(0.0, ge=0, le=100, description="Options tail hedge (%).")
    grid: float = Field(0.0, ge=0, le=100, description="Volatility-adaptive grid (%).")
    rl: float = Field(0.0, ge=0, le=100, description="Reinforcement-learning agents (%).")

    @model_validator(mode="after")
    def _sum_at_most_100(self) -> LayerAllocationSettings:
        total = sum(self.model_dump().values())
        if total > 100.0:
            raise ValueError(f"risk.layer_allocation_pct: sum = {total}: must be at most 100")
        return self


class RiskSettings(_Section):
    """Pre-trade safeguards (``perpdesk.risk.safeguards``), all in % of bankroll.

    A live order needs ``enable_live_orders = true`` AND its layer in ``live_layers``.
    """

    enable_live_orders: bool = Field(
        False, description="Master switch for real orders; false = paper/simulated only."
    )
    live_layers: tuple[str, ...] = Field((), description="Layers allowed to send live orders.")
    max_position_pct: float = Field(
        25.0, gt=0, le=100, description="Gross notional per symbol, at most this % of bankroll."
    )
    max_deployed_pct: float = Field(
        50.0, gt=0, description="Gross notional over all positions, at most this % of bankroll."
    )
    min_position_pct: float = Field(
        1.0, ge=0, description="A position opened or grown is at least this % of bankroll."
    )
    max_daily_loss_pct: float = Field(
        5.0, gt=0, le=100, description="Halt (reduce-only) once the UTC day's PnL reaches -this %."
    )
    layer_allocation_pct: LayerAllocationSettings = LayerAllocationSettings()

    @model_validator(mode="after")
    def _ordered(self) -> RiskSettings:
        if self.min_position_pct > self.max_position_pct:
            raise ValueError(
                f"risk.min_position_pct = {self.min_position_pct}: must be at most "
                f"risk.max_position_pct ({self.max_position_pct})"
            )
        if self.max_position_pct > self.max_deployed_pct:
            raise ValueError(
                f"risk.max_position_pct = {self.max_position_pct}: must be at most "
                f"risk.max_deployed_pct ({self.max_deployed_pct})"
            )
        known = set(LayerAllocationSettings.model_fields)
        for layer in self.live_layers:
            if layer not in known:
                raise ValueError(
                    f"risk.live_layers = {list(self.live_layers)!r}: unknown layer {layer!r} "
                    f"(known: {', '.join(LayerAllocationSettings.model_fields)})"
                )
        return self


class StoreSettings(_Section):
    """The ledger database (``perpdesk.store``)."""

    url: str = Field(
        "",
        description="SQLAlchemy URL; empty = SQLite file <paths.data_dir>/ledger.sqlite (WAL). "
        "PostgreSQL: postgresql+psycopg://user@host:5432/db.",
    )
    snapshot_path: str = Field(
        "",
        description="Live-state JSON snapshot; empty = <paths.data_dir>/state.json.",
    )


class RunnerSettings(_Section):
    """The trading runtime, ``perpdesk run`` (``perpdesk.live.runner``); its command-line
    flags override these keys. Sizing comes from ``[carry]`` (slot = bankroll ×
    allocation_pct / max_positions, perp leverage), the caps from ``[risk]``, the ledger from
    ``store.url`` and the state snapshot from ``store.snapshot_path``.

    Tick VPIN (Easley, López de Prado & O'Hara 2012), fed by the perp's public trades with
    the aggressor flag: buckets of ``vpin_bucket_usd`` quote volume, VPIN the mean
    |buy − sell| / volume over the last ``vpin_n_buckets`` buckets (a fraction, 0–1)."""

    mode: Literal["paper", "live"] = Field(
        "paper",
        description="Used when neither --paper nor --live is given; live also needs "
        "risk.enable_live_orders and the layer in risk.live_layers.",
    )
    venue: str = Field(
        "binanceusdm",
        min_length=1,
        description="ccxt id of the perp exchange (orders, data): binanceusdm, bybit or okx.",
    )
    spot_venue: str = Field(
        "",
        description="ccxt id of the spot exchange; empty = the perp venue's own spot account "
        "(binanceusdm → binance; bybit and okx: the same unified account).",
    )
    symbols: tuple[str, ...] = Field(
        ("BTCUSDT",), description="Perps traded, each paired with its spot leg (X → X.SPOT)."
    )
    signals: Literal["scanner", "mark"] = Field(
        "scanner",
        description="Funding signal: scanner = REST scan (funding estimate, 24h volume, the "
        "[carry] rules); mark = predicted rate of the mark-price stream (no volume filter).",
    )
    run_id: str = Field(
        "pd", description="Client order id prefix: 1–8 of A-Z a-z 0-9 . : / _ - (Binance ids)."
    )
    cycle_s: float = Field(300.0, gt=0, description="Seconds between cycle starts.")
    cycle_timeout_s: float = Field(
        60.0, gt=0, description="Hard timeout of one cycle (s); a stuck call is cancelled."
    )
    leg_fill_timeout_s: float = Field(
        10.0, gt=0, description="Wait for a pair's legs to fill before unwinding (s)."
    )
    unwind_timeout_s: float = Field(
        30.0, gt=0, description="Bound on unwinding a failed pair's filled leg (s)."
    )
    poll_s: float = Field(0.05, gt=0, description="Order-state poll interval (s).")
    vpin_entry_max: float = Field(
        0.80, ge=0, le=1, description="Enter only while warmed-up tick VPIN is below this."
    )
    vpin_exit_min: float = Field(
        0.90, ge=0, le=1, description="Close a held pair when tick VPIN is above this."
    )
    vpin_bucket_usd: float = Field(50_000.0, gt=0, description="VPIN bucket volume (USD).")
    vpin_n_buckets: int = Field(50, ge=1, description="VPIN window (buckets).")
    require_warm_vpin: bool = Field(
        True, description="No entry until vpin_n_buckets buckets have completed."
    )
    cap_price_buffer_bps: float = Field(
        20.0,
        ge=0,
        le=1000,
        description="An entry cut to the caps is sized at last prices raised by this (bps), "
        "so it still passes if the price rises that much before it is sent.",
    )
    paper_balance_usd: float = Field(
        0.0, ge=0, description="Paper wallet at the start (USD); 0 = account.bankroll_usd."
    )
    paper_journal: str = Field(
        "", description="Paper venue journal; empty = <paths.data_dir>/paper-<run_id>.sqlite."
    )
    paper_flush_s: float = Field(
        0.2, gt=0, description="Paper on live data: commit the journal at least this often (s)."
    )

    @field_validator("symbols")
    @classmethod
    def _symbols(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        out = tuple(s.strip().upper() for s in v)
        if not out or any(not s for s in out):
            raise ValueError(
                f"runner.symbols = {list(v)!r}: give at least one perp symbol, e.g. BTCUSDT"
            )
        dup = sorted({s for s in out if out.count(s) > 1})
        if dup:
            raise ValueError(f"runner.symbols = {list(v)!r}: {', '.join(dup)} listed twice")
        return out

    @field_validator("run_id")
    @classmethod
    def _run_id(cls, v: str) -> str:
        if not re.fullmatch(r"[.A-Za-z0-9:/_-]{1,8}", v):
            raise ValueError(
                f"runner.run_id = {v!r}: must be 1–8 characters of A-Z a-z 0-9 . : / _ - "
                "(it prefixes every client order id)"
            )
        return v

    @model_validator(mode="after")
    def _vpin_order(self) -> RunnerSettings:
        if not self.vpin_entry_max < self.vpin_exit_min:
            raise ValueError(
                f"runner.vpin_entry_max = {self.vpin_entry_max}: must be below "
                f"runner.vpin_exit_min ({self.vpin_exit_min})"
            )
        return self


class GridSettings(_Section):
    """Overrides of the grid strategy's parameters (``GridParams`` in
    ``perpdesk/strategies/grid/params.py`` holds every default and its unit);
    ``perpdesk optimize apply`` writes the chosen ones here."""

    params: dict[str, int | float | bool] = Field(
        default_factory=dict, description="GridParams field -> value."
    )

    @model_validator(mode="after")
    def _known(self) -> GridSettings:
        if self.params:
            from dataclasses import fields

            from perpdesk.strategies.grid.params import GridParams

            known = [f.name for f in fields(GridParams)]
            unknown = [k for k in self.params if k not in known]
            if unknown:
                raise ValueError(
                    f"grid.params: unknown field(s) {', '.join(unknown)} (known: {', '.join(known)})"
                )
            try:
                GridParams(**self.params)
            except Exception as exc:
                raise ValueError(f"grid.params: {exc}") from None
        return self


DEFAULT_GRID_SPACE: dict[str, dict[str, Any]] = {
    "spacing_atr_mult": {"low": 0.5, "high": 3.0},
    "levels_per_side": {"low": 2, "high": 8},
    "slope_threshold": {"low": 0.05, "high": 0.4},
    "stop_atr_mult": {"low": 2.0, "high": 6.0},
    "as_gamma": {"low": 0.01, "high": 1.0, "log": True},
}


class OptimizeSettings(_Section):
    """Walk-forward optimisation (``perpdesk.research.walkforward``)."""

    trials: int = Field(200, ge=1, description="Trials of the TPE search.")
    windows: int = Field(3, ge=1, description="Sliding walk-forward windows.")
    train_frac: float = Field(0.7, gt=0, lt=1, description="Train share of each window.")
    holdout_frac: float = Field(0.2, ge=0, lt=1, description="Final held-out share of the span.")
    seed: int = Field(0, description="Sampler seed (same seed, same trials on any pool).")
    batch_size: int = Field(8, ge=1, description="Trials asked per batch (not the worker count).")
    var_penalty: float = Field(
        0.5, ge=0, description="Fitness penalty per unit std across windows."
    )
    trade_penalty: float = Field(1.0, ge=0, description="Fitness penalty per unit of over-trading.")
    max_trades_per_day: float = Field(
        50.0, gt=0, description="Trades/day above which it penalises."
    )
    grid_space: dict[str, dict[str, Any]] = Field(
        default_factory=lambda: {k: dict(v) for k, v in DEFAULT_GRID_SPACE.items()},
        description="Search space: name -> {low, high[, step][, log][, int]} or {choices}.",
    )

    @model_validator(mode="after")
    def _space(self) -> OptimizeSettings:
        from perpdesk.research.walkforward import parse_space

        try:
            parse_space(self.grid_space)
        except Exception as exc:
            raise ValueError(f"optimize.grid_space: {exc}") from None
        return self


class Settings(BaseSettings):
    """All settings. Frozen; ``content_hash()`` identifies a run's configuration."""

    model_config = SettingsConfigDict(
        env_prefix="PERPDESK_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        validate_default=True,
    )

    account: AccountSettings = AccountSettings()
    carry: CarrySettings = CarrySettings()
    demo: DemoSettings = DemoSettings()
    paths: PathsSettings = PathsSettings()
    risk: RiskSettings = RiskSettings()
    store: StoreSettings = StoreSettings()
    grid: GridSettings = GridSettings()
    optimize: OptimizeSettings = OptimizeSettings()
    runner: RunnerSettings = RunnerSettings()

    def content_hash(self) -> str:
        """Short sha256 of the canonical JSON of every setting that affects backtest results
        (paths, store and the runtime's [runner] are left out)."""
        payload = self.model_dump(mode="json", exclude={"paths", "store", "runner"})
        blob = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    def carry_capital_usd(self) -> float:
        """USD given to the carry layer: bankroll × allocation_pct / 100."""
        return self.account.bankroll_usd * self.carry.allocation_pct / 100.0


def _known_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        if field is None or not isinstance(field.annotation, type):
            return []
        if not issubclass(field.annotation, BaseModel):
            return []
        model = field.annotation
    return list(model.model_fields)


def _one_line(exc: ValidationError, source: str) -> str:
    errs = exc.errors(include_url=False)
    e = errs[0]
    loc = tuple(e.get("loc", ()))
    key = ".".join(str(p) for p in loc) or "<settings>"
    msg = str(e.get("msg", "invalid"))
    if e.get("type") == "extra_forbidden":
        known = _known_keys(Settings, loc)
        rule = "unknown key" + (f" (known: {', '.join(known)})" if known else "")
        text = f"{key} = {e.get('input')!r}: {rule}"
    elif e.get("type") == "value_error":
        text = msg.removeprefix("Value error, ")
    else:
        text = f"{key} = {e.get('input')!r}: {msg[0].lower() + msg[1:] if msg else msg}"
    more = f" (+{len(errs) - 1} more)" if len(errs) > 1 else ""
    return f"config error{source}: {text}{more}"


def load_settings(path: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
    """Load settings from ``path`` (or ``$PERPDESK_CONFIG``, or ``./perpdesk.toml``), the
    environment and ``overrides`` (nested dicts by section). Raises :class:`ConfigError`
    with one line on any bad value, unknown key or unreadable file."""
    if path is None:
        env_path = os.environ.get("PERPDESK_CONFIG")
        if env_path:
            path = env_path
        elif Path("perpdesk.toml").is_file():
            path = "perpdesk.toml"
    toml_path = Path(path).expanduser() if path is not None else None
    if toml_path is not None:
        if not toml_path.is_file():
            raise ConfigError(f"config error: {toml_path}: no such file")
        try:
            tomllib.loads(toml_path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config error: {toml_path}: not valid TOML ({exc})") from None

    class _FromFile(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
            if toml_path is not None:
                sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_path))
            return tuple(sources)

    source = f" in {toml_path}" if toml_path is not None else ""
    try:
        loaded = _FromFile(**overrides)
    except ValidationError as exc:
        raise ConfigError(_one_line(exc, source)) from None
    return Settings.model_validate(loaded.model_dump())
