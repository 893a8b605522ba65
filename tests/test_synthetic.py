"Simulated NSD: tree layout and reader round trip, determinism, incremental and interrupted builds, errors."
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from neurodecode import nsd, nsd_write, synthetic
from neurodecode import nsd_layout as layout
from neurodecode.sim import world
from neurodecode.synthetic import ensure_simulated_nsd, get_profile, make_simulated_nsd, read_ground_truth


def _digests(root: Path, exclude=()) -> dict:
    "sha256 of every file under root (relative path -> digest)."
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and not any(rel.startswith(e) for e in exclude):
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    "The smoke world (OLS betas), subject 1, built once for the module."
    root = tmp_path_factory.mktemp("sim") / "smoke"
    return make_simulated_nsd(root, (1,), "smoke", seed=0, betas_method="ols", quiet=True)


def test_tree_layout_and_reader(smoke):
    P = get_profile("smoke")
    for rel in (nsd.EXPDESIGN, nsd.STIM_INFO, nsd.STIMULI, nsd.CAPTIONS[0], nsd.roi_file(1, "nsdgeneral"),
                nsd.roi_file(1, "prf-visualrois"), nsd.roi_file(1, "streams"), nsd.betas_file(1, 2),
                nsd.timeseries_file(1, 2, P.n_runs), nsd.design_file(1, 1, 1),
                "simulation/subj01/ground_truth.hdf5", "simulation/subj01/COMPLETE.json", "simulation/shared.json",
                # the forms NSD's other clients open (tests/test_nsd_clients.py reads them as those clients do)
                nsd.CAPTIONS[1], nsd.betas_file(1, 2, "nii.gz"), layout.brainmask_file(1), layout.responses_file(1),
                layout.ctab_file("nsdgeneral"), layout.ctab_file("streams"), layout.ctab_file("prf-visualrois", 1)):
        assert (smoke / rel).is_file(), rel
    assert not list(smoke.glob(".build-*")), "temporary build folders must be gone"
    sd = nsd.load_subject(1, data_dir=smoke, cache=False, quiet=True)
    n_vox = round(P.voxel_scale * synthetic.NSD_NSDGENERAL_VOXELS[1])
    assert sd.X_train.shape == (P.n_train, n_vox) and sd.X_test.shape == (P.n_shared, n_vox)
    assert sd.images_train.shape == (P.n_train, P.image_size, P.image_size, 3)
    assert all(len(c) == 5 for c in sd.captions_test)
    # the split rule against the expdesign arrays: test = trials whose masterordering is a shared image
    ed = nsd.read_expdesign(smoke)
    mo, si = ed["masterordering"], ed["subjectim"][0]
    assert set(sd.nsd_ids_test) == set(si[mo[mo <= len(ed["sharedix"])] - 1] - 1)
    assert set(sd.nsd_ids_train) == set(si[mo[mo > len(ed["sharedix"])] - 1] - 1)
    # time series: int16, NSD's 1.8 mm TR; design: 1-based nsdIds at the onsets
    ts, tr = nsd.read_timeseries_run(1, 1, 1, smoke)
    assert ts.dtype == np.int16 and abs(tr - 4 / 3) < 1e-6 and ts.shape[-1] == P.n_volumes
    dv = np.loadtxt(smoke / nsd.design_file(1, 1, 1), dtype=int)
    gt = read_ground_truth(smoke, 1)
    on = np.flatnonzero(dv)
    assert np.array_equal(dv[on] - 1, gt.trial_nsd_ids[:len(on)])
    assert np.all(np.diff(on) % 3 == 0)  # a trial slot every 4 s = 3 volumes
    assert list(gt.roi) == list(sd.roi_labels)
    assert gt.trial_amplitudes.shape == (3 * P.n_images, n_vox)
    assert (gt.trial_amplitudes[:, ~gt.responsive] == 0).all()
    assert set(gt.hrf_index) <= set(range(20)) and len(gt.scene_graphs) == P.n_shared + 8 * P.n_train


def test_same_seed_same_bytes_and_subjects_independent(smoke, tmp_path):
    other = make_simulated_nsd(tmp_path / "again", (1,), "smoke", seed=0, betas_method="ols", quiet=True)
    a, b = _digests(smoke), _digests(other)
    assert a == b, sorted(k for k in a if a.get(k) != b.get(k))[:5]
    # adding subject 2 leaves the shared part and subject 1 untouched
    make_simulated_nsd(other, (2,), "smoke", seed=0, betas_method="ols", quiet=True)
    c = _digests(other)
    assert {k: v for k, v in c.items() if k in a} == a
    assert any(k.startswith("nsddata_betas/ppdata/subj02") for k in c)
    # another seed, another world (design, scenes and brain all change)
    assert not np.array_equal(synthetic.make_design("smoke", 1)["masterordering"],
                              synthetic.make_design("smoke", 0)["masterordering"])
    assert not np.array_equal(synthetic.make_brain("smoke", 1, 1).hrf_index, synthetic.make_brain("smoke", 0, 1).hrf_index)


def test_ensure_builds_only_missing(tmp_path, monkeypatch):
    root = tmp_path / "cache-world"
    calls = []
    real = world._build_subject
    monkeypatch.setattr(world, "_build_subject", lambda *a, **k: (calls.append(a[3]), real(*a, **k))[1])
    ensure_simulated_nsd("smoke", 0, (1,), root=root, betas_method="ols", quiet=True)
    ensure_simulated_nsd("smoke", 0, (1,), root=root, betas_method="ols", quiet=True)
    assert calls == [1]
    # the default location is under the cache dir
    assert synthetic.simulated_nsd_dir("smoke", 3).parts[-2:] == ("simulated-nsd", "smoke-seed3")


def test_interrupted_build_leaves_no_complete_subject(tmp_path, monkeypatch):
    root = tmp_path / "w"
    real = world._build_subject

    def boom(tmp, *a, **k):
        real(tmp, *a, **k)
        raise KeyboardInterrupt("simulated interruption")

    monkeypatch.setattr(world, "_build_subject", boom)
    with pytest.raises(KeyboardInterrupt):
        make_simulated_nsd(root, (1,), "smoke", betas_method="ols", quiet=True)
    assert (root / "simulation" / "shared.json").exists()
    assert not (root / "simulation" / "subj01").exists() and not (root / "nsddata_betas").exists()
    assert not list(root.glob(".build-*"))
    with pytest.raises(FileNotFoundError, match="no complete simulated subject 1"):
        read_ground_truth(root, 1)
    monkeypatch.setattr(world, "_build_subject", real)
    ensure_simulated_nsd("smoke", 0, (1,), root=root, betas_method="ols", quiet=True)
    assert json.loads((root / "simulation/subj01/COMPLETE.json").read_text())["subject"] == 1


def test_errors(smoke, tmp_path):
    with pytest.raises(ValueError, match="already holds a simulated NSD with profile 'smoke' and seed 0"):
        make_simulated_nsd(smoke, (1,), "smoke", seed=5, betas_method="ols", quiet=True)
    with pytest.raises(ValueError, match="subject must be one of 1..8"):
        make_simulated_nsd(tmp_path / "x", (9,), "smoke")
    with pytest.raises(ValueError, match="betas_method must be one of 'glmsingle', 'ols'; got 'fast'"):
        make_simulated_nsd(tmp_path / "x", (1,), "smoke", betas_method="fast")
    with pytest.raises(ValueError, match="profile must be one of 'smoke', 'default'"):
        ensure_simulated_nsd("tiny", root=tmp_path / "y")
    with pytest.raises(FileNotFoundError, match=r"make_simulated_nsd\("):
        read_ground_truth(smoke, 2)


def _as_format_1(root: Path):
    "Turn a format-2 tree back into what format 1 wrote: no client file forms, doubles in the expdesign, one caption file."
    import scipy.io
    every = {int(c): cs for c, cs in zip(*_captions_by_coco(root))}  # before the val2017 file goes
    for rel in ("nsddata/freesurfer", "nsddata_stimuli/stimuli/nsd/annotations/captions_val2017.json"):
        p = root / rel
        (p.unlink() if p.is_file() else shutil.rmtree(p))
    for pat in ("nsddata_betas/**/*.nii.gz", "nsddata/ppdata/*/func1pt8mm/brainmask.nii.gz", "nsddata/ppdata/*/behav"):
        for p in root.glob(pat):
            (p.unlink() if p.is_file() else shutil.rmtree(p))
    caps = root / layout.CAPTIONS[0]
    nsd_write.write_captions(root, every, "train2017")
    m = scipy.io.loadmat(root / layout.EXPDESIGN)
    scipy.io.savemat(root / layout.EXPDESIGN, {k: np.asarray(m[k], np.float64) for k in
                                               ("masterordering", "subjectim", "sharedix", "stimpattern")})
    info = nsd.read_stim_info(root)
    info["cocoSplit"] = "train2017"
    info.to_csv(root / layout.STIM_INFO, index=False)
    for p in [root / "simulation" / "shared.json", *root.glob("simulation/subj*/COMPLETE.json")]:
        p.write_text(json.dumps({**json.loads(p.read_text()), "format_version": 1}))
    assert caps.exists()


def _captions_by_coco(root: Path):
    info = nsd.read_stim_info(root)
    return info["cocoId"].to_numpy(), nsd.read_captions(info["nsdId"].to_numpy(), root, info)


def test_format_1_tree_is_upgraded_in_place_without_rebuilding(smoke, tmp_path, monkeypatch):
    old = tmp_path / "old"
    shutil.copytree(smoke, old)
    _as_format_1(old)
    assert not (old / layout.betas_file(1, 1, "nii.gz")).exists()
    monkeypatch.setattr(world, "_build_subject", lambda *a, **k: pytest.fail("a format-1 subject was rebuilt"))
    ensure_simulated_nsd("smoke", 0, (1,), root=old, betas_method="ols", quiet=True)
    a, b = _digests(smoke), _digests(old)
    assert set(a) == set(b), sorted(set(a) ^ set(b))[:5]
    # the upgrade rewrites the tables format 2 adds or changes; every file then matches a fresh format-2 build
    assert a == b, sorted(k for k in a if a[k] != b[k])[:5]
