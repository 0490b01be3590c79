"""Lua scripts of the `shared` modules (package data): the ledger's, one file per operation."""
