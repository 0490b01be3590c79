"""`index.html` beside a batch's `manifest.json`: a contact sheet of the batch.

One self-contained page (inline CSS, no script, nothing fetched from elsewhere): a thumbnail per
image, a player per video, and per item its prompt, the model that produced it, status, every
attempt with its error, and the estimated cost (`cost_usd`); failed and canceled items show their reason.
Links are relative to the page (`0003_fox.png`, `../animals/fox.png`), so the same file works
opened from a folder `producer fetch` filled and served from a bucket.
"""

from __future__ import annotations

import html
import posixpath
from collections.abc import Callable, Mapping
from typing import Any

from shared.common import format_usd
from shared.storage.sniff import BY_EXTENSION

STATUS_COLOURS = {
    "succeeded": "#2e7d32",
    "substituted": "#8d6e00",
    "failed": "#c62828",
    "canceled": "#616161",
    "running": "#1565c0",
    "pending": "#1565c0",
}

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5rem;background:#fafafa;color:#212121}
h1{font-size:1.3rem;margin:0 0 .3rem}.summary{color:#555;margin-bottom:1rem}
.sheet{display:grid;grid-template-columns:repeat(auto-fill,minmax(240px,1fr));gap:12px}
.item{background:#fff;border:1px solid #ddd;border-radius:6px;padding:8px;overflow:hidden}
.item img,.item video{width:100%;height:200px;object-fit:contain;background:#eee;display:block}
.none{height:200px;display:flex;align-items:center;justify-content:center;background:#f3f3f3;color:#777;
text-align:center;padding:6px}
.status{color:#fff;border-radius:3px;padding:0 5px;font-size:12px}.prompt{margin:.4rem 0;word-break:break-word}
.meta{color:#555;font-size:12px}.reason{color:#c62828;font-size:12px;word-break:break-word}
details{font-size:12px;color:#555}ol{padding-left:1.2rem;margin:.3rem 0}
"""


def render_gallery(manifest: Mapping[str, Any], *, keys_of: Callable[[Mapping[str, Any]], list[str]]) -> str:
    """The page for a manifest ({"batch": ..., "items": [...]}). `keys_of(item)` gives an item's
    output keys relative to the output root; the page itself sits at `<batch id>/index.html`."""
    batch = manifest.get("batch") or {}
    batch_id = str(batch.get("id") or "")
    items = list(manifest.get("items") or [])
    counts: dict[str, int] = {}
    for item in items:
        counts[str(item.get("status"))] = counts.get(str(item.get("status")), 0) + 1
    total_cost = sum(float(item.get("cost_usd") or 0) for item in items)
    summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    if total_cost:
        summary += f"; estimated cost {format_usd(total_cost)}"
    cards = "\n".join(_card(item, batch_id, keys_of(item)) for item in items)
    title = html.escape(f"batch {batch_id}")
    return (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f'<meta name="viewport" content="width=device-width,initial-scale=1"><style>{_STYLE}</style></head>\n'
        f'<body><h1>{title}</h1><div class="summary">{len(items)} items: {html.escape(summary)}'
        f' &middot; <a href="manifest.json">manifest.json</a></div>\n'
        f'<div class="sheet">\n{cards}\n</div></body></html>\n'
    )


def _card(item: Mapping[str, Any], batch_id: str, keys: list[str]) -> str:
    status = str(item.get("status") or "?")
    colour = STATUS_COLOURS.get(status, "#424242")
    media = "".join(_media(posixpath.relpath(key, batch_id or "."), item) for key in keys)
    if not media:
        media = f'<div class="none">{html.escape(status)}</div>'
    model = item.get("model") or item.get("requested_model") or ""
    meta = [f"#{item.get('index')}"]
    if str(item.get("id") or "") not in ("", str(item.get("index"))):
        meta.append(html.escape(str(item.get("id"))))
    meta.append(html.escape(str(model)))
    if item.get("cost_usd"):
        meta.append(format_usd(float(item["cost_usd"])))
    reason = ""
    if status != "succeeded" and item.get("error"):
        reason = f'<div class="reason">{html.escape(str(item.get("error")))}</div>'
    return (
        f'<div class="item" data-index="{item.get("index")}" data-status="{html.escape(status)}">{media}'
        f'<div><span class="status" style="background:{colour}">{html.escape(status)}</span> '
        f'<span class="meta">{" &middot; ".join(meta)}</span></div>'
        f'<div class="prompt">{html.escape(str(item.get("prompt") or ""))}</div>{reason}'
        f"{_attempts(item.get('attempts') or [])}</div>"
    )


def _media(href: str, item: Mapping[str, Any]) -> str:
    link = html.escape(href, quote=True)
    alt = html.escape(str(item.get("prompt") or "")[:120], quote=True)
    kind = BY_EXTENSION.get(posixpath.splitext(href)[1].lstrip(".").lower())
    if kind is not None and kind.video:
        return f'<video controls preload="metadata" src="{link}"></video>'
    return f'<a href="{link}"><img loading="lazy" src="{link}" alt="{alt}"></a>'


def _attempts(attempts: list[Mapping[str, Any]]) -> str:
    if not attempts:
        return ""
    rows = []
    for attempt in attempts:
        seconds = attempt.get("seconds")
        took = f", {seconds:.1f} s" if isinstance(seconds, (int, float)) else ""
        error = f": {attempt.get('error')}" if attempt.get("error") else ""
        rows.append(
            f"<li>{html.escape(str(attempt.get('model') or '?'))} "
            f"{html.escape(str(attempt.get('status') or '?'))}{html.escape(took)}{html.escape(str(error))}</li>"
        )
    return f"<details><summary>{len(attempts)} attempt(s)</summary><ol>{''.join(rows)}</ol></details>"
