"""Benchmarks as data: AuditoryBench (ingest, validation, rejects) and the planted-signal synthetic benchmark."""
