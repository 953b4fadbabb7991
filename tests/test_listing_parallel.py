"""Listing an object store by prefix, several prefixes at once (stores/prefixed.py).

Against moto_server with small pages (``page_keys``), so that a few dozen hostile
keys span many pages and prefixes: the parallel stream must be exactly the
sequential one, in UTF-8 byte order, and a failure in one prefix must fail it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from datamove.errors import LocationUnreachable
from datamove.pipeline.march import march
from datamove.stores.base import Entry, Location
from datamove.stores.core import list_entries
from datamove.stores.prefixed import BUFFER_PAGES, Page, list_by_prefix
from datamove.stores.s3 import _s3_pages

# '.' < '/' < '0' < '-'? no: '-' (2d) < '.' (2e) < '/' (2f) < '0' (30): root keys
# interleave with prefix ranges on every side; non-ASCII sorts after ASCII in UTF-8
# (and 'é' (c3 a9) after 'z'); deep prefixes; prefixes holding only markers.
HOSTILE = [
    "a", "a-b", "a.txt", "a/", "a/b", "a/b/", "a/b/c", "a/b-c", "a/b.c", "a/b/c/d/e/f",
    "a0", "a//b", "b/x", "b/y", "c/", "c/d/", "d.txt", "z", "é/1", "é.txt", "éa",
    "日本/語", "日本語", "x/" + "y/" * 12 + "deep", "~", "data",
] + [f"m/{i:03d}" for i in range(12)] + [f"n{i}/k" for i in range(12)]


def _put_all(server, bucket: str, keys: list[str], prefix: str = "") -> None:
    client = server.client()
    for key in keys:
        client.put_object(Bucket=bucket, Key=prefix + key, Body=key.encode())


def _expected(keys: list[str]) -> list[str]:
    listed = {k for k in keys if k and not k.endswith("/")}
    return sorted(listed, key=lambda k: k.encode())


@pytest.fixture(scope="module")
def hostile_bucket(moto_server) -> str:
    bucket = moto_server.new_bucket()
    _put_all(moto_server, bucket, HOSTILE, prefix="root/")
    return bucket


@pytest.mark.parametrize("page_keys", [2, 5, 1000])
@pytest.mark.parametrize("threads", [2, 8])
def test_parallel_listing_is_the_sequential_one(moto_server, hostile_bucket, page_keys,
                                                threads):
    location = Location.of(f"s3://{hostile_bucket}/root/",
                           {"endpoint_url": moto_server.endpoint})
    sequential = list(list_by_prefix(_s3_pages(location, page_keys), threads=1))
    parallel = list(list_by_prefix(_s3_pages(location, page_keys), threads=threads))
    assert [e.key for e in sequential] == _expected(HOSTILE)
    assert parallel == sequential
    # march refuses an out-of-order stream: it takes this one.
    assert sum(1 for _ in march(parallel, sequential)) == len(sequential)


@pytest.fixture(scope="module")
def hostile_container(azurite) -> str:
    from tests.conftest import environment

    with environment(**azurite.env):
        container = azurite.new_container()
        fs = azurite.fs()
        for key in HOSTILE:
            fs.pipe_file(f"{container}/root/{key}", key.encode())
    return container


@pytest.mark.parametrize("page_blobs", [2, 5])
def test_azure_parallel_listing_is_the_sequential_one(azurite, hostile_container, page_blobs):
    from datamove.stores.azure import azure_pages
    from tests.conftest import environment

    with environment(**azurite.env):
        location = Location.of(f"az://{hostile_container}/root/")
        sequential = list(list_by_prefix(azure_pages(location, page_blobs), threads=1))
        parallel = list(list_by_prefix(azure_pages(location, page_blobs), threads=4))
    assert [e.key for e in sequential] == _expected(HOSTILE)
    assert parallel == sequential


def test_list_entries_default_listing_is_in_byte_order(moto_server, hostile_bucket):
    """Through the backend as the planner uses it (1000-key pages, 8 threads)."""
    location = Location.of(f"s3://{hostile_bucket}/root/",
                           {"endpoint_url": moto_server.endpoint})
    assert [e.key for e in list_entries(location)] == _expected(HOSTILE)


def test_a_single_prefix_chain_is_descended(moto_server):
    bucket = moto_server.new_bucket()
    keys = [f"only/one/{c}/{i}" for c in "abcd" for i in range(3)] + ["only/one/"]
    _put_all(moto_server, bucket, keys)
    location = Location.of(f"s3://{bucket}", {"endpoint_url": moto_server.endpoint})
    got = [e.key for e in list_by_prefix(_s3_pages(location, 2), threads=4)]
    assert got == _expected(keys)


class _FaultyProxy:
    """An HTTP proxy in front of moto_server that answers ListObjectsV2 requests for
    one prefix itself: AccessDenied."""

    def __init__(self, upstream: str, prefix: str):
        import http.client
        import http.server
        from urllib.parse import parse_qs, urlsplit

        target = urlsplit(upstream)

        class Handler(http.server.BaseHTTPRequestHandler):
            def _any(self) -> None:
                query = parse_qs(urlsplit(self.path).query)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if query.get("prefix") == [prefix]:
                    denied = (b"<?xml version='1.0' encoding='UTF-8'?><Error>"
                              b"<Code>AccessDenied</Code><Message>Access Denied</Message></Error>")
                    self.send_response(403)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(denied)))
                    self.end_headers()
                    self.wfile.write(denied)
                    return
                connection = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
                connection.request(self.command, self.path, body=body, headers=dict(self.headers))
                answer = connection.getresponse()
                data = answer.read()
                self.send_response(answer.status)
                for name, value in answer.getheaders():
                    if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                connection.close()

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _any

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def six_prefixes(moto_server) -> tuple[str, list[str]]:
    bucket = moto_server.new_bucket()
    keys = [f"p{i}/{j}" for i in range(6) for j in range(3)]
    _put_all(moto_server, bucket, keys)
    return bucket, keys


def test_a_prefix_that_cannot_be_listed_fails_the_listing(moto_server, six_prefixes):
    """The store refuses to list one prefix (AccessDenied, answered by a proxy): the
    parallel listing fails like the sequential one, after every key before that
    prefix and none after it, instead of returning a listing without it."""
    bucket, keys = six_prefixes
    proxy = _FaultyProxy(moto_server.endpoint, "p3/")
    try:
        location = Location.of(f"s3://{bucket}", {"endpoint_url": proxy.endpoint})
        listed: list[str] = []
        with pytest.raises(LocationUnreachable, match="access denied"):
            for entry in list_by_prefix(_s3_pages(location, 2), threads=4):
                listed.append(entry.key)
        assert listed == [k for k in _expected(keys) if k < "p3/"]
    finally:
        proxy.close()


def test_a_dead_endpoint_ends_the_listing():
    """moto_server killed after the first page: the listing raises within the client's
    bounded timeouts instead of hanging on a prefix's lister."""
    from tests.conftest import running_moto

    with running_moto() as server:
        bucket = server.new_bucket()
        _put_all(server, bucket, [f"p{i}/{j}" for i in range(4) for j in range(3)])
        location = Location.of(f"s3://{bucket}", {
            "endpoint_url": server.endpoint,
            "config_kwargs": {"connect_timeout": 1, "read_timeout": 2,
                              "retries": {"max_attempts": 1}}})
        stream = list_by_prefix(_s3_pages(location, 2), threads=4)
        assert next(stream).key == "p0/0"
        server.process.kill()
        server.process.wait()
        with pytest.raises(Exception, match=r"(?i)connect") as failed:
            list(stream)
        assert not isinstance(failed.value, AssertionError)


def _synthetic(prefixes: int, per_prefix: int, page: int,
               produced: list[int]) -> object:
    """A store of ``prefixes`` × ``per_prefix`` keys as pages, counting entries handed out."""
    names = sorted(f"p{i:04d}/" for i in range(prefixes))
    lock = threading.Lock()

    def pages(prefix: str, delimited: bool) -> Iterator[Page]:
        if delimited:
            assert prefix == ""
            for i in range(0, len(names), page):
                yield Page([], names[i:i + page], i + page < len(names))
            return
        scope = [prefix] if prefix else names
        keys = (f"{p}{j:06d}" for p in scope for j in range(per_prefix))
        batch: list[Entry] = []
        for key in keys:
            batch.append(Entry(key, 1))
            if len(batch) == page:
                with lock:
                    produced[0] += page
                yield Page(batch, [], True)
                batch = []
        with lock:
            produced[0] += len(batch)
        yield Page(batch, [], False)

    return pages


def test_memory_stays_bounded_at_200k_keys():
    """Entries listed but not yet consumed stay within the lookahead's pages, not the
    listing's size, however far the listers could run ahead."""
    produced = [0]
    threads, page = 4, 500
    consumed, worst, previous = 0, 0, b""
    for entry in list_by_prefix(_synthetic(50, 4000, page, produced), threads=threads):
        key = entry.key.encode()
        assert key > previous
        previous = key
        consumed += 1
        if consumed % 97 == 0:
            worst = max(worst, produced[0] - consumed)
    assert consumed == 200_000
    # the lookahead (2 × threads prefixes), each holding its buffer, one page in hand,
    # and the page a lister is putting
    assert worst <= (2 * threads) * (BUFFER_PAGES + 2) * page
