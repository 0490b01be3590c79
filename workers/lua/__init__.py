"""Lua scripts of workers.attempts, workers.claims and workers.completions (package data)."""
