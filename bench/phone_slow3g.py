"""The phone page on slow 3G with one cut: how close to the link's own speed five 3 MB photos arrive.

Debian's Chromium (Playwright, headless, a 390x844 phone) opens a session's page through a
counting TCP proxy in front of `photodrop serve`, under CDP network emulation of slow 3G (400 kbit/s
up, 400 ms latency). It picks five ~3 MB photos; when the second is 40 % sent the network goes
offline for 20 s, then comes back. The clock runs from the pick until the page shows all five sent.

The ideal is the photos' bytes at the link rate, plus the cut (no upload can move while offline).
Printed: the time, the ideal, their ratio (goal <= 1.1), and the bytes the browser sent up (request
lines, headers and bodies, counted by the proxy) against the photos' bytes. A restart-from-zero
client pays the cut photo's sent part again; a resuming one pays a round trip per piece.

    uv run python bench/phone_slow3g.py          # about six minutes; `make bench-phone`
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx
from _harness import photodrop
from _photos import make_photos
from playwright.sync_api import sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.browser import ARGS, CHROMIUM  # noqa: E402
from tests.netproxy import proxy_to  # noqa: E402

UP_BYTES_PER_SECOND = 400_000 // 8
LATENCY_MS = 400
CUT_SECONDS = 20.0
PHOTOS = 5
GOAL = 1.1


def _conditions(offline: bool) -> dict[str, object]:
    return {
        "offline": offline,
        "latency": LATENCY_MS,
        "uploadThroughput": UP_BYTES_PER_SECOND,
        "downloadThroughput": UP_BYTES_PER_SECOND,
    }


def trial(url: str, key: str, photos: list[bytes], chunk_kib: int | None) -> tuple[float, int]:
    """One run of the page; the seconds from pick to all sent, and the bytes the browser sent up meanwhile."""
    with httpx.Client(base_url=url, timeout=30) as http:
        made = http.post(
            "/v1/sessions",
            json={"delivery_mode": "poll", "max_images": PHOTOS},
            headers={"Authorization": f"Bearer {key}"},
        )
        made.raise_for_status()
        session_id = made.json()["id"]
    host, port = url.removeprefix("http://").split(":")
    with proxy_to(host, int(port)) as proxy, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
            page = context.new_page()
            page.goto(f"{proxy.url}/s/{session_id}" + (f"?chunk_kib={chunk_kib}" if chunk_kib else ""))
            cdp = context.new_cdp_session(page)
            cdp.send("Network.emulateNetworkConditions", _conditions(False))
            files = [{"name": f"IMG_{n:04d}.jpg", "mimeType": "image/jpeg", "buffer": p} for n, p in enumerate(photos)]
            before = proxy.bytes_up
            started = time.perf_counter()
            page.locator("#gallery").set_input_files(files)  # type: ignore[arg-type]
            page.wait_for_function(
                "() => (document.querySelectorAll('#queue progress')[1] || {}).value >= 40", timeout=900_000
            )
            cdp.send("Network.emulateNetworkConditions", _conditions(True))
            page.wait_for_function("() => navigator.onLine === false")
            time.sleep(CUT_SECONDS)  # the scenario's cut itself, not a wait for something to happen
            cdp.send("Network.emulateNetworkConditions", _conditions(False))
            page.wait_for_function(
                "(n) => document.querySelectorAll(\"#queue li[data-state='done']\").length === n",
                arg=PHOTOS,
                timeout=1_800_000,
            )
            return time.perf_counter() - started, proxy.bytes_up - before
        finally:
            browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=1, help="trials in a row (each about six minutes)")
    parser.add_argument("--chunk-kib", type=int, default=None, help="the page's piece size (default: its own)")
    args = parser.parse_args()
    rounds = args.rounds
    photos = make_photos((3000, 2000), (14, 18, 22, 26, 30), 90)
    total = sum(len(photo) for photo in photos)
    ideal = total / UP_BYTES_PER_SECOND + CUT_SECONDS
    print(
        f"{PHOTOS} photos, {total / 1e6:.2f} MB; slow 3G: {UP_BYTES_PER_SECOND * 8 // 1000} kbit/s up, {LATENCY_MS} ms"
    )
    print(f"pieces: {f'{args.chunk_kib} KiB' if args.chunk_kib else 'the page default (1 MiB)'}")
    print(f"ideal: {total / UP_BYTES_PER_SECOND:.1f} s at the link rate + {CUT_SECONDS:.0f} s cut = {ideal:.1f} s")
    with (
        tempfile.TemporaryDirectory(prefix="photodrop-bench-phone-") as tmp,
        photodrop(Path(tmp) / "data") as (
            server,
            key,
        ),
    ):
        for n in range(rounds):
            seconds, sent = trial(server.url, key, photos, args.chunk_kib)
            ratio = seconds / ideal
            print(
                f"round {n + 1}: {seconds:.1f} s, time/ideal {ratio:.3f}x (goal <= {GOAL}x, "
                f"{'met' if ratio <= GOAL else 'NOT met'}); "
                f"sent up {sent / 1e6:.2f} MB = {sent / total:.3f}x the photos"
            )
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
