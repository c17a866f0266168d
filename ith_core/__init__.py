"""Imagine to Hear: model and data logic (no Prefect imports)."""
