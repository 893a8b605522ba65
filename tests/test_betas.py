"""neurodecode.betas: D beats A and B on simulated truth, bad inputs, input forms, options and NSD output."""
import warnings

import numpy as np
import pytest

from neurodecode.betas import (evaluate_betas, fit_single_trial, glmsingle_betas, parse_design, write_nsd_betas,
                               xval_badness)
from neurodecode.synthetic import simulate_session


def _fit(sim, **kw):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="the on/off R² mixture")
        return fit_single_trial(sim.data, sim.design, sim.tr, sim.stimdur, **kw)


@pytest.fixture(scope="module")
def smoke():
    sim = simulate_session(300, n_trials=240, n_runs=4, seed=11)
    return sim, _fit(sim)


def test_d_beats_a_and_b(smoke):
    # Margins: over seeds 0-2 at this size D leads B by >= 0.08 in accuracy and >= 0.06 in reliability (A by more);
    # the sampling SD of these medians over 240 responsive voxels is ~0.01, so 0.03 cannot be reached by chance.
    sim, fit = smoke
    sc = evaluate_betas(fit, sim.amplitudes, sim.responsive, sim.hrf_index)
    for k in "AB":
        assert sc.loc["D", "accuracy"] > sc.loc[k, "accuracy"] + 0.03, sc
        assert sc.loc["D", "reliability"] > sc.loc[k, "reliability"] + 0.03, sc
    assert sc.loc["D", "accuracy"] > 0.6
    assert sc.loc["B", "hrf_spearman"] > 0.5
    assert 1 <= fit.n_pcs <= 6  # the simulation has 4 structured-noise components
    assert fit.betas["A"].shape == (300, 240) and fit.hrf_index.shape == (300,)
    assert fit.betas["D"].dtype == np.float32 and np.isfinite(fit.betas["D"]).all()
    assert np.isfinite(fit.pc_xval).all() and fit.frac_badness.shape == (300, 20)


def test_percent_bold_units(smoke):
    # simulated data are 100 * (1 + y/100): OLS betas with the true HRF would be the amplitudes in % BOLD.
    # The fitted B betas of strongly responsive voxels should be on that scale (median ratio of SDs near 1).
    sim, fit = smoke
    r = sim.responsive
    ratio = np.median(fit.betas["B"][r].std(1) / sim.amplitudes[r].std(1))
    assert 0.7 < ratio < 2.0, ratio


def test_mismatched_lengths_error():
    sim = simulate_session(20, n_trials=40, n_runs=2, seed=0)
    with pytest.raises(ValueError, match="design and time series must have the same length"):
        fit_single_trial([d[:, :-3] for d in sim.data], sim.design, 1.0, 3.0)
    with pytest.raises(ValueError, match="design has 1 runs but data has 2"):
        fit_single_trial(sim.data, sim.design[:1], 1.0, 3.0)


def test_run_without_trials_error():
    sim = simulate_session(20, n_trials=40, n_runs=2, seed=0)
    with pytest.raises(ValueError, match="run 0 has no trials"):
        fit_single_trial(sim.data, [0 * sim.design[0], sim.design[1]], 1.0, 3.0)


def test_zero_nan_constant_voxels_excluded():
    sim = simulate_session(40, n_trials=60, n_runs=2, seed=1)
    data = [d.copy() for d in sim.data]
    for d in data:
        d[3] = 0.0  # all zero
        d[7] = 250.0  # constant
    data[1][5, 10] = np.nan
    data[0][9, 0] = np.inf
    with pytest.warns(UserWarning, match=r"4 of 40 voxels excluded \(2 with NaN/inf values, 2 all zero or constant\)"):
        fit = fit_single_trial(data, sim.design, 1.0, 3.0, n_pcs=2)
    bad = [3, 5, 7, 9]
    assert fit.excluded[bad].all() and fit.excluded.sum() == 4
    assert (fit.hrf_index[bad] == -1).all()
    for k in "ABCD":
        assert np.isnan(fit.betas[k][bad]).all()
        assert np.isfinite(np.delete(fit.betas[k], bad, 0)).all()
    # the other voxels are fitted exactly as without the bad ones (types A and B do not depend on other voxels)
    ref = fit_single_trial([np.delete(d, bad, 0) for d in sim.data], sim.design, 1.0, 3.0, n_pcs=0, fracs=1.0)
    np.testing.assert_allclose(np.delete(fit.betas["B"], bad, 0), ref.betas["B"], rtol=1e-4, atol=1e-4)


def test_all_bad_voxels_error():
    sim = simulate_session(5, n_trials=20, n_runs=2, seed=1)
    with pytest.raises(ValueError, match="all 5 voxels are NaN/inf, all zero or constant"):
        fit_single_trial([0 * d for d in sim.data], sim.design, 1.0, 3.0)


def test_no_repeats_switches_off_denoise_and_ridge():
    sim = simulate_session(30, n_trials=60, n_runs=2, seed=2)
    uniq, k = [], 0
    for d in sim.design:
        on = np.flatnonzero(d.sum(1))
        u = np.zeros((d.shape[0], 60)); u[on, k + np.arange(len(on))] = 1; k += len(on)
        uniq.append(u)
    with pytest.warns(UserWarning, match="no condition occurs in more than one run.*switched off"):
        fit = fit_single_trial(sim.data, uniq, 1.0, 3.0)
    assert fit.n_pcs == 0 and np.all(fit.frac == 1)
    np.testing.assert_array_equal(fit.betas["D"], fit.betas["C"])
    np.testing.assert_allclose(fit.betas["C"], fit.betas["B"], rtol=1e-3, atol=1e-3)
    # GLMsingle's escape hatches still work without repeats: a fixed number of PCs and a scalar fraction
    with pytest.warns(UserWarning):
        fit2 = fit_single_trial(sim.data, uniq, 1.0, 3.0, pcstop=-2, fracs=0.5)
    assert fit2.n_pcs == 2 and np.all(fit2.frac == 0.5)


def test_volume_input_and_tsv_design(tmp_path):
    sim = simulate_session(24, n_trials=40, n_runs=2, seed=3)
    mask = np.zeros((3, 4, 5), bool)
    mask.ravel()[np.random.default_rng(0).choice(60, 24, replace=False)] = True
    vols = []
    for d in sim.data:
        v = np.zeros((3, 4, 5, d.shape[1]), np.float32); v[mask] = d; vols.append(v)
    paths = []
    for r, D in enumerate(sim.design):  # NSD design TSV: one condition id per volume, 0 = none (1-based ids)
        col = np.zeros(D.shape[0], int); on, c = np.nonzero(D); col[on] = c + 1
        p = tmp_path / f"design_run{r + 1:02d}.tsv"; np.savetxt(p, col, fmt="%d"); paths.append(p)
    kw = dict(n_pcs=0, fracs=1.0)
    a = fit_single_trial(sim.data, sim.design, 1.0, 3.0, **kw)
    b = fit_single_trial(vols, paths, 1.0, 3.0, mask=mask, **kw)
    np.testing.assert_allclose(a.betas["B"], b.betas["B"], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(b.mask, mask)
    assert (parse_design(paths, [300, 300]).condition == sim.conditions + 1).all()
    out = write_nsd_betas(b, tmp_path / "nsd", subject=2, session=3)  # the mask comes with the fit
    assert out.name == "betas_session03.hdf5" and out.parent.name == "betas_fithrf_GLMdenoise_RR"
    assert "subj02" in str(out)


def test_bad_arguments():
    sim = simulate_session(10, n_trials=20, n_runs=2, seed=4)
    args = (sim.data, sim.design, 1.0, 3.0)
    with pytest.raises(ValueError, match="fracs must be fractions in"):
        fit_single_trial(*args, fracs=[0.5, 1.5])
    with pytest.raises(ValueError, match="n_pcs must be a non-negative integer"):
        fit_single_trial(*args, n_pcs=-1)
    with pytest.raises(ValueError, match="tr"):
        fit_single_trial(sim.data, sim.design, 0.0, 3.0)
    with pytest.raises(ValueError, match="run 1 has 10 voxels but run 0 has 10|every run must hold the same voxels"):
        fit_single_trial([sim.data[0], sim.data[1][:5]], sim.design, 1.0, 3.0)
    with pytest.raises(ValueError, match="kind must be one of"):
        write_nsd_betas(fit_single_trial(*args, n_pcs=0, fracs=1.0), ".", 1, 1, kind="E", mask=np.ones((10, 1, 1), bool))


def test_badness_matches_pairwise_sum():
    rng = np.random.default_rng(0)
    ref, cand = rng.normal(size=(7, 30)), rng.normal(size=(7, 30))
    test, train = rng.integers(0, 30, 50), rng.integers(0, 30, 50)
    z = lambda b: (b - ref.mean(1, keepdims=True)) / ref.std(1, keepdims=True)
    want = ((z(cand)[:, train] - z(ref)[:, test]) ** 2).sum(1)
    np.testing.assert_allclose(xval_badness([cand], ref, test, train).numpy()[:, 0], want, rtol=1e-10)


def test_write_nsd_betas_roundtrip(tmp_path, smoke):
    from neurodecode.nsd import read_betas_session
    sim, fit = smoke
    mask = np.zeros((10, 6, 6), bool); mask[:, :, :5] = True  # 300 voxels
    for kind, folder in (("D", "betas_fithrf_GLMdenoise_RR"), ("B", "betas_fithrf"), ("A", "betas_assumehrf")):
        p = write_nsd_betas(fit, tmp_path, subject=1, session=1, kind=kind, mask=mask)
        assert p.parent.name == folder and p.exists()
        got = read_betas_session(p, mask, n_trials=fit.n_trials)
        want = np.clip(np.round(fit.betas[kind].T * 300), -32768, 32767).astype(np.int16)
        np.testing.assert_array_equal(got, want)
    assert not [q for q in p.parent.iterdir() if q.name.startswith(".")]  # no temporary folders left behind
    with pytest.raises(ValueError, match="pass mask="):
        write_nsd_betas(fit, tmp_path, 1, 1)


def test_glmsingle_betas_is_a_betas_method():
    sim = simulate_session(20, n_trials=40, n_runs=2, seed=5)
    b = glmsingle_betas(sim.data, sim.design, sim.tr, sim.stimdur, kind="C", n_pcs=1)
    assert b.shape == (20, 40) and b.dtype == np.float32 and np.isfinite(b).all()
