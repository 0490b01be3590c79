"""The gallery of a finished batch in a real browser (Debian's Chromium, headless): real workers
made the images with the stand-in, the page beside manifest.json shows every one of them
(`naturalWidth > 0`), a failed item shows its reason, and a screenshot is kept in test-artifacts/.
Needs Chromium (`needs("browser")`: skipped without it, except where it is required, as in CI)."""
from __future__ import annotations

import html
import json
import re
from pathlib import Path

import pytest

from producer import api
from tests.support.browser import ARTIFACTS, chromium

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.needs("browser")]

# Reports, once the page has loaded, what each image gave the browser (src, naturalWidth).
PROBE = ("<script>window.addEventListener('load',()=>{document.body.setAttribute('data-probe',"
         "JSON.stringify([...document.images].map(i=>[i.getAttribute('src'),i.naturalWidth])))});</script>")


def test_every_image_of_a_finished_batch_loads_and_a_failed_item_shows_its_reason(settings, sim, worker_factory,
                                                                                   tmp_path):
    settings = settings.with_(replicate_base_url=sim.url)
    worker_factory(settings, count=1, sim=sim)
    prompts = [{"prompt": "a red fox in snow", "model": "black-forest-labs/flux-dev"},
               {"prompt": "a lighthouse at dusk", "model": "black-forest-labs/flux-dev",
                "params": {"aspect_ratio": "16:9"}},
               {"prompt": "an owl, nsfw-trigger", "model": "black-forest-labs/flux-dev"},
               {"prompt": "a quiet harbour", "model": "google/imagen-4-ultra"}]
    batch = api.submit(prompts, settings=settings)
    snap = batch.wait(timeout=120)
    assert snap.finished and snap.counts.get("succeeded") == 3 and snap.counts.get("failed") == 1
    manifest_path = Path(batch.write_manifest())
    page = manifest_path.parent / "index.html"
    assert page.is_file()

    probe_page = page.with_name("probe.html")  # the same page, beside it, with the probe appended
    probe_page.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    dom = chromium(tmp_path, probe_page.as_uri(), "--dump-dom").stdout
    found = re.search(r'data-probe="([^"]*)"', dom)
    assert found, dom[-2000:]
    images = json.loads(html.unescape(found.group(1)))
    assert len(images) == 3 and all(width > 0 for _src, width in images), images
    failed = [i for i in json.loads(manifest_path.read_text())["items"] if i["status"] == "failed"][0]
    assert "sensitive" in failed["error"].lower() or "flagged" in failed["error"].lower()
    assert html.escape(failed["error"]) in dom and 'data-status="failed"' in dom

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "gallery.png"
    chromium(tmp_path, page.as_uri(), f"--screenshot={shot}")
    assert shot.is_file() and shot.stat().st_size > 5000
