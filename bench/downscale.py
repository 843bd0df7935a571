"""CPU cost of scaling a 12 MP phone photo down to a session's max_image_dimension of 2048 px.

photodrop's path (``photodrop.downscale``: JPEG decoded at reduced scale, turned upright, written
back as JPEG, hashed) against the plain way a script would do it (full decode, Lanczos resize,
save at the same quality), alternating the two, median of the rounds. A 12 MP HEIC goes the same
way (photodrop only: it has no reduced-scale decode), and the JPEG to 1000 px, where the decoder
already halves it. Run: ``uv run python bench/downscale.py``.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from PIL import Image

from bench._photos import make_photos
from photodrop.downscale import QUALITY, scale_down_blocking
from photodrop.images import ImageInfo
from photodrop.spool import SpooledFile, release_spool

SIZE = (4000, 3000)
LIMIT = 2048


def _cpu_ms(work: Callable[[], object]) -> float:
    start = time.process_time()
    work()
    return (time.process_time() - start) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=15)
    rounds = parser.parse_args().rounds
    (photo,) = make_photos(SIZE, (24,), quality=92)
    heic = io.BytesIO()
    with Image.open(io.BytesIO(photo)) as decoded:
        decoded.save(heic, format="HEIF", quality=85)
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        spool = root / "spool"
        jpeg_path, heic_path = root / "photo.jpg", root / "photo.heic"
        jpeg_path.write_bytes(photo)
        heic_path.write_bytes(heic.getvalue())

        def photodrop(path: Path, mime: str, limit: int = LIMIT) -> Callable[[], object]:
            def run() -> None:
                spooled = SpooledFile("file", path.name, mime, path, size=path.stat().st_size, sha256="x")
                scaled, _ = scale_down_blocking(
                    spooled, ImageInfo(mime, *SIZE), limit=limit, max_pixels=100_000_000, directory=spool
                )
                scaled.path.unlink()

            return run

        def plain() -> None:
            with Image.open(jpeg_path) as original:
                original.load()
                small = original.resize((LIMIT, LIMIT * SIZE[1] // SIZE[0]), Image.Resampling.LANCZOS)
            out = io.BytesIO()
            small.save(out, format="JPEG", quality=QUALITY)
            hashlib.sha256(out.getvalue()).hexdigest()

        ours, theirs, heics, drafted = [], [], [], []
        for _ in range(rounds):
            ours.append(_cpu_ms(photodrop(jpeg_path, "image/jpeg")))
            theirs.append(_cpu_ms(plain))
            heics.append(_cpu_ms(photodrop(heic_path, "image/heic")))
            drafted.append(_cpu_ms(photodrop(jpeg_path, "image/jpeg", 1000)))
        release_spool(spool)
    a, b = statistics.median(ours), statistics.median(theirs)
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; {rounds} rounds, median CPU ms")
    print(f"12 MP JPEG ({len(photo) / 1e6:.1f} MB) -> {LIMIT} px: photodrop {a:.0f} ms, plain resize {b:.0f} ms")
    print(f"ratio photodrop/plain: {a / b:.2f}")
    heic_mb = len(heic.getvalue()) / 1e6
    print(f"12 MP HEIC ({heic_mb:.1f} MB) -> {LIMIT} px JPEG: photodrop {statistics.median(heics):.0f} ms")
    print(f"12 MP JPEG -> 1000 px (decoded at half scale): photodrop {statistics.median(drafted):.0f} ms")


if __name__ == "__main__":
    main()
