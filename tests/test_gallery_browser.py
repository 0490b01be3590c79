"""The gallery of a finished batch in a real browser (Debian's Chromium, headless): real workers
made the images with the stand-in and wrote them to a bucket (moto's S3 server); the page beside
manifest.json shows every one of them (`naturalWidth > 0`) served from the bucket and opened from
the folder `producer fetch` filled, a failed item shows its reason, and a screenshot is kept in
test-artifacts/. Needs Chromium (`needs("browser")`: skipped without it, except where it is
required, as in CI)."""

from __future__ import annotations

import html
import json
import re

import pytest

from producer import api
from tests.support.browser import ARTIFACTS, chromium

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.needs("browser")]

# Reports, once the page has loaded, what each image gave the browser (src, naturalWidth).
PROBE = (
    "<script>window.addEventListener('load',()=>{document.body.setAttribute('data-probe',"
    "JSON.stringify([...document.images].map(i=>[i.getAttribute('src'),i.naturalWidth])))});</script>"
)


def test_every_image_of_a_finished_batch_loads_from_the_bucket_and_a_fetched_folder(
    settings, sim, worker_factory, s3_bucket, tmp_path, monkeypatch
):
    for name, value in s3_bucket.environ().items():
        monkeypatch.setenv(name, value)
    url = f"{s3_bucket.url}/runs"
    settings = settings.with_(replicate_base_url=sim.url, output_dir=url)
    worker_factory(settings, count=1, sim=sim, **s3_bucket.environ())
    prompts = [
        {"prompt": "a red fox in snow", "model": "black-forest-labs/flux-dev"},
        {
            "prompt": "a lighthouse at dusk",
            "model": "black-forest-labs/flux-dev",
            "params": {"aspect_ratio": "16:9"},
        },
        {"prompt": "an owl, nsfw-trigger", "model": "black-forest-labs/flux-dev"},
        {"prompt": "a quiet harbour", "model": "google/imagen-4-ultra"},
    ]
    batch = api.submit(prompts, settings=settings)
    snap = batch.wait(timeout=120)
    assert snap.finished and snap.counts.get("succeeded") == 3 and snap.counts.get("failed") == 1
    failed = [r for r in batch.results() if r["status"] == "failed"][0]
    assert "sensitive" in failed["error"].lower()

    # 1. served from the bucket (moto speaks S3 over plain HTTP: the objects are web pages too),
    # readable by a browser the way a gallery bucket is published: a public-read policy
    page_key = f"runs/{batch.id}/index.html"
    client = s3_bucket.server.client()
    client.put_bucket_policy(
        Bucket=s3_bucket.name,
        Policy=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": "*",
                        "Action": "s3:GetObject",
                        "Resource": f"arn:aws:s3:::{s3_bucket.name}/*",
                    }
                ],
            }
        ),
    )
    page = client.get_object(Bucket=s3_bucket.name, Key=page_key)["Body"].read().decode()
    client.put_object(
        Bucket=s3_bucket.name,
        Key=f"runs/{batch.id}/probe.html",
        ContentType="text/html",
        Body=page.replace("</body>", PROBE + "</body>").encode(),
    )
    served = f"{s3_bucket.server.url}/{s3_bucket.name}/runs/{batch.id}/probe.html"
    assert_gallery(chromium(tmp_path, served, "--dump-dom").stdout, failed["error"])

    # 2. opened from the folder `producer fetch` filled
    home = tmp_path / "home"
    assert batch.fetch(home).complete
    fetched = home / batch.id / "index.html"
    probe_page = fetched.with_name("probe.html")  # the same page, beside it, with the probe appended
    probe_page.write_text(fetched.read_text().replace("</body>", PROBE + "</body>"))
    assert_gallery(chromium(tmp_path, probe_page.as_uri(), "--dump-dom").stdout, failed["error"])

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "gallery.png"
    chromium(tmp_path, fetched.as_uri(), f"--screenshot={shot}")
    assert shot.is_file() and shot.stat().st_size > 5000


def assert_gallery(dom: str, failed_reason: str) -> None:
    """Every image of the page loaded (naturalWidth > 0) and the failed item shows its reason."""
    found = re.search(r'data-probe="([^"]*)"', dom)
    assert found, dom[-2000:]
    images = json.loads(html.unescape(found.group(1)))
    assert len(images) == 3 and all(width > 0 for _src, width in images), images
    assert html.escape(failed_reason) in dom and 'data-status="failed"' in dom
