"""neurodecode.nsd: the split rule against the expdesign arrays, sessions, caching, and every bad-input message."""
import gzip
import os
import shutil

import h5py
import numpy as np
import pytest
from scipy.io import loadmat, savemat

from neurodecode import nsd, nsd_write
from neurodecode.core import NotFoundError


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    "A random NSD-format tree (subject 1, 4 sessions x 30 trials, 8 shared images)."
    return nsd_write.write_random_nsd(tmp_path_factory.mktemp("nsd"), subject=1, n_sessions=4, trials=30, n_shared=8, seed=3)


@pytest.fixture
def copy(tree, tmp_path):
    "A private copy of the tree to damage."
    return shutil.copytree(tree, tmp_path / "nsd")


def test_split_rule_matches_expdesign(tree):
    sd = nsd.load_subject(1, tree, cache=False)
    m = loadmat(str(tree / nsd.EXPDESIGN))  # read independently of the library
    mo = m["masterordering"].ravel().astype(int)
    si = m["subjectim"].astype(int)
    n_shared = m["sharedix"].size
    trial_nsd = si[0, mo - 1] - 1
    test = mo <= n_shared
    first = lambda ids: list(dict.fromkeys(ids.tolist()))  # order of first appearance
    assert sd.nsd_ids_test.tolist() == first(trial_nsd[test])
    assert sd.nsd_ids_train.tolist() == first(trial_nsd[~test])
    assert set(sd.nsd_ids_test) == set(m["sharedix"].ravel() - 1)
    assert not set(sd.nsd_ids_train) & set(sd.nsd_ids_test)
    # repeats averaged: each image was shown 3 times; rows are images, not trials
    assert len(sd.X_train) + len(sd.X_test) == 40 and sd.description["n_trials_train"] + sd.description["n_trials_test"] == 120
    assert sd.X_train.dtype == sd.X_test.dtype == np.float32 and sd.images_train.dtype == np.uint8
    assert len(sd.captions_train) == len(sd.X_train) and all(len(c) == 5 for c in sd.captions_test)
    assert sd.roi_labels.shape == (sd.X_train.shape[1],) and sd.description["source"] == "nsd"
    # the averaged, scaled, z-scored value of one train image, recomputed from the raw files
    mask = nsd.load_roi_mask(1, "nsdgeneral", tree)
    raw = np.concatenate([nsd.read_betas_session(tree / nsd.betas_file(1, s), mask) for s in range(1, 5)]) / 300
    avg = np.stack([raw[trial_nsd == i].mean(0) for i in sd.nsd_ids_train])
    mu, sd_ = avg.mean(0), avg.std(0, ddof=1)
    np.testing.assert_allclose(sd.X_train, (avg - mu) / sd_, atol=1e-4)
    avg_te = np.stack([raw[trial_nsd == i].mean(0) for i in sd.nsd_ids_test])
    np.testing.assert_allclose(sd.X_test, (avg_te - mu) / sd_, atol=1e-4)


def test_sessions_protocols_and_simulated_note(tmp_path):
    root = nsd_write.write_random_nsd(tmp_path / "s", subject=5, n_sessions=3, trials=30, simulated=True)
    sd = nsd.load_subject(5, root, protocol="mindeye2", cache=False)
    d = sd.description
    assert d["source"] == "simulated" and d["sessions"] == [1, 2, 3] and d["protocol_sessions"] == 40
    assert d["note"] == "simulated subject 5 holds 3 of the protocol's 40 sessions"
    assert "simulated" in repr(sd)


def test_protocol_sessions_capped(tmp_path):
    # a design of 3 sessions read as if a subject completed only 2 (stimulus table), protocol capped at 2
    root = nsd_write.write_random_nsd(tmp_path / "s", subject=1, n_sessions=3, trials=30)
    design, info = nsd.read_expdesign(root), nsd.read_stim_info(root)
    coco = info["cocoId"].to_numpy()
    nsd_write.write_stim_info(root, nsd_write.stim_info_table(design, coco, info["cocoSplit"].to_numpy(), n_sessions={1: 2}))
    assert nsd.plan_subject(1, root)["sessions"] == [1, 2]
    sd = nsd.load_subject(1, root, cache=False)
    assert sd.description["n_trials_train"] + sd.description["n_trials_test"] == 60


def test_cache_hit_and_invalidation(copy, tmp_path):
    c = tmp_path / "cache"
    a = nsd.load_subject(1, copy, cache_dir=c)
    b = nsd.load_subject(1, copy, cache_dir=c)
    np.testing.assert_array_equal(a.X_train, b.X_train)
    assert isinstance(b.images_train, np.memmap)
    assert len(list((c / "nsd_subject").glob("*.npz"))) == 1
    p = copy / nsd.betas_file(1, 2)  # new betas for session 2: a new key, recomputed
    mask = nsd.load_roi_mask(1, "nsdgeneral", copy)
    nsd_write.write_betas_session(copy, 1, 2, np.random.default_rng(9).normal(size=(30, mask.sum())), mask)
    os.utime(p, ns=(p.stat().st_atime_ns, p.stat().st_mtime_ns + 10**9))
    d = nsd.load_subject(1, copy, cache_dir=c)
    assert len(list((c / "nsd_subject").glob("*.npz"))) == 2 and not np.allclose(d.X_train, a.X_train)


def test_cached_equals_uncached(tree, tmp_path):
    a = nsd.load_subject(1, tree, cache=False, image_size=8)
    b = nsd.load_subject(1, tree, cache_dir=tmp_path / "c", image_size=8)
    for k in ("X_train", "X_test", "images_train", "images_test", "nsd_ids_train", "roi_labels"):
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k))
    assert a.captions_test == b.captions_test and a.description == b.description


# ---- bad input: each case and its message -------------------------------------------------------------------------

def test_bad_arguments(tree):
    with pytest.raises(ValueError, match="subject must be one of 1..8; got 9"):
        nsd.load_subject(9, tree)
    with pytest.raises(ValueError, match="protocol must be one of 'brain-diffuser', 'mindeye2'; got 'nsd'"):
        nsd.load_subject(1, tree, protocol="nsd")
    with pytest.raises(ValueError, match="roi must be one of 'nsdgeneral', 'V1'"):
        nsd.load_subject(1, tree, roi="V9")
    with pytest.raises(ValueError, match="subject 2 has no images"):
        nsd.load_subject(2, tree, cache=False)


def test_missing_files_name_file_place_and_fetch(tmp_path, copy):
    with pytest.raises(NotFoundError) as e:
        nsd.load_subject(1, tmp_path / "empty")
    msg = str(e.value)
    assert "nsd_expdesign.mat) not found" in msg and str(tmp_path / "empty" / nsd.EXPDESIGN) in msg
    assert "fetch_nsd(subject=1" in msg and "accept_terms=True" in msg and "make_simulated_nsd" in msg
    (copy / nsd.betas_file(1, 3)).unlink()
    with pytest.raises(NotFoundError) as e:
        nsd.load_subject(1, copy, cache=False)
    msg = str(e.value)
    assert "betas of subject 1 session 3 not found" in msg and str(copy / nsd.betas_file(1, 3)) in msg
    assert str(copy / nsd.betas_file(1, 3, "nii.gz")) in msg and "fetch_nsd(subject=1" in msg
    (copy / nsd.roi_file(1, "nsdgeneral")).unlink()
    with pytest.raises(NotFoundError, match=r"ROI file nsdgeneral.nii.gz of subject 1 not found"):
        nsd.load_roi_mask(1, "nsdgeneral", copy)
    (copy / nsd.STIMULI).unlink()
    with pytest.raises(NotFoundError, match=r"NSD stimuli \(nsd_stimuli.hdf5\) not found(.|\n)*fetch_nsd"):
        nsd.read_images([0], copy)


def _rewrite_betas(path, data):
    with h5py.File(path, "w") as f:
        f.create_dataset("betas", data=data)


def test_wrong_shape_dtype_and_trials(copy):
    mask = nsd.load_roi_mask(1, "nsdgeneral", copy)
    p = copy / nsd.betas_file(1, 1)
    X, Y, Z = mask.shape
    _rewrite_betas(p, np.zeros((30, Z, Y), np.int16))
    with pytest.raises(ValueError, match=r"must be 4-D \(trials x Z x Y x X\); got shape \(30, 8, 7\)"):
        nsd.load_subject(1, copy, cache=False)
    _rewrite_betas(p, np.zeros((30, Z, Y, X), np.int32))
    with pytest.raises(TypeError, match="must be int16 .* or floating; got int32"):
        nsd.load_subject(1, copy, cache=False)
    _rewrite_betas(p, np.zeros((29, Z, Y, X), np.int16))
    with pytest.raises(ValueError, match="have 29 trials; the experiment design says 30"):
        nsd.load_subject(1, copy, cache=False)


def test_mask_grid_mismatch(copy):
    mask = nsd.load_roi_mask(1, "nsdgeneral", copy)
    X, Y, Z = mask.shape
    _rewrite_betas(copy / nsd.betas_file(1, 1), np.zeros((30, Z, Y + 1, X), np.int16))
    with pytest.raises(ValueError, match=r"the ROI mask has shape \(6, 7, 8\) but the betas grid .* is \(6, 8, 8\)"):
        nsd.load_subject(1, copy, cache=False)
    big = np.zeros((X + 1, Y, Z), int); big[0, 0, 0] = 1
    nsd_write.write_roi(copy, 1, "prf-visualrois", big)
    with pytest.raises(ValueError, match="ROI volume .*prf-visualrois.nii.gz has shape"):
        nsd.roi_labels(1, mask, copy)


def test_nan_voxels(copy):
    mask = nsd.load_roi_mask(1, "nsdgeneral", copy)
    (copy / nsd.betas_file(1, 2)).unlink()
    vol = np.random.default_rng(0).normal(size=mask.shape + (30,)).astype(np.float32) * 300
    vol[np.argwhere(mask)[0][0], np.argwhere(mask)[0][1], np.argwhere(mask)[0][2], 4] = np.nan
    nsd_write.save_nifti(copy / nsd.betas_file(1, 2, "nii.gz"), vol)
    with pytest.raises(ValueError, match="1 voxels inside the ROI mask have NaN or infinite betas in .*betas_session02.nii.gz"):
        nsd.load_subject(1, copy, cache=False)


def test_constant_voxels(copy):
    mask = nsd.load_roi_mask(1, "nsdgeneral", copy)
    for s in range(1, 5):  # zero betas in two voxels in every session: outside the brain mask, as NSD stores
        p = copy / nsd.betas_file(1, s)
        with h5py.File(p, "r+") as f:
            d = f["betas"]
            for x, y, z in np.argwhere(mask)[:2]:
                d[:, z, y, x] = 0
    with pytest.raises(ValueError, match="2 of 40 voxels have constant betas across the training images"):
        nsd.load_subject(1, copy, cache=False)


def test_truncated_hdf5_and_nifti(copy):
    p = copy / nsd.betas_file(1, 1)
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    with pytest.raises(ValueError, match=r"cannot open betas file .*betas_session01.hdf5.*truncated or corrupt"):
        nsd.load_subject(1, copy, cache=False)
    # a truncated .nii.gz (gzip stream cut short)
    mask = nsd.load_roi_mask(1, "nsdgeneral", copy)
    p.unlink()
    q = nsd_write.write_betas_session(copy, 1, 1, np.ones((30, mask.sum())), mask, fmt="nii.gz")
    raw = gzip.decompress(q.read_bytes())
    q.write_bytes(gzip.compress(raw)[: len(gzip.compress(raw)) * 2 // 3])
    with pytest.raises(ValueError, match=r"betas_session01.nii.gz.*(truncated|corrupt)"):
        nsd.load_subject(1, copy, cache=False)
    s = copy / nsd.STIMULI
    s.write_bytes(s.read_bytes()[:1000])
    with pytest.raises(ValueError, match="cannot open .*nsd_stimuli.hdf5.*truncated or corrupt"):
        nsd.read_images([0], copy)


def test_bad_design_and_stimuli(copy):
    m = loadmat(str(copy / nsd.EXPDESIGN))
    savemat(str(copy / nsd.EXPDESIGN), {"masterordering": m["masterordering"], "subjectim": m["subjectim"]})
    with pytest.raises(ValueError, match="has no variable 'sharedix'"):
        nsd.load_subject(1, copy, cache=False)
    (copy / nsd.EXPDESIGN).write_bytes(b"MATLAB 5.0 garbage")
    with pytest.raises(ValueError, match="corrupt or truncated"):
        nsd.read_expdesign(copy)
    with h5py.File(copy / nsd.STIMULI, "w") as f:
        f.create_dataset("imgBrick", data=np.zeros((50, 4, 4, 3), np.float32))
    with pytest.raises(ValueError, match=r"imgBrick in .* must be N x H x W x 3 uint8; got \(50, 4, 4, 3\) float32"):
        nsd.read_images([0], copy)
    with pytest.raises(ValueError, match=r"nsd_ids must be in 0..49"):
        with h5py.File(copy / nsd.STIMULI, "w") as f:
            f.create_dataset("imgBrick", data=np.zeros((50, 4, 4, 3), np.uint8))
        nsd.read_images([50], copy)


def test_writers_reject_bad_input(tmp_path):
    with pytest.raises(ValueError, match="subject must be one of 1..8; got 0"):
        nsd_write.write_roi(tmp_path, 0, "nsdgeneral", np.zeros((2, 2, 2), int))
    with pytest.raises(ValueError, match="volume_int must be >= -1"):
        nsd_write.write_roi(tmp_path, 1, "nsdgeneral", np.full((2, 2, 2), -2))
    with pytest.raises(ValueError, match="name must be a plain file name"):
        nsd_write.write_roi(tmp_path, 1, "../x", np.zeros((2, 2, 2), int))
    with pytest.raises(ValueError, match="data_4d must have 4 dimensions"):
        nsd_write.write_timeseries_run(tmp_path, 1, 1, 1, np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match="data_4d contains 1 NaN"):
        nsd_write.write_timeseries_run(tmp_path, 1, 1, 1, np.array([np.nan]).reshape(1, 1, 1, 1))
    with pytest.raises(ValueError, match="does not fit NSD's int16"):
        nsd_write.write_timeseries_run(tmp_path, 1, 1, 1, np.full((1, 1, 1, 2), 40000))
    with pytest.raises(ValueError, match="onsets must be >= 0"):
        nsd_write.write_design_run(tmp_path, 1, 1, 1, [0, -1])
    with pytest.raises(ValueError, match="betas contains 1 NaN"):
        nsd_write.write_betas_session(tmp_path, 1, 1, np.array([[np.nan]]), np.ones((1, 1, 1), bool))
    with pytest.raises(ValueError, match=r"nsdId must be 0..1, each once"):
        nsd_write.write_stim_info(tmp_path, {"nsdId": [0, 0], "cocoId": [1, 2], "cocoSplit": ["train2017"] * 2,
                                       "shared1000": [True, False]})
    with pytest.raises(TypeError, match="captions of cocoId 5 must be a list of strings"):
        nsd_write.write_captions(tmp_path, {5: "a caption"})
    with pytest.raises(ValueError, match="ids must be distinct"):
        nsd_write.write_stimuli(tmp_path, np.zeros((2, 4, 4, 3), np.uint8), ids=[3, 3])
    assert not list(tmp_path.rglob("*.tmp*"))  # failed writes leave nothing behind


def test_timeseries_design_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    ts = rng.normal(100, 5, (3, 4, 5, 12)).astype(np.float32)
    nsd_write.write_timeseries_run(tmp_path, 7, 12, 3, ts)
    data, tr = nsd.read_timeseries_run(7, 12, 3, tmp_path)
    np.testing.assert_array_equal(data, ts)
    assert abs(tr - 4 / 3) < 1e-6
    v = np.zeros(12, int); v[::3] = [5, 73000, 1, 2]
    nsd_write.write_design_run(tmp_path, 7, 12, 3, v)
    assert (tmp_path / nsd.design_file(7, 12, 3)).read_text() == "".join(f"{x}\n" for x in v)
    at, ids = nsd.design_events(nsd.read_design_run(7, 12, 3, tmp_path))
    assert at.tolist() == [0, 3, 6, 9] and ids.tolist() == [4, 72999, 0, 1]


def test_locate_and_is_simulated(tree, tmp_path, monkeypatch):
    assert nsd.locate_nsd(tree) == tree and nsd.locate_nsd(tmp_path) is None
    monkeypatch.setenv("NEURODECODE_DATA", str(tree))
    assert nsd.locate_nsd() == tree
    assert not nsd.is_simulated(tree)
    (tmp_path / "simulation").mkdir()
    assert nsd.is_simulated(tmp_path)
