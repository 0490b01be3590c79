"""Lua scripts of the scheduler (one per operation, sent after sched_common.lua)."""
