"""Photo-like JPEGs and the multipart bodies that carry them, shared by the upload-driven benchmarks."""

from __future__ import annotations

import io

from PIL import Image, ImageChops

BOUNDARY = "photodrop-bench-7c1f0a"


def make_photos(size: tuple[int, int], sigmas: tuple[int, ...], quality: int) -> list[bytes]:
    """One JPEG per grain level: rotated gradients under Gaussian grain, so they compress like photos."""
    photos = []
    for sigma in sigmas:
        bands = [
            ImageChops.add(
                Image.linear_gradient("L").rotate(40 * band + sigma).resize(size),
                Image.effect_noise(size, sigma),
                offset=-128,
            )
            for band in range(3)
        ]
        buffer = io.BytesIO()
        Image.merge("RGB", bands).save(buffer, "JPEG", quality=quality)
        photos.append(buffer.getvalue())
    return photos


def multipart(photo: bytes, index: int) -> bytes:
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="IMG_{index:04d}.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    )
    return head.encode() + photo + f"\r\n--{BOUNDARY}--\r\n".encode()
