"""The budget's Lua scripts (package data), after the prelude budget_common.lua."""
