"""Lua scripts loaded by workers.claims (data files, kept beside the code that loads them)."""
