"""Watchdog: keeps a runner process alive.

:class:`Watchdog` starts the runner command as a child process and restarts it when it
exits (any exit code) or when it hangs — its JSON state snapshot (written atomically at the
end of every cycle, :mod:`perpdesk.store.snapshot`) has not been rewritten for ``stale_s``
seconds, in which case the child (and only it, by its pid) is killed with SIGKILL first.
Restarts wait ``restart_delay_s`` doubled after each quick failure (a child that lived less
than ``healthy_s``), capped at ``max_delay_s``; a child that lived longer resets the delay.
The runner is restart-safe by design (:mod:`perpdesk.live.runner`: it reconciles with the
venue before trading), so a restart after SIGKILL is always allowed.

The same job can be left to systemd: ``deploy/perpdesk-runner.service`` (``Restart=always``,
``WatchdogSec`` is not used because the runner does not speak sd_notify).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Watchdog"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Watchdog:
    """Supervise ``cmd`` (see the module docstring). Times in seconds; ``max_restarts``
    None = forever. ``log_line`` receives one line per start/exit/kill."""

    cmd: Sequence[str]
    snapshot_path: Path | None = None
    stale_s: float = 0.0
    restart_delay_s: float = 5.0
    max_delay_s: float = 300.0
    healthy_s: float = 60.0
    max_restarts: int | None = None
    poll_s: float = 0.5
    log_line: Callable[[str], None] = log.info
    starts: int = 0
    exits: list[int] = field(default_factory=list)
    _stop: bool = False

    def _stale(self, started: float) -> bool:
        if self.snapshot_path is None or self.stale_s <= 0:
            return False
        now = time.time()
        if now - started < self.stale_s:
            return False
        try:
            mtime = Path(self.snapshot_path).stat().st_mtime
        except FileNotFoundError:
            return True
        return now - max(mtime, started) > self.stale_s

    def stop(self, *_: object) -> None:
        """Ask the loop to end after terminating the child (signal handler)."""
        self._stop = True

    def run(self) -> int:
        """Supervise until ``max_restarts`` restarts were made (or :meth:`stop`); returns
        the number of restarts."""
        delay = self.restart_delay_s
        while not self._stop:
            started = time.time()
            proc = subprocess.Popen(list(self.cmd))
            self.starts += 1
            self.log_line(f"watchdog: started pid {proc.pid}: {' '.join(self.cmd)}")
            while proc.poll() is None and not self._stop:
                if self._stale(started):
                    self.log_line(
                        f"watchdog: snapshot {self.snapshot_path} older than {self.stale_s} s; "
                        f"killing pid {proc.pid}"
                    )
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait()
                    break
                time.sleep(self.poll_s)
            if self._stop and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait()
            code = proc.returncode
            self.exits.append(code)
            lived = time.time() - started
            self.log_line(f"watchdog: pid {proc.pid} exited with {code} after {lived:.1f} s")
            if self._stop:
                break
            restarts = self.starts - 1
            if self.max_restarts is not None and restarts >= self.max_restarts:
                break
            delay = self.restart_delay_s if lived >= self.healthy_s else delay
            time.sleep(delay)
            delay = min(self.max_delay_s, delay * 2)
        return self.starts - 1
