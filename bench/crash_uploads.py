"""What ``kill -9`` of ``photodrop serve`` in the middle of uploads leaves behind, and what it loses.

Each round starts ``photodrop serve`` on one data directory (the same for every round, as after real
restarts), sends six concurrent ~3 MB JPEG uploads in a loop, and kills the server with SIGKILL at a
random moment once photos are going through. After the last round one more server starts on the data
dir and runs for ``--settle`` seconds; then the script counts photos that got a 201 but have no row or
no staged bytes (lost), staged files no row refers to, and spooled ``*.part`` files (orphans).

    uv run python bench/crash_uploads.py --rounds 10

The final server runs with ``PHOTODROP_ORPHAN_GRACE`` = ``--grace`` (a few seconds), so its sweep may
already remove the staged orphans the rounds made; a version without the sweep ignores the setting.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from _harness import free_port
from _photos import make_photos

UPLOADERS = 6
STAGED_NAME = re.compile(r"proj_\w{26}/sess_\w{26}/img_\w{26}\.\w+")


def start(data_dir: Path, **env: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "photodrop", "serve", "--port", str(port), "--no-worker"],
        env={**os.environ, "PHOTODROP_DATA_DIR": str(data_dir), "PHOTODROP_LOG_LEVEL": "WARNING", **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("photodrop serve did not start")


async def round_of_uploads(process: subprocess.Popen[bytes], url: str, key: str, photos: list[bytes]) -> list[str]:
    """Six uploaders in a loop until the server dies, killed at a random moment once photos go through."""
    accepted: list[str] = []
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        created = await http.post(
            "/v1/sessions", json={"delivery_mode": "poll", "max_images": 50}, headers={"Authorization": f"Bearer {key}"}
        )
        session = created.json()["id"]
        going = asyncio.Event()

        async def keep_uploading(photo: bytes) -> None:
            while True:
                try:
                    response = await http.post(
                        f"/api/v1/upload/{session}/images", files={"file": ("p.jpg", photo, "image/jpeg")}
                    )
                except httpx.TransportError:
                    return
                if response.status_code != 201:
                    return
                accepted.append(response.json()["id"])
                going.set()

        tasks = [asyncio.create_task(keep_uploading(photo)) for photo in photos]
        await going.wait()
        await asyncio.sleep(random.uniform(0.0, 1.5))  # an arbitrary point of the stream
        process.send_signal(signal.SIGKILL)
        await asyncio.gather(*tasks)
    return accepted


def count(data_dir: Path, accepted: list[str]) -> dict[str, int]:
    with sqlite3.connect(f"file:{data_dir / 'photodrop.db'}?mode=ro", uri=True) as db:
        rows = dict(db.execute("SELECT id, storage_key FROM image").fetchall())
    staging = data_dir / "staging"
    staged = (
        {p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file()} if staging.exists() else set()
    )
    parts = [p for p in (data_dir / "spool").rglob("*.part") if p.is_file()]
    return {
        "accepted": len(accepted),
        "lost": sum(1 for image_id in accepted if image_id not in rows or rows[image_id] not in staged),
        "staged_orphans": len({key for key in staged if STAGED_NAME.fullmatch(key)} - set(rows.values())),
        "spool_parts": len(parts),
        "spool_mb": sum(p.stat().st_size for p in parts) // (1024 * 1024),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--grace", type=float, default=3.0, help="PHOTODROP_ORPHAN_GRACE of the final server")
    parser.add_argument("--settle", type=float, default=8.0, help="seconds the final server runs before counting")
    args = parser.parse_args()
    photos = make_photos((3000, 2000), tuple(range(20, 20 + UPLOADERS)), 90)
    accepted: list[str] = []
    with tempfile.TemporaryDirectory(prefix="photodrop-crash-") as temporary:
        data_dir = Path(temporary) / "data"
        made = subprocess.run(
            [sys.executable, "-m", "photodrop", "keys", "create"],
            env={**os.environ, "PHOTODROP_DATA_DIR": str(data_dir)},
            capture_output=True,
            text=True,
            check=True,
        )
        key = made.stdout.strip().splitlines()[-1]
        for _ in range(args.rounds):
            process, url = start(data_dir)
            accepted += asyncio.run(round_of_uploads(process, url, key, photos))
            process.wait()
        after_rounds = count(data_dir, accepted)
        process, _ = start(data_dir, PHOTODROP_ORPHAN_GRACE=str(args.grace))
        time.sleep(args.settle)  # the server's own sweep runs on its schedule; nothing to wait on
        after_restart = count(data_dir, accepted)
        process.terminate()
        process.wait()
    print(f"rounds: {args.rounds}, photos with a 201: {after_rounds['accepted']}")  # noqa: T201
    for name, figures in (("after the kills", after_rounds), ("after a restart", after_restart)):
        print(  # noqa: T201
            f"{name:>16}: lost {figures['lost']}, staged orphans {figures['staged_orphans']},"
            f" spool parts {figures['spool_parts']} ({figures['spool_mb']} MB)"
        )


if __name__ == "__main__":
    main()
