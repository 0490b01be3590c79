"""Money as integer micro-dollars (1 USD = 1 000 000), never floats: limits, reservations and
spend add up exactly, so "reserved + spent never passes a limit" is a comparison of integers."""

from __future__ import annotations

from decimal import ROUND_CEILING, Decimal, InvalidOperation

MICRO = 1_000_000
MAX_USD = Decimal(10_000_000)  # a limit above ten million dollars is a typo


def parse_usd(text: str | float | int | Decimal) -> int:
    """'0.50', '$20', 5 -> micro-dollars. ValueError for a negative, non-finite or absurd amount,
    or one finer than a micro-dollar."""
    raw = text.strip().lstrip("$").strip() if isinstance(text, str) else text
    if isinstance(raw, bool):
        raise ValueError(f"not an amount in USD: {text!r}")
    try:
        value = Decimal(str(raw))
    except InvalidOperation:
        raise ValueError(f"not an amount in USD: {text!r}") from None
    if not value.is_finite() or value < 0:
        raise ValueError(f"an amount in USD must be a finite number >= 0, got {text!r}")
    if value > MAX_USD:
        raise ValueError(f"{text!r} USD is more than {MAX_USD} USD")
    micro = value * MICRO
    if micro != micro.to_integral_value():
        raise ValueError(f"{text!r} USD is finer than a micro-dollar")
    return int(micro)


def price_micro(usd: float) -> int:
    """A registry price (a float read from TOML or JSON) in micro-dollars, rounded up: a
    reservation is never smaller than the price. Its decimal text is used, so 0.025 -> 25000."""
    value = Decimal(repr(float(usd)))
    if not value.is_finite() or value < 0:
        raise ValueError(f"bad price {usd!r}")
    return int((value * MICRO).to_integral_value(rounding=ROUND_CEILING))


def usd(micro: int) -> str:
    """12_500 -> '0.0125', 500_000 -> '0.50', 20_000_000 -> '20.00': at least two decimals, and
    every further one the amount has."""
    sign = "-" if micro < 0 else ""
    whole, frac = divmod(abs(int(micro)), MICRO)
    decimals = f"{frac:06d}".rstrip("0").ljust(2, "0")
    return f"{sign}{whole:,}.{decimals}"


def usd_number(micro: int | None) -> float | None:
    """For JSON output only (never for arithmetic): micro-dollars as a USD number."""
    return None if micro is None else float(Decimal(int(micro)) / MICRO)
