"""neurodecode.nsd_fetch.fetch_nsd against a local HTTP server on 127.0.0.1 serving a random NSD-format tree:
full download, a transfer cut halfway then resumed with a Range request (within a call and across calls),
a server that ignores Range, skipping complete files, the refusals, and (issue 20) MD5 ETags checked against
local and downloaded content, and refused connections, HTTP 503 and timeouts retried with backoff."""
import filecmp
import hashlib
import re
import socket
import threading
import time
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from neurodecode import nsd, nsd_fetch, nsd_write


class RangeHandler(SimpleHTTPRequestHandler):
    "Serves files with HEAD, GET and `Range: bytes=N-`; can cut a transfer halfway or ignore Range."
    log: list = []  # (method, path, range header)
    cut: dict = {}  # path -> number of GETs still to cut halfway
    ignore_range = False
    etag = None  # None: no ETag; "md5": the file's MD5, quoted (S3 single-part); "multipart": S3 multipart ("<hex>-2")
    fail: dict = {}  # method -> number of requests still to answer with HTTP 503
    stall: dict = {}  # method -> number of requests still to leave unanswered for `stall_s` seconds first
    stall_s = 1.0
    corrupt: dict = {}  # path -> number of GETs still to serve with 64 zeroed bytes (same length)

    def log_message(self, *a):
        pass

    def _trouble(self, method) -> bool:
        "Stall and/or answer 503 while the counters say so; True when the request was answered with an error."
        if self.stall.get(method, 0) > 0:
            self.stall[method] -= 1
            time.sleep(self.stall_s)
        if self.fail.get(method, 0) > 0:
            self.fail[method] -= 1
            self.send_error(503, "Slow Down")
            return True
        return False

    def _send_etag(self, data: bytes):
        if self.etag:
            h = hashlib.md5(data).hexdigest()
            self.send_header("ETag", f'"{h}"' if self.etag == "md5" else f'"{h}-2"')

    def _file(self):
        p = Path(self.translate_path(self.path))
        return p if p.is_file() else None

    def do_HEAD(self):
        self.log.append(("HEAD", self.path, None))
        if self._trouble("HEAD"):
            return
        p = self._file()
        if p is None:
            return self.send_error(404)
        self.send_response(200)
        self.send_header("Content-Length", str(p.stat().st_size))
        self._send_etag(p.read_bytes())
        self.end_headers()

    def do_GET(self):
        rng = self.headers.get("Range")
        self.log.append(("GET", self.path, rng))
        if self._trouble("GET"):
            return
        p = self._file()
        if p is None:
            return self.send_error(404)
        data = p.read_bytes()
        etag_data = data
        if self.corrupt.get(self.path, 0) > 0:
            self.corrupt[self.path] -= 1
            data = _zeroed(data)
        start = 0
        if rng and not self.ignore_range:
            start = int(re.fullmatch(r"bytes=(\d+)-", rng).group(1))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self._send_etag(etag_data)
        self.end_headers()
        if self.cut.get(self.path, 0) > 0:
            self.cut[self.path] -= 1
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


def _zeroed(data: bytes, n: int = 64, at: float = 0.6) -> bytes:
    "`data` with `n` bytes zeroed inside (same size, other content), as a bad disk or a broken copy would leave it."
    b = bytearray(data)
    i = int(len(b) * at)
    b[i:i + n] = bytes(n)
    return bytes(b)


class _Server(ThreadingHTTPServer):
    def handle_error(self, request, client_address):  # a client that timed out and left: not worth a traceback
        import sys
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


def _serve(tree: Path, port: int = 0) -> ThreadingHTTPServer:
    httpd = _Server(("127.0.0.1", port), partial(RangeHandler, directory=str(tree)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


@pytest.fixture
def server(tmp_path):
    tree = nsd_write.write_random_nsd(tmp_path / "bucket", subject=2, n_sessions=3, trials=30, n_shared=6,
                                betas_fmt="nii.gz", image_size=32)
    RangeHandler.log, RangeHandler.cut, RangeHandler.ignore_range = [], {}, False
    RangeHandler.etag, RangeHandler.fail, RangeHandler.stall, RangeHandler.corrupt = None, {}, {}, {}
    httpd = _serve(tree)
    yield tree, f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def waits(monkeypatch):
    "The backoff waits, recorded instead of slept."
    w = []
    monkeypatch.setattr(nsd_fetch, "_sleep", w.append)
    return w


def _same_tree(a: Path, b: Path, rels):
    for rel in rels:
        assert filecmp.cmp(a / rel, b / rel, shallow=False), rel


def test_fetch_cut_halfway_then_resumed(server, tmp_path, capsys):
    tree, url = server
    stim = "/" + nsd.STIMULI
    RangeHandler.cut[stim] = 1  # the first transfer of the stimuli is cut halfway
    got = nsd_fetch.fetch_nsd(2, tmp_path / "dest", base_url=url, accept_terms=True, retries=2)
    rels = [str(p.relative_to(tmp_path / "dest")) for p in got]
    assert nsd.EXPDESIGN in rels and nsd.STIMULI in rels and nsd.roi_file(2, "nsdgeneral") in rels
    assert [r for r in rels if "betas_session" in r] == [nsd.betas_file(2, s, "nii.gz") for s in (1, 2, 3)]
    _same_tree(tree, tmp_path / "dest", rels)
    gets = [(p, r) for m, p, r in RangeHandler.log if m == "GET" and p == stim]
    size = (tree / nsd.STIMULI).stat().st_size
    assert gets == [(stim, None), (stim, f"bytes={size // 2}-")]  # resumed where the cut left it
    err = capsys.readouterr()
    assert "cut at" in err.err and "resuming (1/2)" in err.err
    assert "nsd_stimuli.hdf5: downloaded" in err.out and "resumed" in err.out
    assert not list((tmp_path / "dest").rglob("*.part"))
    sd = nsd.load_subject(2, tmp_path / "dest", cache=False)  # the fetched tree is readable
    assert sd.X_train.shape[0] + sd.X_test.shape[0] == 30


def test_resume_across_calls_and_skip_complete(server, tmp_path, capsys):
    tree, url = server
    rel = nsd.betas_file(2, 2, "nii.gz")
    RangeHandler.cut["/" + rel] = 1
    with pytest.raises(RuntimeError, match="run fetch_nsd again to resume"):
        nsd_fetch.fetch_nsd(2, tmp_path / "dest", base_url=url, accept_terms=True, retries=0)
    part = tmp_path / "dest" / (rel + ".part")
    assert part.exists() and 0 < part.stat().st_size < (tree / rel).stat().st_size
    n_part = part.stat().st_size
    RangeHandler.log.clear()
    nsd_fetch.fetch_nsd(2, tmp_path / "dest", base_url=url, accept_terms=True, retries=0)
    gets = [(p, r) for m, p, r in RangeHandler.log if m == "GET"]
    # files completed by the first call are not downloaded again; the cut one resumes from its .part
    assert ("/" + nsd.EXPDESIGN, None) not in gets and ("/" + nsd.STIMULI, None) not in gets
    assert [g for g in gets if g[0] == "/" + rel] == [("/" + rel, f"bytes={n_part}-")]
    assert filecmp.cmp(tree / rel, tmp_path / "dest" / rel, shallow=False)
    assert "complete already" in capsys.readouterr().out
    RangeHandler.log.clear()
    nsd_fetch.fetch_nsd(2, tmp_path / "dest", base_url=url, accept_terms=True)
    assert not [m for m, *_ in RangeHandler.log if m == "GET"]  # everything complete: nothing downloaded


def test_server_ignoring_range_restarts(server, tmp_path):
    tree, url = server
    rel = nsd.STIMULI
    dest = tmp_path / "dest" / rel
    dest.parent.mkdir(parents=True)
    (dest.parent / (dest.name + ".part")).write_bytes(b"garbage that is not the file")
    RangeHandler.ignore_range = True
    path, what = nsd_fetch.download_file(url + rel, dest)
    assert filecmp.cmp(tree / rel, dest, shallow=False) and what.startswith("downloaded")


def test_local_file_of_wrong_size_is_replaced(server, tmp_path):
    tree, url = server
    dest = tmp_path / "x.mat"
    dest.write_bytes(b"x" * 3)
    nsd_fetch.download_file(url + nsd.EXPDESIGN, dest)
    assert filecmp.cmp(tree / nsd.EXPDESIGN, dest, shallow=False)


def test_refusals(server, tmp_path):
    tree, url = server
    with pytest.raises(PermissionError, match=r"terms of use .*accept_terms=True"):
        nsd_fetch.fetch_nsd(2, tmp_path / "d", base_url=url)
    assert not (tmp_path / "d").exists()  # nothing touched without consent
    with pytest.raises(ValueError, match="protocol must be one of 'brain-diffuser', 'mindeye2'; got 'x'"):
        nsd_fetch.fetch_nsd(2, tmp_path / "d", protocol="x", base_url=url, accept_terms=True)
    with pytest.raises(FileNotFoundError, match=r"cannot fetch nsddata/experiments/nsd/nsd_expdesign.mat: .*HTTP 404"):
        nsd_fetch.fetch_nsd(2, tmp_path / "d", base_url=url + "nowhere/", accept_terms=True)


def test_missing_captions_warn_and_continue(server, tmp_path, capsys):
    tree, url = server
    for c in nsd.CAPTIONS:
        (tree / c).unlink()
    got = nsd_fetch.fetch_nsd(2, tmp_path / "dest", base_url=url, accept_terms=True)
    out = capsys.readouterr().out
    assert "not available" in out and "annotations_trainval2017.zip" in out
    assert any("betas_session03" in str(p) for p in got)


# -- issue 20: content checked against MD5 ETags; transient errors retried with backoff; every error names the URL --
def test_local_file_with_zeroed_bytes_is_downloaded_again(server, tmp_path, capsys):
    "Before: a local file of the right size with zeroed bytes was kept as 'complete already'. Now its MD5 is checked."
    tree, url = server
    RangeHandler.etag = "md5"
    dest = tmp_path / "dest"
    nsd_fetch.fetch_nsd(2, dest, base_url=url, accept_terms=True)
    bad = [nsd.STIMULI, nsd.betas_file(2, 2, "nii.gz")]
    for rel in bad:
        (dest / rel).write_bytes(_zeroed((dest / rel).read_bytes()))
    RangeHandler.log.clear()
    capsys.readouterr()
    got = nsd_fetch.fetch_nsd(2, dest, base_url=url, accept_terms=True)
    assert sorted(p for m, p, _ in RangeHandler.log if m == "GET") == sorted("/" + r for r in bad)  # only those two
    _same_tree(tree, dest, [str(p.relative_to(dest)) for p in got])
    out = capsys.readouterr()
    assert out.err.count("its MD5 differs from the server's ETag; downloading it again") == 2
    assert f"{nsd.EXPDESIGN}: complete already (MD5 verified)" in out.out
    assert f"{nsd.STIMULI}: downloaded" in out.out and "MD5 verified" in out.out


@pytest.mark.parametrize("etag", [None, "multipart"])
def test_without_an_md5_etag_only_the_size_is_checked(server, tmp_path, etag):
    "No ETag, or an S3 multipart ETag ('<hex>-N', not an MD5 of the file): the content cannot be checked (documented)."
    tree, url = server
    RangeHandler.etag = etag
    dest = tmp_path / "s.hdf5"
    assert nsd_fetch.download_file(url + nsd.STIMULI, dest)[1].startswith("downloaded")
    dest.write_bytes(_zeroed(dest.read_bytes()))
    assert nsd_fetch.download_file(url + nsd.STIMULI, dest)[1] == "complete already"


def test_corrupt_download_is_fetched_once_more_then_an_error(server, tmp_path, capsys):
    tree, url = server
    RangeHandler.etag = "md5"
    rel = nsd.STIMULI
    RangeHandler.corrupt["/" + rel] = 1  # the first transfer arrives with zeroed bytes
    path, what = nsd_fetch.download_file(url + rel, tmp_path / "a.hdf5")
    assert filecmp.cmp(tree / rel, path, shallow=False) and "MD5 verified" in what
    assert [p for m, p, _ in RangeHandler.log if m == "GET"] == ["/" + rel] * 2
    assert "does not match the server's MD5 ETag; downloading it again" in capsys.readouterr().err
    RangeHandler.corrupt["/" + rel] = 2  # corrupt twice: an error naming the URL and the file, nothing left behind
    dest = tmp_path / "b.hdf5"
    with pytest.raises(RuntimeError, match="does not match the server's MD5 ETag twice") as e:
        nsd_fetch.download_file(url + rel, dest)
    assert url + rel in str(e.value) and str(dest) in str(e.value)
    assert not dest.exists() and not dest.with_name(dest.name + ".part").exists()


def test_http_503_is_retried_with_exponential_backoff(server, tmp_path, waits, capsys):
    tree, url = server
    rel = nsd.EXPDESIGN
    RangeHandler.fail = {"HEAD": 3}  # 3 failures, the 4th try answers
    path, _ = nsd_fetch.download_file(url + rel, tmp_path / "a.mat")
    assert filecmp.cmp(tree / rel, path, shallow=False) and waits == [0.5, 1.0, 2.0]
    assert f"HEAD request of {url + rel} failed (HTTPError: HTTP Error 503" in capsys.readouterr().err
    waits.clear()
    RangeHandler.fail = {"GET": 2}
    path, what = nsd_fetch.download_file(url + rel, tmp_path / "b.mat", backoff=0.1)
    assert filecmp.cmp(tree / rel, path, shallow=False) and waits == [0.1, 0.2] and "resumed" in what
    waits.clear()
    RangeHandler.fail = {"HEAD": 4}  # bounded: 4 tries, then an error naming the URL
    with pytest.raises(ConnectionError, match=re.escape(f"HEAD request of {url + rel} failed 4 times")) as e:
        nsd_fetch.download_file(url + rel, tmp_path / "c.mat")
    assert "503" in str(e.value) and waits == [0.5, 1.0, 2.0]
    RangeHandler.fail = {"GET": 4}
    with pytest.raises(RuntimeError, match=re.escape(f"download of {url + rel} stopped at 0 of")):
        nsd_fetch.download_file(url + rel, tmp_path / "d.mat")


def test_refused_connection_is_retried_until_the_server_answers(server, tmp_path, monkeypatch):
    "Before: `URLError` on the first request, no retry, no URL. Now: retried with backoff; the server comes up."
    tree, _ = server
    with socket.socket() as s:  # a port nothing listens on (yet)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/"
    late, waits = [], []

    def sleep(w):  # the server starts during the second wait: two refused connections first
        waits.append(w)
        if len(waits) == 2:
            late.append(_serve(tree, port))
    monkeypatch.setattr(nsd_fetch, "_sleep", sleep)
    try:
        got = nsd_fetch.fetch_nsd(2, tmp_path / "dest", base_url=url, accept_terms=True)
    finally:
        for h in late:
            h.shutdown(); h.server_close()
    assert waits == [0.5, 1.0] and len(late) == 1
    _same_tree(tree, tmp_path / "dest", [str(p.relative_to(tmp_path / "dest")) for p in got])
    with pytest.raises(ConnectionError) as e:  # nobody ever answers: 4 tries, then the URL and the cause
        nsd_fetch.download_file(url + nsd.EXPDESIGN, tmp_path / "x.mat")
    msg = str(e.value)
    assert f"HEAD request of {url + nsd.EXPDESIGN} failed 4 times" in msg and "Connection refused" in msg
    assert waits[2:] == [0.5, 1.0, 2.0]


def test_timeouts_are_retried(server, tmp_path, waits, capsys):
    tree, url = server
    RangeHandler.stall, RangeHandler.stall_s = {"HEAD": 1, "GET": 1}, 1.0
    path, _ = nsd_fetch.download_file(url + nsd.EXPDESIGN, tmp_path / "a.mat", timeout=0.3)
    assert filecmp.cmp(tree / nsd.EXPDESIGN, path, shallow=False) and waits == [0.5, 0.5]
    err = capsys.readouterr().err
    assert f"HEAD request of {url + nsd.EXPDESIGN} failed" in err and "timed out" in err
