"""Spending limits: a batch's --max-cost and the fleet's daily budget (budget.py, README.md)."""

from shared.budget.budget import (
    TOKEN_INSERT,
    BatchSpend,
    Budget,
    BudgetStatus,
    Reservation,
    budget_keys,
    reason,
)
from shared.budget.money import parse_usd, price_micro, usd

__all__ = [
    "TOKEN_INSERT",
    "BatchSpend",
    "Budget",
    "BudgetStatus",
    "Reservation",
    "budget_keys",
    "parse_usd",
    "price_micro",
    "reason",
    "usd",
]
