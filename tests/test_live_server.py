"""End to end against a real ``photodrop serve`` process and the real CLI."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import image_bytes
from tests.live import LiveServer, photodrop_cli

SEED_CURL = """curl -X POST https://api.apertur.ca/v1/sessions \\
  -H "Authorization: Bearer aptr_live_xxxx" \\
  -H "Content-Type: application/json" \\
  -d '{
    "delivery_mode": "webhook",
    "webhook_url": "https://your-app.com/webhook",
    "expires_in": 7200,
    "max_images": 3,
    "allowed_mime_types": ["image/jpeg", "image/png"],
    "password": "secret123",
    "tags": { "claim_id": "CLM-4521" }
  }'"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = LiveServer(tmp_path_factory.mktemp("live") / "data").start()
    yield live
    live.stop()


def test_first_start_creates_a_project_and_prints_a_key_once(tmp_path: Path) -> None:
    first = LiveServer(tmp_path / "data").start()
    first.stop()
    printed = "".join(first.lines)
    key = next(line.strip() for line in first.lines if line.strip().startswith("aptr_live_"))
    assert len(key) == len("aptr_live_") + 32
    for url in (f"{first.url}/v1", f"{first.url}/graphql", f"{first.url}/dashboard"):
        assert url in printed
    again = LiveServer(tmp_path / "data").start()
    with httpx.Client(base_url=again.url) as http:
        assert http.get("/v1/sessions", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    again.stop()
    assert not any("aptr_live_" in line for line in again.lines)


def test_seed_curl_works_verbatim_with_a_key_from_the_cli(server: LiveServer) -> None:
    created = photodrop_cli(server.data_dir, "keys", "create", "--project", "claims")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]
    assert key.startswith("aptr_live_")
    command = SEED_CURL.replace("https://api.apertur.ca", server.url).replace("aptr_live_xxxx", key)
    result = subprocess.run(["bash", "-c", command + " -s -w '\\n%{http_code}'"], capture_output=True, text=True)
    body, status = result.stdout.rsplit("\n", 1)
    assert status == "201", body
    session = httpx.Response(201, content=body).json()
    assert session["status"] == "pending" and session["password_protected"] is True
    assert session["url"] == f"{server.url}/s/{session['id']}"

    photo = image_bytes("JPEG", (800, 600))
    with httpx.Client(base_url=server.url, timeout=30) as http:
        refused = http.post(f"/api/v1/upload/{session['id']}/images", files={"file": ("a.jpg", photo, "image/jpeg")})
        assert refused.status_code == 401
        accepted = http.post(
            f"/api/v1/upload/{session['id']}/images",
            files={"file": ("a.jpg", photo, "image/jpeg")},
            headers={"x-session-password": "secret123"},
        )
        assert accepted.status_code == 201
        polled = http.get(f"/v1/sessions/{session['id']}/poll?since=1", headers={"Authorization": f"Bearer {key}"})
        assert polled.json()["status"] == "active" and polled.json()["image_count"] == 1
        page = http.get(f"/s/{session['id']}")
        assert page.status_code == 200 and "password" in page.text


def test_keys_list_and_revoke(server: LiveServer) -> None:
    key = photodrop_cli(server.data_dir, "keys", "create", "--env", "test").stdout.strip().splitlines()[-1]
    assert key.startswith("aptr_test_")
    listing = photodrop_cli(server.data_dir, "keys", "list")
    assert listing.returncode == 0
    row = next(line for line in listing.stdout.splitlines() if key[-4:] in line and "test" in line)
    assert key not in listing.stdout
    key_id = row.split()[0]
    with httpx.Client(base_url=server.url) as http:
        auth = {"Authorization": f"Bearer {key}"}
        assert http.get("/v1/sessions", headers=auth).status_code == 200
        revoked = photodrop_cli(server.data_dir, "keys", "revoke", key_id)
        assert revoked.returncode == 0 and key_id in revoked.stdout
        assert http.get("/v1/sessions", headers=auth).status_code == 401
    assert "revoked" in photodrop_cli(server.data_dir, "keys", "list").stdout
    missing = photodrop_cli(server.data_dir, "keys", "revoke", "key_nope")
    assert missing.returncode == 1 and "no API key" in missing.stderr


def test_racing_uploads_over_real_sockets_fill_exactly_the_places(server: LiveServer) -> None:
    key = photodrop_cli(server.data_dir, "keys", "create").stdout.strip().splitlines()[-1]
    auth = {"Authorization": f"Bearer {key}"}

    async def race() -> list[int]:
        statuses: list[int] = []
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
            session = (
                await http.post("/v1/sessions", json={"delivery_mode": "poll", "max_images": 5}, headers=auth)
            ).json()

            async def one() -> None:
                files = {"file": ("p.jpg", image_bytes(), "image/jpeg")}
                statuses.append((await http.post(f"/api/v1/upload/{session['id']}/images", files=files)).status_code)

            async with anyio.create_task_group() as group:
                for _ in range(50):
                    group.start_soon(one)
            final = (await http.get(f"/v1/sessions/{session['id']}", headers=auth)).json()
        assert final["image_count"] == 5 and final["status"] == "completed"
        return statuses

    statuses = anyio.run(race)
    assert statuses.count(201) == 5 and statuses.count(422) == 45


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_serve_with_workers_runs_api_processes_whose_metrics_add_up(tmp_path: Path) -> None:
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    (metrics_dir / "counter_1.db").write_bytes(b"left over from an earlier run")
    server = LiveServer(tmp_path / "data", env={"PHOTODROP_METRICS_DIR": str(metrics_dir)}, args=("--workers", "2"))
    server.start()
    try:
        with server.printed:
            both = server.printed.wait_for(lambda: _count(server, "Application startup complete") == 2, 60)
        assert both, "".join(server.lines)
        assert _count(server, "delivery: left to `photodrop worker`") == 2  # several API processes never deliver
        for _ in range(20):
            assert httpx.get(f"{server.url}/readyz").status_code == 200  # a new connection each time
        for _ in range(3):  # whichever process answers the scrape, it reports every process's counts
            samples = _samples(httpx.get(f"{server.url}/metrics").text)
            ready = (("method", "GET"), ("route", "/readyz"), ("status", "200"))
            assert samples[("photodrop_http_requests_total", ready)] == 20
        processes = {path.stem.rsplit("_", 1)[1] for path in metrics_dir.glob("counter_*.db")}
        assert len(processes) == 2 and "1" not in processes
        logged = [json.loads(line) for line in server.lines if line.startswith("{")]
        assert {"ts", "level", "logger", "message"} <= set(logged[0])
    finally:
        server.stop()


def _count(server: LiveServer, text: str) -> int:
    return sum(text in line for line in server.lines)


def test_serve_alone_delivers_in_its_own_process(server: LiveServer) -> None:
    assert _count(server, "delivery: in this process") == 1
