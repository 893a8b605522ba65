"""neurodecode.regressors: sklearn equality grids, LOO/k-fold CV, token-wise ridge, the networks' conformance,
Table 1, and resuming a training run that was really killed (SIGKILL) mid-way."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch
from sklearn import linear_model as sklm

from neurodecode.core import ArtifactCache
from neurodecode.regressors import (CNNNet, CNNRegressor, GRUNet, GRURegressor, Ridge, RidgeCV, TokenwiseRidge,
                                    TransformerNet, TransformerRegressor, check_regressor, n_params, renormalize,
                                    summary_table)


def rel_err(a, b):
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    out = {}
    for name, (n, p) in {"dual": (70, 160), "primal": (160, 30)}.items():
        X = rng.normal(1.5, 1, (n, p))
        Y = X @ rng.normal(size=(p, 9)) + rng.normal(2, 1, (n, 9))
        out[name] = (X, Y, rng.normal(1.5, 1, (30, p)))
    return out


@pytest.mark.parametrize("regime", ["dual", "primal"])
@pytest.mark.parametrize("dtype,tol", [("float64", 1e-6), ("float32", 1e-3)])
@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize("solver", ["cholesky", "eigh"])
def test_ridge_matches_sklearn(data, regime, dtype, tol, fit_intercept, solver):
    X, Y, Xt = data[regime]
    alpha = np.linspace(5, 60, Y.shape[1])
    ref = sklm.Ridge(alpha=alpha, fit_intercept=fit_intercept).fit(X, Y)
    ours = Ridge(alpha, fit_intercept=fit_intercept, dtype=dtype, device="cpu", solver=solver,
                 n_targets_batch=4 if solver == "eigh" else None).fit(X.astype(dtype), Y.astype(dtype))
    assert rel_err(ours.predict(Xt.astype(dtype)), ref.predict(Xt)) < tol
    assert rel_err(ours.coef_, ref.coef_) < 10 * tol
    if fit_intercept:
        assert rel_err(ours.intercept_, ref.intercept_) < 10 * tol
    else:
        np.testing.assert_array_equal(ours.intercept_, 0.0)


def test_ridge_accepts_torch_and_float64_input_in_float32(data):
    X, Y, Xt = data["dual"]
    ref = sklm.Ridge(alpha=10.0).fit(X, Y).predict(Xt)
    assert rel_err(Ridge(10.0, device="cpu").fit(torch.from_numpy(X), torch.from_numpy(Y)).predict(Xt), ref) < 1e-3


def test_predict_path_equals_separate_fits(data):
    X, Y, Xt = data["dual"]
    r = Ridge(dtype="float64", device="cpu").fit(X, Y)
    for a, P in r.predict_path(Xt, [0.5, 5.0, 500.0]):
        assert rel_err(P, sklm.Ridge(alpha=a).fit(X, Y).predict(Xt)) < 1e-8


def test_cholesky_falls_back_to_eigh_when_not_positive_definite():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(30, 60)).astype(np.float32) * 1e3
    Y = rng.normal(size=(30, 2)).astype(np.float32)
    P = Ridge(1e-9, device="cpu").fit(X, Y).predict(X)  # tiny alpha: K + αI is singular in float32
    assert np.isfinite(P).all()


@pytest.mark.parametrize("regime", ["dual", "primal"])
def test_ridgecv_loo_equals_sklearn(data, regime):
    X, Y, Xt = data[regime]
    alphas = [0.1, 1.0, 10.0, 100.0, 1e4]
    for per_target in (False, True):
        ours = RidgeCV(alphas, per_target=per_target, dtype="float64", device="cpu").fit(X, Y)
        ref = sklm.RidgeCV(alphas=alphas, alpha_per_target=per_target).fit(X, Y)
        np.testing.assert_array_equal(ours.alpha_, ref.alpha_)
        assert rel_err(ours.predict(Xt), ref.predict(Xt)) < 1e-6


def test_tokenwise_matches_per_token_sklearn():
    rng = np.random.default_rng(2)
    N, T, D, p = 50, 4, 5, 90
    X, Xt = rng.normal(size=(N, p)), rng.normal(size=(10, p))
    Y = rng.normal(size=(N, T, D)) + np.einsum("np,tpd->ntd", X, rng.normal(size=(T, p, D)) * 0.1)
    alphas = np.array([3.0, 30.0, 30.0, 300.0])
    for dtype, tol in (("float64", 1e-6), ("float32", 1e-3)):
        tw = TokenwiseRidge(alphas, dtype=dtype, device="cpu", n_targets_batch=7).fit(X, Y)
        ref = np.stack([sklm.Ridge(alpha=alphas[k]).fit(X, Y[:, k]).predict(Xt) for k in range(T)], 1)
        assert tw.predict(Xt).shape == (10, T, D)
        assert rel_err(tw.predict(Xt), ref) < tol
        assert tw.coef_.shape == (T, D, p)


def test_renorm_is_brain_diffusers_step(data):
    X, Y, Xt = data["dual"]
    P = Ridge(20.0, renorm=True, dtype="float64", device="cpu").fit(X, Y).predict(Xt)
    ref = sklm.Ridge(alpha=20.0).fit(X, Y).predict(Xt)
    ref = (ref - ref.mean(0)) / ref.std(0) * Y.std(0) + Y.mean(0)
    np.testing.assert_allclose(P, ref, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(renormalize(ref, Y), ref, rtol=1e-10, atol=1e-10)


def test_gru_parameter_count_and_table1():
    with torch.device("meta"):
        assert n_params(GRUNet(15724, 13344)) == 12_400_344
    for cls in (GRUNet, CNNNet, TransformerNet):
        net = cls(120, 11)
        t = summary_table(net, 120)
        assert t["Param #"].sum() == n_params(net)
        assert t["Output Shape"].iloc[-1] == "(*, 11)"


@pytest.mark.parametrize("cls", [CNNRegressor, TransformerRegressor])
def test_network_conformance(cls):
    check_regressor(cls(epochs=40, patience=8, device="cpu", n_threads=1), nonlinear=True, r2_linear=0.85,
                    fast_params={"epochs": 2})


def test_resume_after_sigkill(tmp_path):
    "A training process killed with SIGKILL resumes from its last checkpoint and ends like an uninterrupted run."
    code = textwrap.dedent(f"""
        import numpy as np, sys
        from neurodecode.regressors import GRURegressor
        rng = np.random.default_rng(0)
        X = rng.normal(size=(400, 20)).astype(np.float32); Y = np.tanh(X[:, :3] * 2).astype(np.float32)
        GRURegressor(epochs=12, patience=50, device="cpu", cache_dir={str(tmp_path)!r}, n_threads=1, quiet=True).fit(X, Y)
        """)
    env = {**os.environ, "IN_TEST": "1"}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env)
    cache = ArtifactCache(tmp_path)
    deadline = time.time() + 120
    try:
        while time.time() < deadline:  # wait until at least two epochs are checkpointed, then kill hard
            mans = list((tmp_path / "regressor_fit").glob("*.json")) if (tmp_path / "regressor_fit").exists() else []
            if mans:
                key = mans[0].stem
                if cache.exists("regressor_fit", key) and cache.load("regressor_fit", key)["state"]["epoch"] >= 2:
                    break
            if proc.poll() is not None:
                pytest.fail("training finished before it could be killed; make it longer")
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 20)).astype(np.float32); Y = np.tanh(X[:, :3] * 2).astype(np.float32)
    resumed = GRURegressor(epochs=12, patience=50, device="cpu", cache_dir=tmp_path, n_threads=1, quiet=True).fit(X, Y)
    assert 2 <= resumed.resumed_from_epoch_ < 12
    straight = GRURegressor(epochs=12, patience=50, device="cpu", checkpoint=False, n_threads=1, quiet=True).fit(X, Y)
    np.testing.assert_array_equal(resumed.predict(X[:50]), straight.predict(X[:50]))
    assert list(resumed.history_.val_mse) == list(straight.history_.val_mse)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(data):
    X, Y, Xt = data["dual"]
    cpu = Ridge(10.0, device="cpu", dtype="float64").fit(X, Y).predict(Xt)
    gpu = Ridge(10.0, device="cuda", dtype="float64").fit(X, Y).predict(Xt)
    assert rel_err(gpu, cpu) < 1e-10
    rng = np.random.default_rng(0)
    Xs = rng.normal(size=(200, 20)).astype(np.float32); Ys = (Xs[:, :2] ** 2).astype(np.float32)
    g = GRURegressor(epochs=3, device="cuda", checkpoint=False).fit(Xs, Ys)
    assert g.predict(Xs).shape == (200, 2)
