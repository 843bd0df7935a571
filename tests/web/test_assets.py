"""Static files: hashed names kept for a year, plain names revalidated, gzip when asked for."""

from __future__ import annotations

import gzip
import hashlib
import re
from pathlib import Path

import httpx
import pytest

from photodrop.web.assets import ROOT, Assets
from tests.conftest import new_session

pytestmark = pytest.mark.anyio


def _digest(name: str) -> str:
    return hashlib.sha256((ROOT / name).read_bytes()).hexdigest()[:12]


async def test_the_page_links_its_files_by_content_hash(client: httpx.AsyncClient, key: str) -> None:
    session = await new_session(client, key)
    page = (await client.get(f"/s/{session['id']}")).text
    assert f'href="/static/page.{_digest("page.css")}.css"' in page
    assert f'src="/static/phone.{_digest("phone.js")}.js"' in page


async def test_a_hashed_file_is_immutable_and_gzipped(client: httpx.AsyncClient) -> None:
    url = f"/static/phone.{_digest('phone.js')}.js"
    response = await client.get(url, headers={"Accept-Encoding": "gzip"})
    assert response.status_code == 200
    assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert response.headers["content-encoding"] == "gzip"
    assert response.headers["vary"] == "Accept-Encoding"
    assert response.headers["content-type"] == "text/javascript; charset=utf-8"
    assert response.content == (ROOT / "phone.js").read_bytes()  # httpx undid the gzip
    assert int(response.headers["content-length"]) < len(response.content) / 2


async def test_without_gzip_the_bytes_come_plain(client: httpx.AsyncClient) -> None:
    for refusal in ("identity", "gzip;q=0", "br"):
        response = await client.get("/static/page.css", headers={"Accept-Encoding": refusal})
        assert "content-encoding" not in response.headers
        assert response.content == (ROOT / "page.css").read_bytes()


async def test_the_plain_name_still_answers_but_is_revalidated(client: httpx.AsyncClient) -> None:
    response = await client.get("/static/page.css")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "public, no-cache"
    etag = response.headers["etag"]
    again = await client.get("/static/page.css", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""


async def test_a_stale_hash_gets_todays_file_without_the_promise(client: httpx.AsyncClient) -> None:
    response = await client.get("/static/phone.000000000000.js")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "public, no-cache"
    assert response.content == (ROOT / "phone.js").read_bytes()


@pytest.mark.parametrize(
    "path",
    ["/static/nothing.js", "/static/../app.py", "/static/%2e%2e/app.py", "/static/graphiql", "/static/"],
)
async def test_missing_files_and_escapes_are_404(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)
    assert response.status_code == 404


async def test_head_and_nested_files(client: httpx.AsyncClient) -> None:
    head = await client.head("/static/graphiql/graphiql.min.css", headers={"Accept-Encoding": "identity"})
    assert head.status_code == 200 and head.content == b""
    assert int(head.headers["content-length"]) == (ROOT / "graphiql" / "graphiql.min.css").stat().st_size
    assert (await client.post("/static/page.css")).status_code == 405


async def test_a_changed_file_is_read_again(tmp_path: Path) -> None:
    (tmp_path / "a.css").write_text("body { color: red }")
    assets = Assets(tmp_path)
    first = assets.url("a.css")
    (tmp_path / "a.css").write_text("body { color: blue }")
    second = assets.url("a.css")
    assert re.fullmatch(r"/static/a\.[0-9a-f]{12}\.css", first) and first != second
    assert assets.url("missing.css") == "/static/missing.css"
    big = "x" * 4000
    (tmp_path / "b.js").write_text(big)
    stored = assets.get("b.js")
    assert stored is not None and stored.gzipped is not None and gzip.decompress(stored.gzipped) == big.encode()
