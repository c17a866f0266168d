"""Prefect tasks, one per stage step; importing them routes `ith_core`'s logs into the run logs."""

from tasks.runtime import route_core_logs

# Every process that runs these tasks imports this package first (flows, workers, Ray workers).
route_core_logs()
