"""neurodecode.nsd_fetch.fetch_nsd against a local HTTP server on 127.0.0.1 serving a random NSD-format tree:
full download, a transfer cut halfway then resumed with a Range request (within a call and across calls),
a server that ignores Range, skipping complete files, and the refusals."""
import filecmp
import re
import threading
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

    def log_message(self, *a):
        pass

    def _file(self):
        p = Path(self.translate_path(self.path))
        return p if p.is_file() else None

    def do_HEAD(self):
        self.log.append(("HEAD", self.path, None))
        p = self._file()
        if p is None:
            return self.send_error(404)
        self.send_response(200)
        self.send_header("Content-Length", str(p.stat().st_size))
        self.end_headers()

    def do_GET(self):
        rng = self.headers.get("Range")
        self.log.append(("GET", self.path, rng))
        p = self._file()
        if p is None:
            return self.send_error(404)
        data = p.read_bytes()
        start = 0
        if rng and not self.ignore_range:
            start = int(re.fullmatch(r"bytes=(\d+)-", rng).group(1))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.cut.get(self.path, 0) > 0:
            self.cut[self.path] -= 1
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture
def server(tmp_path):
    tree = nsd_write.write_random_nsd(tmp_path / "bucket", subject=2, n_sessions=3, trials=30, n_shared=6,
                                betas_fmt="nii.gz", image_size=32)
    RangeHandler.log, RangeHandler.cut, RangeHandler.ignore_range = [], {}, False
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(RangeHandler, directory=str(tree)))
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield tree, f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


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
