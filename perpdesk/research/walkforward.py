"""Walk-forward optimisation with optuna, on a local process pool or a Ray cluster.

Windows (Pardo 2008, "The Evaluation and Optimization of Trading Strategies", ch. 11):
the span ``[start, end)`` is cut into a walk-forward region and a final held-out tail
(``holdout_frac``). The region holds ``n_windows`` sliding windows of equal length
``L``, each ``train_frac`` train then ``1 − train_frac`` test, stepped by the test length
so the test segments tile the region end to end without overlap:
``region = train + n × test``, hence ``L = region / (train_frac + n × (1 − train_frac))``.

Fitness of a parameter set (higher is better), from the TRAIN segments only:

- ``s_{w,c}`` = Calmar of coin ``c`` on window ``w``'s train segment, clipped to
  ``[−clip, clip]`` (NaN — no drawdown or no trade — counts as 0, so doing nothing
  scores nothing);
- ``S_w = mean_c s_{w,c}`` (parameters must work across coins);
- ``fitness = mean_w S_w − var_penalty × std_w S_w − trade_penalty × excess``, where
  ``excess = max(0, trades_per_day / max_trades_per_day − 1)`` averaged over (w, c)
  penalises over-trading.

The test segments and the held-out tail are scored only for the best parameters
(out-of-sample). Trials are asked from a seeded TPE sampler in fixed-size batches and told
back in order, so the same seed gives the same trials and the same best parameters on any
pool (the batch size is a setting of its own, never the pool's worker count). Every
(parameters, coin, segment) evaluation is cached on disk by content hash, so a crashed
sweep resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from perpdesk.errors import PerpdeskError
from perpdesk.files import atomic_write_text
from perpdesk.research.pools import Pool, SerialPool

DAY_NS = 86_400 * 1_000_000_000


@dataclass(frozen=True, slots=True)
class Window:
    """One walk-forward window: train ``[train_start_ns, test_start_ns)``, test
    ``[test_start_ns, test_end_ns)``."""

    index: int
    train_start_ns: int
    test_start_ns: int
    test_end_ns: int


def walk_forward_windows(
    start_ns: int,
    end_ns: int,
    n_windows: int,
    train_frac: float = 0.7,
    holdout_frac: float = 0.2,
) -> tuple[list[Window], tuple[int, int]]:
    """The sliding windows and the held-out ``(start_ns, end_ns)`` (see module docstring)."""
    if n_windows < 1:
        raise PerpdeskError(f"windows = {n_windows}: must be >= 1")
    if not 0.0 < train_frac < 1.0:
        raise PerpdeskError(f"train_frac = {train_frac}: must be in (0, 1)")
    if not 0.0 <= holdout_frac < 1.0:
        raise PerpdeskError(f"holdout_frac = {holdout_frac}: must be in [0, 1)")
    if end_ns <= start_ns:
        raise PerpdeskError("walk-forward span is empty: end must be after start")
    holdout_start = end_ns - int((end_ns - start_ns) * holdout_frac)
    region = holdout_start - start_ns
    length = region / (train_frac + n_windows * (1.0 - train_frac))
    train, test = length * train_frac, length * (1.0 - train_frac)
    windows = []
    for k in range(n_windows):
        ts = start_ns + round(k * test)
        t0 = start_ns + round(train + k * test)
        t1 = start_ns + round(train + (k + 1) * test) if k < n_windows - 1 else holdout_start
        windows.append(Window(k, ts, t0, t1))
    return windows, (holdout_start, end_ns)


# --------------------------------------------------------------------------- search space


@dataclass(frozen=True, slots=True)
class Param:
    """One searched parameter: a float/int range (``step``/``log`` optional) or choices."""

    name: str
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    integer: bool = False
    choices: tuple[Any, ...] | None = None

    def suggest(self, trial: Any) -> Any:
        """Ask an optuna trial for this parameter."""
        if self.choices is not None:
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.integer:
            return trial.suggest_int(
                self.name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log
            )
        return trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log)


def parse_space(spec: Mapping[str, Mapping[str, Any]]) -> list[Param]:
    """A search space from config: ``{name: {low, high[, step][, log][, int]} | {choices}}``.

    Errors name the parameter and the problem in one line."""
    out = []
    for name, s in spec.items():
        unknown = set(s) - {"low", "high", "step", "log", "int", "choices"}
        if unknown:
            raise PerpdeskError(f"search space {name}: unknown keys {sorted(unknown)}")
        if "choices" in s:
            ch = tuple(s["choices"])
            if not ch:
                raise PerpdeskError(f"search space {name}: choices is empty")
            out.append(Param(name, choices=ch))
            continue
        if "low" not in s or "high" not in s:
            raise PerpdeskError(f"search space {name}: needs low and high (or choices)")
        low, high = s["low"], s["high"]
        if not (isinstance(low, int | float) and isinstance(high, int | float)) or not low < high:
            raise PerpdeskError(
                f"search space {name}: low {low!r} must be a number below high {high!r}"
            )
        if s.get("log") and low <= 0:
            raise PerpdeskError(f"search space {name}: log scale needs low > 0")
        integer = bool(
            s.get("int", isinstance(low, int) and isinstance(high, int) and "step" not in s)
        )
        out.append(Param(name, float(low), float(high), s.get("step"), bool(s.get("log")), integer))
    if not out:
        raise PerpdeskError("search space is empty")
    return out


# --------------------------------------------------------------------------- evaluation


class Evaluator(Protocol):
    """A picklable backtest: ``params`` on ``coin`` over ``[start_ns, end_ns)`` → metrics.

    The result must hold ``calmar`` and ``trades`` (count of fills or round trips — the
    over-trading penalty uses it per day) and may hold anything else (floats).
    ``cache_key`` identifies the evaluator, its data and its fixed settings."""

    def __call__(
        self, params: Mapping[str, Any], coin: str, start_ns: int, end_ns: int
    ) -> dict[str, float]: ...

    def cache_key(self) -> str: ...


@dataclass(frozen=True, slots=True)
class _Task:
    evaluator: Any
    params: tuple[tuple[str, Any], ...]
    coin: str
    start_ns: int
    end_ns: int


def _run_task(task: _Task) -> dict[str, float]:
    out = task.evaluator(dict(task.params), task.coin, task.start_ns, task.end_ns)
    return {k: float(v) for k, v in out.items()}


def _task_hash(key: str, task: _Task) -> str:
    blob = json.dumps(
        [key, list(task.params), task.coin, task.start_ns, task.end_ns], default=str
    ).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


@dataclass(frozen=True, slots=True)
class Fitness:
    """Fitness weights (see module docstring)."""

    var_penalty: float = 0.5
    trade_penalty: float = 1.0
    max_trades_per_day: float = 50.0
    clip: float = 20.0


def _score(m: Mapping[str, float], clip: float) -> float:
    c = m.get("calmar", math.nan)
    return 0.0 if math.isnan(c) else float(np.clip(c, -clip, clip))


def fitness_of(
    per_window: Sequence[Sequence[Mapping[str, float]]],
    spans_days: Sequence[float],
    f: Fitness,
) -> tuple[float, list[float]]:
    """``(fitness, S_w per window)`` from metrics indexed ``[window][coin]``."""
    s_w = [float(np.mean([_score(m, f.clip) for m in row])) for row in per_window]
    excess = [
        max(0.0, m.get("trades", 0.0) / max(days, 1e-9) / f.max_trades_per_day - 1.0)
        for row, days in zip(per_window, spans_days, strict=True)
        for m in row
    ]
    sd = float(np.std(s_w)) if len(s_w) > 1 else 0.0
    return float(np.mean(s_w)) - f.var_penalty * sd - f.trade_penalty * float(np.mean(excess)), s_w


@dataclass
class OptimizeResult:
    """Everything a search produced. ``trials`` rows: number, params, fitness, S_w."""

    best_params: dict[str, Any]
    best_fitness: float
    trials: list[dict[str, Any]]
    oos: list[dict[str, Any]]
    holdout: list[dict[str, Any]]
    windows: list[Window]
    holdout_span: tuple[int, int]
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def oos_calmar_mean(self) -> float:
        """Mean Calmar over the test segments and coins of the best parameters."""
        vals = [_score(r, math.inf) for r in self.oos]
        return float(np.mean(vals)) if vals else math.nan

    def save(self, out_dir: Path) -> dict[str, Path]:
        """``trials.parquet``, ``oos.parquet`` and ``best.json`` (each written atomically)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        from perpdesk.files import atomic_write

        out_dir.mkdir(parents=True, exist_ok=True)
        paths = {}
        for name, rows in (("trials", self.trials), ("oos", self.oos + self.holdout)):
            path = out_dir / f"{name}.parquet"
            table = pa.Table.from_pylist(rows) if rows else pa.table({})
            atomic_write(path, lambda tmp, t=table: pq.write_table(t, tmp))
            paths[name] = path
        best = {
            "best_params": self.best_params,
            "best_fitness": self.best_fitness,
            "oos_calmar_mean": self.oos_calmar_mean,
            "windows": [asdict(w) for w in self.windows],
            "holdout": {"start_ns": self.holdout_span[0], "end_ns": self.holdout_span[1]},
            "holdout_metrics": self.holdout,
            "settings": self.settings,
        }
        paths["best"] = out_dir / "best.json"
        atomic_write_text(json.dumps(best, indent=2, default=str) + "\n", paths["best"])
        return paths


def optimize(
    evaluator: Evaluator,
    space: Sequence[Param],
    coins: Sequence[str],
    start_ns: int,
    end_ns: int,
    *,
    n_trials: int,
    n_windows: int = 3,
    train_frac: float = 0.7,
    holdout_frac: float = 0.2,
    seed: int = 0,
    batch_size: int = 8,
    pool: Pool | None = None,
    fitness: Fitness | None = None,
    cache_dir: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> OptimizeResult:
    """Search ``space`` with a seeded TPE sampler; see the module docstring."""
    import optuna

    if n_trials < 1:
        raise PerpdeskError(f"trials = {n_trials}: must be >= 1")
    if not coins:
        raise PerpdeskError("no coins given")
    pool = pool or SerialPool()
    fit = fitness or Fitness()
    windows, holdout = walk_forward_windows(start_ns, end_ns, n_windows, train_frac, holdout_frac)
    spans_days = [(w.test_start_ns - w.train_start_ns) / DAY_NS for w in windows]
    key = evaluator.cache_key()
    if cache_dir is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)

    def run(tasks: list[_Task]) -> list[dict[str, float]]:
        results: list[dict[str, float] | None] = [None] * len(tasks)
        todo = []
        for i, t in enumerate(tasks):
            if cache_dir is not None:
                p = cache_dir / f"{_task_hash(key, t)}.json"
                if p.exists():
                    results[i] = json.loads(p.read_text())
                    continue
            todo.append(i)
        fresh = pool.map(_run_task, [tasks[i] for i in todo])
        for i, r in zip(todo, fresh, strict=True):
            results[i] = r
            if cache_dir is not None:
                atomic_write_text(json.dumps(r), cache_dir / f"{_task_hash(key, tasks[i])}.json")
        return [r for r in results if r is not None]

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, n_trials))
    study = optuna.create_study(direction="maximize", sampler=sampler)
    trials: list[dict[str, Any]] = []
    done = 0
    while done < n_trials:
        batch = [study.ask() for _ in range(min(batch_size, n_trials - done))]
        params = [{p.name: p.suggest(t) for p in space} for t in batch]
        tasks = [
            _Task(evaluator, tuple(sorted(pr.items())), c, w.train_start_ns, w.test_start_ns)
            for pr in params
            for w in windows
            for c in coins
        ]
        flat = run(tasks)
        per = len(windows) * len(coins)
        for j, (t, pr) in enumerate(zip(batch, params, strict=True)):
            chunk = flat[j * per : (j + 1) * per]
            grid = [chunk[k * len(coins) : (k + 1) * len(coins)] for k in range(len(windows))]
            value, s_w = fitness_of(grid, spans_days, fit)
            study.tell(t, value)
            trials.append(
                {
                    "number": t.number,
                    **{f"param_{k}": v for k, v in pr.items()},
                    "fitness": value,
                    **{f"train_score_w{k}": s for k, s in enumerate(s_w)},
                }
            )
        done += len(batch)
        if progress is not None:
            progress(done, n_trials)

    best = study.best_trial
    best_params = {p.name: best.params[p.name] for p in space}
    bp = tuple(sorted(best_params.items()))
    oos_tasks = [
        _Task(evaluator, bp, c, w.test_start_ns, w.test_end_ns) for w in windows for c in coins
    ]
    hold_tasks = (
        [_Task(evaluator, bp, c, holdout[0], holdout[1]) for c in coins]
        if holdout[1] > holdout[0]
        else []
    )
    res = run(oos_tasks + hold_tasks)
    oos = [
        {
            "segment": f"test_w{w.index}",
            "coin": c,
            "start_ns": w.test_start_ns,
            "end_ns": w.test_end_ns,
            **m,
        }
        for (w, c), m in zip(
            [(w, c) for w in windows for c in coins], res[: len(oos_tasks)], strict=True
        )
    ]
    hold = [
        {"segment": "holdout", "coin": c, "start_ns": holdout[0], "end_ns": holdout[1], **m}
        for c, m in zip(coins, res[len(oos_tasks) :], strict=True)
    ]
    return OptimizeResult(
        best_params=best_params,
        best_fitness=float(best.value),
        trials=trials,
        oos=oos,
        holdout=hold,
        windows=windows,
        holdout_span=holdout,
        settings={
            "seed": seed,
            "n_trials": n_trials,
            "n_windows": n_windows,
            "train_frac": train_frac,
            "holdout_frac": holdout_frac,
            "batch_size": batch_size,
            "coins": list(coins),
            "pool": pool.name,
            "evaluator": key,
            "fitness": asdict(fit),
        },
    )
