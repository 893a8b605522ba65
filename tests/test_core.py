"""neurodecode.core: directory precedence, missing-data messages, the killed-writer case, seeding determinism."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from neurodecode import core
from neurodecode.core import ArtifactCache, NotFoundError, find_file, get_cache_dir, get_data_dir, get_weights_dir

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("kind,getter,var", [("data", get_data_dir, "NEURODECODE_DATA"),
                                             ("weights", get_weights_dir, "NEURODECODE_WEIGHTS"),
                                             ("cache", get_cache_dir, "NEURODECODE_CACHE")])
def test_precedence(tmp_path, monkeypatch, kind, getter, var):
    home = Path(os.environ["HOME"])
    default = home / "neurodecode_data" if kind == "data" else home / "neurodecode_data" / kind
    assert getter() == default
    monkeypatch.setenv(var, str(tmp_path / "env"))
    assert getter() == tmp_path / "env"  # environment beats default
    assert getter(tmp_path / "arg") == tmp_path / "arg"  # argument beats environment


def test_weights_and_cache_follow_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("NEURODECODE_DATA", str(tmp_path / "d"))
    assert get_weights_dir() == tmp_path / "d" / "weights"
    assert get_cache_dir() == tmp_path / "d" / "cache"
    assert get_weights_dir(data_dir=tmp_path / "x") == tmp_path / "x" / "weights"


def test_missing_file_lists_every_place_tried(tmp_path, monkeypatch):
    monkeypatch.setenv("NEURODECODE_DATA", str(tmp_path / "env"))
    with pytest.raises(NotFoundError) as e:
        find_file("nsddata/experiments/nsd/nsd_expdesign.mat", what="NSD experiment design",
                  fix="neurodecode.nsd.fetch_nsd(1, dest, accept_terms=True)")
    msg = str(e.value)
    assert msg.startswith("NSD experiment design not found. Looked in:")
    assert "data_dir= (not set)" in msg
    assert str(tmp_path / "env" / "nsddata/experiments/nsd/nsd_expdesign.mat") in msg
    assert str(Path(os.environ["HOME"]) / "neurodecode_data" / "nsddata") in msg
    assert "Fix: neurodecode.nsd.fetch_nsd" in msg
    # an explicit directory is searched alone, and named
    with pytest.raises(NotFoundError, match=str(tmp_path / "mine")):
        find_file("a.txt", explicit=tmp_path / "mine")
    assert isinstance(e.value, FileNotFoundError)


def test_missing_weights_message(tmp_path):
    with pytest.raises(NotFoundError) as e:
        find_file("imagenet64-iter-1600000-model-ema.th", kind="weights", data_dir=tmp_path)
    assert str(tmp_path / "weights" / "imagenet64-iter-1600000-model-ema.th") in str(e.value)
    assert "weights_dir=" in str(e.value)


WRITER = textwrap.dedent("""
    import sys, time
    import numpy as np
    from neurodecode.core import ArtifactCache

    class Stall:
        "Pickling this blocks, so the writer is killed while the artifact is half written."
        def __reduce__(self):
            sys.stdout.write("stalling\\n"); sys.stdout.flush()
            time.sleep(60)
            return (str, ("never",))

    cache = ArtifactCache(sys.argv[1])
    big = np.ones(4_000_000)  # 32 MB written before the stall
    cache.cached("stage", lambda: [big, Stall()], params={"p": 1}, inputs=np.arange(3), code="v1", fmt="pkl")
""")


def test_killed_writer_is_never_read_as_valid(tmp_path):
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path / "cache")], stdout=subprocess.PIPE,
                            text=True, cwd=ROOT)
    assert proc.stdout.readline().strip() == "stalling"  # the data file is half written now
    tmps = list((tmp_path / "cache" / "stage").glob(".*.tmp*"))
    assert tmps and tmps[0].stat().st_size > 1_000_000
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)

    cache = ArtifactCache(tmp_path / "cache")
    key = cache.key("stage", {"p": 1}, np.arange(3), "v1")
    assert not cache.exists("stage", key)
    with pytest.raises(KeyError):
        cache.load("stage", key)
    # the next run resumes: it recomputes and writes a valid artifact, and the torn temp file can be cleaned
    out = cache.cached("stage", lambda: {"ok": 1}, params={"p": 1}, inputs=np.arange(3), code="v1", fmt="pkl")
    assert out == {"ok": 1} and cache.exists("stage", key)
    assert cache.clean_temp() == 1
    assert cache.load("stage", key) == {"ok": 1}


def test_artifact_without_manifest_is_invalid(tmp_path):
    "A kill after the data rename but before the manifest rename leaves data without a manifest: not valid."
    cache = ArtifactCache(tmp_path)
    p = cache.save("s", "k", {"a": np.arange(3)}, fmt="npz")
    assert cache.exists("s", "k")
    (p.parent / "k.json").unlink()
    assert not cache.exists("s", "k")
    cache.save("s", "k", {"a": np.arange(3)}, fmt="npz")
    man = json.loads((p.parent / "k.json").read_text())
    man["size"] += 1
    (p.parent / "k.json").write_text(json.dumps(man))
    assert not cache.exists("s", "k")
    assert ArtifactCache(tmp_path, verify="sha256").exists("s", "k") is False


SEEDED = "from neurodecode.core import seed_everything; import numpy as np, torch, random; " \
         "g = seed_everything(int(__import__('sys').argv[1])); " \
         "print(g.random(2).tolist(), np.random.rand(2).tolist(), torch.rand(2).tolist(), random.random())"


def test_seeding_is_deterministic_across_processes():
    run = lambda s: subprocess.run([sys.executable, "-c", SEEDED, str(s)], capture_output=True, text=True,
                                   cwd=ROOT, check=True).stdout
    assert run(7) == run(7)
    assert run(7) != run(8)


def test_validation_messages():
    with pytest.raises(ValueError, match=r"^subject must be one of 1\.\.8; got 9$"):
        core.check_choice("subject", 9, range(1, 9))
    with pytest.raises(ValueError, match="seed must be >= 0"):
        core.seed_everything(-1)


def test_lock_held_sees_another_process_holding_the_lock(tmp_path):
    "`pipeline.lock_held`: how a paper-2 notebook knows paper 1's notebook is training the tiny VD (issue 25)."
    import subprocess
    import sys
    import time
    from neurodecode.pipeline import lock_held
    lock = tmp_path / "locks" / "x.lock"
    assert not lock_held(lock)
    code = (f"from neurodecode.pipeline import file_lock; import time, pathlib\n"
            f"with file_lock({str(lock)!r}):\n    pathlib.Path({str(tmp_path / 'in')!r}).touch(); time.sleep(3)")
    p = subprocess.Popen([sys.executable, "-c", code])
    t0 = time.time()
    while not (tmp_path / "in").exists() and time.time() - t0 < 30:
        time.sleep(0.05)
    assert lock_held(lock)
    p.wait(timeout=30)
    assert not lock_held(lock)
