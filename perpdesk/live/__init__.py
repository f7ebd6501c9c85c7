"""The 24/7 runtime: tick collector, runner (cycle scheduler with timeouts), watchdog."""
