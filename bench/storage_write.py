"""The write path's cost per image: a local folder against an S3 store (moto's server, a real
process on this machine), beside the fleet's rate (600 creations a minute = 10 images a second).

Each image is written as a worker writes an output: `write_once` (a conditional create) of a
real PNG of about the size the stand-in makes at full scale, from several threads at once.

    .venv/bin/python -m bench.storage_write --images 300 --threads 8 --size-kb 1500
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from shared.storage import open_store, write_once

FLEET_RATE = 600 / 60  # images per second at Replicate's default creation limit


def measure(store, images: int, threads: int, payload: bytes) -> dict[str, float]:
    prefix = uuid.uuid4().hex[:8]

    def one(index: int) -> float:
        began = time.perf_counter()
        # each image differs (as real outputs do), so nothing is a repeated write
        write_once(
            store, f"{prefix}/{index:05d}.png", payload + index.to_bytes(4, "big"), content_type="image/png"
        )
        return time.perf_counter() - began

    began = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        latencies = sorted(pool.map(one, range(images)))
    wall = time.perf_counter() - began
    return {
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
        "images_per_s": images / wall,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--size-kb", type=int, default=1500)
    args = parser.parse_args(argv)
    payload = b"\x89PNG\r\n\x1a\n" + os.urandom(args.size_kb * 1024)

    from bench.moto import start_moto

    with tempfile.TemporaryDirectory() as tmp:
        server = start_moto(Path(tmp) / "moto.log")
        try:
            server.client().create_bucket(Bucket="bench-outputs")
            stores = {
                "local": open_store(Path(tmp) / "out"),
                "s3 (moto)": open_store("s3://bench-outputs/out", environ=server.environ()),
            }
            print(
                f"{args.images} images of {args.size_kb} KB, {args.threads} threads; the fleet makes "
                f"{FLEET_RATE:.0f} images/s at 600 creations/min"
            )
            print(f"{'store':<10} {'p50 ms':>8} {'p99 ms':>8} {'images/s':>9} {'x fleet rate':>13}")
            for name, store in stores.items():
                result = measure(store, args.images, args.threads, payload)
                print(
                    f"{name:<10} {result['p50_ms']:>8.1f} {result['p99_ms']:>8.1f} "
                    f"{result['images_per_s']:>9.1f} {result['images_per_s'] / FLEET_RATE:>13.1f}"
                )
        finally:
            server.stop()


if __name__ == "__main__":
    main()
