"""S3 delivery to a store that answers writes without an ``ETag``, as some S3-compatible stores do.

The store is moto's S3 server behind a small HTTP proxy on 127.0.0.1 that forwards every request
and drops the ``ETag`` header from every answer.
"""

from __future__ import annotations

import http.client
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit
from uuid import uuid4

import boto3
import pytest

from photodrop.delivery.base import DeliveryContext
from photodrop.delivery.errors import DestinationUnavailable
from tests.conftest import moto
from tests.delivery.conftest import make_payload
from tests.delivery.test_s3 import destination

pytestmark = pytest.mark.anyio

MIB = 1024 * 1024
# Hop-by-hop headers, and the ones http.client writes itself for the forwarded request.
_NOT_FORWARDED = {"connection", "keep-alive", "transfer-encoding", "expect", "host", "content-length"}


def _proxy_to(upstream: str) -> type[BaseHTTPRequestHandler]:
    target = urlsplit(upstream)

    class WithoutETag(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, and a 100 Continue for botocore's Expect header

        def _forward(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            headers = {name: value for name, value in self.headers.items() if name.lower() not in _NOT_FORWARDED}
            headers["Host"] = target.netloc  # SigV4 signed the proxy's host; moto does not check signatures
            connection = http.client.HTTPConnection(target.hostname or "127.0.0.1", target.port, timeout=60)
            try:
                connection.request(self.command, self.path, body=body, headers=headers)
                answer = connection.getresponse()
                data = answer.read()
            finally:
                connection.close()
            self.send_response(answer.status, answer.reason)
            for name, value in answer.getheaders():
                if name.lower() not in _NOT_FORWARDED and name.lower() != "etag":
                    self.send_header(name, value)
            # A HEAD answer states the object's length without sending it.
            self.send_header(
                "Content-Length", answer.getheader("Content-Length", "0") if self.command == "HEAD" else str(len(data))
            )
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the test reads answers, not the proxy's access log."""

    return WithoutETag


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    """moto's S3 API as a store that never sends an ETag."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _proxy_to(moto().endpoint))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture
def bucket() -> str:
    name = f"no-etag-{uuid4().hex[:12]}"
    moto().client().create_bucket(Bucket=name)
    return name


def _direct() -> Any:
    """A client that talks to moto itself, past the proxy, to see what was really stored."""
    return boto3.session.Session().client(
        "s3", endpoint_url=moto().endpoint, region_name="us-east-1", **moto().CREDENTIALS
    )


async def test_a_put_answered_without_an_etag_is_confirmed_by_head(
    endpoint: str, bucket: str, delivery_context: DeliveryContext
) -> None:
    data = os.urandom(200_000)
    target = destination(delivery_context, endpoint, bucket)

    receipt = await target.deliver(make_payload(data))

    key = "sess_01TESTSESSION00000000000/002-img_01TESTIMAGE000000000000.jpg"
    assert receipt.location == f"s3://{bucket}/{key}"
    assert receipt.etag is None  # the store never said one; an empty string would pretend it did
    assert _direct().get_object(Bucket=bucket, Key=key)["Body"].read() == data


async def test_a_part_answered_without_an_etag_is_a_retryable_failure_and_leaves_no_parts(
    endpoint: str, bucket: str, delivery_context: DeliveryContext
) -> None:
    target = destination(delivery_context, endpoint, bucket, multipart_threshold=5 * MIB, multipart_chunk_size=5 * MIB)

    with pytest.raises(DestinationUnavailable, match="without an ETag") as caught:
        await target.deliver(make_payload(os.urandom(6 * MIB)))

    assert caught.value.retryable
    direct = _direct()
    assert direct.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert direct.list_objects_v2(Bucket=bucket)["KeyCount"] == 0
