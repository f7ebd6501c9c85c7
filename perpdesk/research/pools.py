"""Task pools: the same ``map`` over a local process pool or a Ray cluster.

A sweep is a list of picklable tasks sent to ``pool.map(fn, tasks)``; results come back in
task order whatever the pool, so a search that feeds them to a seeded sampler gives the
same answer locally and on Ray (ARCHITECTURE, "Scale"). Ray addresses: ``local`` starts
a private Ray instance on this machine, ``auto`` joins the cluster this machine belongs
to, ``ray://host:port`` connects through Ray Client.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Protocol

from perpdesk.errors import PerpdeskError


class Pool(Protocol):
    """Anything that maps a function over tasks and returns results in task order."""

    name: str

    def map(self, fn: Callable[[Any], Any], tasks: Sequence[Any]) -> list[Any]: ...

    def close(self) -> None: ...


class SerialPool:
    """Runs tasks one after another in this process (for debugging and tiny sweeps)."""

    name = "serial"

    def map(self, fn: Callable[[Any], Any], tasks: Sequence[Any]) -> list[Any]:
        return [fn(t) for t in tasks]

    def close(self) -> None:
        pass


class LocalPool:
    """A ``concurrent.futures`` process pool of ``workers`` processes (default: CPU count)."""

    name = "local"

    def __init__(self, workers: int | None = None) -> None:
        self.workers = max(1, workers or os.cpu_count() or 1)
        self._ex: ProcessPoolExecutor | None = None

    def map(self, fn: Callable[[Any], Any], tasks: Sequence[Any]) -> list[Any]:
        if not tasks:
            return []
        if self._ex is None:
            self._ex = ProcessPoolExecutor(max_workers=self.workers)
        return list(self._ex.map(fn, tasks))

    def close(self) -> None:
        if self._ex is not None:
            self._ex.shutdown(cancel_futures=True)
            self._ex = None


class RayPool:
    """Tasks as Ray remote functions. ``address``: ``local``, ``auto`` or ``ray://host:port``."""

    name = "ray"

    def __init__(self, address: str, workers: int | None = None) -> None:
        if not (address in ("local", "auto") or address.startswith("ray://")):
            raise PerpdeskError(f"--ray {address!r}: expected 'local', 'auto' or 'ray://host:port'")
        try:
            import ray
        except ImportError as exc:  # pragma: no cover - ray is a declared dependency
            raise PerpdeskError(f"--ray needs the ray package: {exc}") from None
        self._ray = ray
        self._owns = False
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {
                "include_dashboard": False,
                "log_to_driver": False,
                "configure_logging": False,
            }
            if address == "local":
                kwargs["num_cpus"] = workers or os.cpu_count() or 1
                # a private instance: never join a cluster through RAY_ADDRESS by accident
                os.environ.pop("RAY_ADDRESS", None)
            else:
                kwargs["address"] = address
            try:
                ray.init(**kwargs)
            except Exception as exc:
                raise PerpdeskError(f"--ray {address}: cannot connect: {exc}") from None
            self._owns = True
        self._remote: dict[Callable[[Any], Any], Any] = {}
        self.address = address

    def map(self, fn: Callable[[Any], Any], tasks: Sequence[Any]) -> list[Any]:
        if not tasks:
            return []
        remote = self._remote.get(fn)
        if remote is None:
            remote = self._remote[fn] = self._ray.remote(fn)
        return list(self._ray.get([remote.remote(t) for t in tasks]))

    def close(self) -> None:
        if self._owns and self._ray.is_initialized():
            self._ray.shutdown()
            self._owns = False


def make_pool(ray: str | None = None, workers: int | None = None) -> Pool:
    """``ray=None`` → :class:`LocalPool` (``workers=1`` → :class:`SerialPool`), else
    :class:`RayPool` at that address."""
    if ray:
        return RayPool(ray, workers)
    if workers == 1:
        return SerialPool()
    return LocalPool(workers)
