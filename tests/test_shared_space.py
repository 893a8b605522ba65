"NeuralDiffuser shared-space training across processes (Accelerate, gloo) and after a kill (neurodecode.shared_training)."
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from neurodecode.core import ArtifactCache
from neurodecode.shared_training import train_decoder, two_stage

CFG = dict(h=32, epochs=6, batch_size=16, lr=3e-3, drop=0.0)  # dropout off: its masks are drawn per process

TOY = textwrap.dedent('''
    import numpy as np
    def toy(n_img=48, T=3, D=8, vox={1: 24, 2: 20, 3: 18}, trials=96, seed=0):
        rng = np.random.default_rng(seed)
        tg = rng.standard_normal((n_img, T, D)).astype(np.float16)
        X, rows = {}, {}
        for s, V in vox.items():
            W = rng.standard_normal((T * D, V)) / np.sqrt(T * D)
            rows[s] = rng.integers(0, n_img, trials)
            X[s] = (tg[rows[s]].reshape(trials, -1).astype(np.float32) @ W
                    + 0.3 * rng.standard_normal((trials, V))).astype(np.float32)
        return X, rows, tg
''')
exec(TOY)


def _env():
    root = Path(__file__).resolve().parents[1]
    return {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1"}


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _script(tmp_path, body):
    p = tmp_path / "job.py"
    p.write_text(TOY + textwrap.dedent(body))
    return p


def test_two_gloo_processes_match_one(tmp_path):
    "Stage 1 (two subjects) then stage 2 in two CPU processes (gloo) = the one-process run, within float tolerance."
    out = tmp_path / "two.pt"
    job = _script(tmp_path, f'''
        import torch
        torch.set_num_threads(1)
        from neurodecode.shared_training import two_stage, make_accelerator
        acc = make_accelerator("cpu")
        X, rows, tg = toy()
        r = two_stage(X, rows, tg, subject=1, config={CFG!r}, cache=False, accelerator=acc, quiet=True)
        if acc.is_main_process:
            torch.save({{"state": r["state"], "loss": r["log"]["loss"], "n": acc.num_processes}}, {str(out)!r})
    ''')
    # `accelerate launch --cpu` starts one process (multi-CPU needs mpirun); torchrun sets the same environment that
    # `accelerate launch --multi_gpu` sets, and Accelerator(cpu=True) joins it with the gloo backend
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), str(job)]
    res = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    two = torch.load(out)
    assert two["n"] == 2
    X, rows, tg = toy()
    one = two_stage(X, rows, tg, subject=1, config=CFG, cache=False, device="cpu", quiet=True)
    assert one["log"]["processes"] == 1
    np.testing.assert_allclose(two["loss"], one["log"]["loss"], rtol=1e-4, atol=1e-5)
    for k, v in one["state"].items():
        np.testing.assert_allclose(two["state"][k].numpy(), v.numpy(), rtol=1e-3, atol=1e-5, err_msg=k)


def test_killed_run_resumes_to_the_same_result(tmp_path):
    "SIGKILL a training process after a checkpoint; the next call resumes and matches an uninterrupted run."
    cache = tmp_path / "cache"
    cfg = {**CFG, "epochs": 40, "ckpt_every": 1}
    job = _script(tmp_path, f'''
        import torch
        torch.set_num_threads(1)
        from neurodecode.shared_training import train_decoder
        X, rows, tg = toy()
        train_decoder({{1: X[1]}}, {{1: rows[1]}}, tg, config={cfg!r}, cache={str(cache)!r}, device="cpu", quiet=True)
    ''')
    proc = subprocess.Popen([sys.executable, str(job)], env=_env())
    ck = cache / "nd_decoder_ckpt"
    t0 = time.time()
    while not (ck.exists() and any(ck.glob("*.json"))):
        assert proc.poll() is None, "the training finished before a checkpoint was seen; make it longer"
        assert time.time() - t0 < 300
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    store = ArtifactCache(cache)
    key = next(ck.glob("*.json")).stem
    done = store.load("nd_decoder_ckpt", key)["epoch"]
    assert 0 < done < cfg["epochs"], done
    X, rows, tg = toy()
    resumed = train_decoder({1: X[1]}, {1: rows[1]}, tg, config=cfg, cache=store, device="cpu", quiet=True)
    fresh = train_decoder({1: X[1]}, {1: rows[1]}, tg, config=cfg, cache=False, device="cpu", quiet=True)
    assert resumed["log"]["loss"] == fresh["log"]["loss"]
    for k, v in fresh["state"].items():
        assert torch.equal(resumed["state"][k], v), k


def test_data_key_hashes_read_only_arrays_once(monkeypatch):
    "Issue 25: `_data_key` memoises read-only training sets (NDExperiment's), never writeable ones."
    import neurodecode.shared_training as st
    calls = []
    real = st.hash_obj
    monkeypatch.setattr(st, "hash_obj", lambda *a: calls.append(1) or real(*a))
    monkeypatch.setattr(st, "_DATA_KEYS", {})
    X, R, T = {1: np.ones((4, 3), np.float32)}, {1: np.arange(4)}, np.zeros((4, 2), np.float32)
    k1, k2 = st._data_key(X, R, T), st._data_key(X, R, T)
    assert k1 == k2 and len(calls) == 2  # writeable: hashed every time (they could change in between)
    for a in (X[1], R[1], T):
        a.setflags(write=False)
    k3, k4 = st._data_key(X, R, T), st._data_key(X, R, T)
    assert k3 == k4 == k1 and len(calls) == 3  # read-only: hashed once, the same key as before
    assert st._data_key({1: X[1].copy()}, R, T) == k1 and len(calls) == 4  # another array: hashed again
