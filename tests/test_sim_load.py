"""The stand-in under load: 500 concurrent connections plus several client processes; the ledger must add up."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap

import aiohttp

TOKEN = "r8_sim_load"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

# One client process: the official client from 16 threads, each creating and then reading predictions.
CLIENT_PROCESS = textwrap.dedent("""
    import json, sys
    from concurrent.futures import ThreadPoolExecutor
    import replicate
    url, tag, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    client = replicate.Client(api_token="r8_sim_load", base_url=url)
    def one(i):
        p = client.models.predictions.create(model="google/nano-banana", input={"prompt": f"{tag}-{i}"})
        client.predictions.get(p.id)
        return p.id
    with ThreadPoolExecutor(16) as pool:
        ids = list(pool.map(one, range(count)))
    print(json.dumps({"ids": ids, "reads": count}))
""")


async def _burst(url: str, n: int, *, wait: bool) -> list[tuple[int, dict]]:
    """n creates at once, each on its own connection; with `wait` every connection stays open."""
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    headers = dict(AUTH, **({"Prefer": "wait=20"} if wait else {}))
    start = asyncio.Event()

    async def one(session: aiohttp.ClientSession, i: int) -> tuple[int, dict]:
        await start.wait()
        async with session.post(
            f"{url}/v1/models/black-forest-labs/flux-dev/predictions",
            headers=headers,
            json={"input": {"prompt": f"burst-{i}"}},
        ) as response:
            return response.status, await response.json(content_type=None)

    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:
        tasks = [asyncio.ensure_future(one(session, i)) for i in range(n)]
        await asyncio.sleep(0.05)
        start.set()
        return await asyncio.gather(*tasks)


def test_500_concurrent_connections_and_3_client_processes_add_up(sim_factory):
    sim = sim_factory(latency_scale=0.2, create_limit=100_000, read_limit=100_000)
    per_process = 40
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", CLIENT_PROCESS, sim.url, f"proc{k}", str(per_process)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in range(3)
    ]
    results = asyncio.run(_burst(sim.url, 500, wait=True))
    outputs = []
    for process in processes:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err[-2000:]
        outputs.append(json.loads(out.strip().splitlines()[-1]))

    assert [status for status, _ in results] == [201] * 500
    assert all(body["status"] == "succeeded" for _, body in results)  # Prefer: wait held every connection
    burst_ids = {body["id"] for _, body in results}
    process_ids = {pid for out in outputs for pid in out["ids"]}
    assert len(burst_ids) == 500 and len(process_ids) == 3 * per_process and not burst_ids & process_ids

    ledger = sim.ledger(detail=False)
    assert ledger["creations"] == ledger["create_calls"] == 500 + 3 * per_process
    assert ledger["creations_by_model"] == {
        "black-forest-labs/flux-dev": 500,
        "google/nano-banana": 3 * per_process,
    }
    assert ledger["reads"] == sum(out["reads"] for out in outputs)
    assert ledger["duplicate_inputs"] == 0
    assert ledger["rejected_429"] == {"create": 0, "read": 0, "in_flight": 0, "storm": 0}
    assert 1 <= ledger["peak_in_flight"] <= ledger["creations"]
    assert ledger["max_creations_in_window"] == ledger["creations"]  # all within one 60 s window


def test_the_create_limit_holds_exactly_under_a_concurrent_burst(sim_factory):
    sim = sim_factory(create_limit=100, window=60)
    results = asyncio.run(_burst(sim.url, 300, wait=False))
    statuses = [status for status, _ in results]
    assert statuses.count(201) == 100 and statuses.count(429) == 200
    ledger = sim.ledger(detail=False)
    assert ledger["creations"] == 100 and ledger["max_creations_in_window"] == 100
    assert ledger["rejected_429"]["create"] == 200


def test_the_in_flight_cap_holds_exactly_under_a_concurrent_burst(sim_factory):
    # ~30 s predictions: none can finish during the burst, so exactly 25 are admitted
    sim = sim_factory(
        max_in_flight=25, latency_scale=1.0, latency_overrides={"black-forest-labs/flux-dev": 30}
    )
    results = asyncio.run(_burst(sim.url, 200, wait=False))
    statuses = [status for status, _ in results]
    assert statuses.count(201) == 25 and statuses.count(429) == 175
    ledger = sim.ledger(detail=False)
    assert ledger["peak_in_flight"] == 25 and ledger["rejected_429"]["in_flight"] == 175
