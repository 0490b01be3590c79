"""The limiter's Lua scripts (package data): one file per operation, after the prelude common.lua."""
