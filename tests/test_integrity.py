"""Issue 20: a corrupted cache, file or checkpoint is never used silently, and every error names the file and the fix.

One test (or more) per row of the issue's table that this module covers. Every corruption is done on a REAL artifact
written by the code (a smoke-profile experiment, a fitted regressor, `save_pretrained` folders), never on a hand-made
stand-in. The smoke tree is built once per module (about a minute on 2 cores) and shared: each test leaves it valid.
"""
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch

from neurodecode.checkpoints import CheckpointError
from neurodecode.core import ArtifactCache, CacheWarning, CorruptArtifactError, check_subject
from neurodecode.notebook import notebook_parameters

ROOT = Path(__file__).resolve().parents[1]


def _zero(path: Path, n: int = 64, at: float = 0.6):
    "Zero `n` bytes inside `path` (same size, other content), as a bad disk or a broken copy would."
    b = bytearray(path.read_bytes())
    i = int(len(b) * at)
    b[i:i + n] = bytes(n)
    path.write_bytes(bytes(b))


def _garbage(path: Path):
    "Replace `path` with random bytes of the same size."
    path.write_bytes(np.random.default_rng(0).bytes(path.stat().st_size))


def _one(stage_dir: Path, ext: str) -> tuple[Path, str]:
    "(the data file, its key) of the only artifact in a cache stage folder."
    (man,) = [p for p in stage_dir.glob("*.json") if not p.name.endswith(".data.json")]
    return stage_dir / json.loads(man.read_text())["file"], man.stem


def _cache_warnings(w) -> list[str]:
    return [str(x.message) for x in w if issubclass(x.category, CacheWarning)]


# -- a smoke tree, built once --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def smoke_dir(tmp_path_factory):
    "A data dir with the simulated smoke subject 1, its tiny VDVAE, latents and a ridge stage 1 (built by the code)."
    d = tmp_path_factory.mktemp("smoke")
    mp = pytest.MonkeyPatch()
    mp.setenv("NEURODECODE_DATA", str(d))
    mp.setenv("IN_TEST", "1")
    try:
        from neurodecode.pipeline import Experiment
        torch.set_num_threads(1)
        ex = Experiment(1, profile="smoke", device="cpu")
        ex.stage1("ridge", 15)
    finally:
        mp.undo()
    return d


@pytest.fixture
def ex(smoke_dir, monkeypatch):
    "A fresh `Experiment` on the shared smoke tree (as a new process would make it)."
    monkeypatch.setenv("NEURODECODE_DATA", str(smoke_dir))
    from neurodecode.pipeline import Experiment
    return Experiment(1, profile="smoke", device="cpu")


# -- row 1: 64 zeroed bytes inside a cached stage-1 .pkl --------------------------------------------------------------
def test_stage1_pkl_with_zeroed_bytes_is_recomputed_with_one_warning(ex):
    "Before: it loaded, predictions changed and the stored test_mse kept the old value. Now: one warning, recomputed."
    ref = ex.stage1("ridge", 15)
    f, key = _one(ex.cache.root / "stage1", "pkl")
    _zero(f)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        got = ex.stage1("ridge", 15)
    msgs = _cache_warnings(w)
    assert len(msgs) == 1 and str(f) in msgs[0] and "sha256" in msgs[0] and "recomputing" in msgs[0]
    np.testing.assert_array_equal(got["pred"], ref["pred"])
    z = ex.latents(15)["test"]
    assert got["test_mse"] == pytest.approx(float(np.mean((got["pred"] - z) ** 2)))  # derived value matches its source
    # without a compute function, the same corruption is an error that names the file and the fix
    f2, _ = _one(ex.cache.root / "stage1", "pkl")
    _zero(f2)
    with pytest.raises(CorruptArtifactError, match="Fix: delete") as e:
        ex.cache.load("stage1", key)
    assert str(f2) in str(e.value) and e.value.path == f2
    with pytest.warns(CacheWarning):
        ex.stage1("ridge", 15)  # leave the shared tree valid


# -- row 3: same-size garbage in a cached .npz / .pt ----------------------------------------------------------------
def test_npz_latents_with_garbage_are_recomputed(ex):
    "Before: `BadZipFile: Bad CRC-32` with no path, never recomputed. Now: one warning naming the file, recomputed."
    ref = ex.latents(15)
    f, _ = _one(ex.cache.root / "latents", "npz")
    _garbage(f)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        got = ex.latents(15)
    msgs = _cache_warnings(w)
    assert len(msgs) == 1 and str(f) in msgs[0]
    np.testing.assert_array_equal(got["train"], ref["train"])


def test_unreadable_artifact_behind_a_matching_hash_is_recomputed(ex):
    "A manifest rewritten to match garbage (a writer bug): the parse error is caught, named and recomputed."
    from neurodecode.core import _sha256_file
    ref = ex.latents(15)
    f, key = _one(ex.cache.root / "latents", "npz")
    _garbage(f)
    man = ex.cache.root / "latents" / f"{key}.json"
    m = json.loads(man.read_text())
    m.update(sha256=_sha256_file(f), size=f.stat().st_size)
    man.write_text(json.dumps(m))
    with pytest.raises(CorruptArtifactError, match=r"cannot be read as \.npz"):
        ArtifactCache(ex.cache.root).load("latents", key)
    with pytest.warns(CacheWarning, match="cannot be read as .npz"):
        got = ex.latents(15)
    np.testing.assert_array_equal(got["test"], ref["test"])


def test_manifest_without_hash_is_not_trusted(ex):
    "Decision: a manifest with no sha256 (never written by ArtifactCache) is unverifiable: recomputed, with a warning."
    ex.latents(15)
    f, key = _one(ex.cache.root / "latents", "npz")
    man = ex.cache.root / "latents" / f"{key}.json"
    m = json.loads(man.read_text())
    del m["sha256"]
    man.write_text(json.dumps(m))
    with pytest.warns(CacheWarning, match="has no sha256"):
        ex.latents(15)
    assert json.loads(man.read_text())["sha256"]  # rewritten with its hash


def test_pt_checkpoint_with_garbage_retrains_with_one_warning(tmp_path):
    "A fitted GRU's cached checkpoint (.pt) replaced by garbage: one warning naming it, a full refit, the same model."
    from neurodecode.regressors import GRURegressor
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((40, 12)).astype(np.float32), rng.standard_normal((40, 6)).astype(np.float32)
    kw = dict(epochs=3, patience=2, hidden=8, seed=0, device="cpu", cache_dir=tmp_path, quiet=True)
    ref = GRURegressor(**kw).fit(X, Y).predict(X)
    f, _ = _one(tmp_path / "regressor_fit", "pt")
    _garbage(f)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        reg = GRURegressor(**kw).fit(X, Y)
    msgs = _cache_warnings(w)
    assert len(msgs) == 1 and str(f) in msgs[0] and "GRURegressor training from epoch 0" in msgs[0]
    assert reg.resumed_from_epoch_ == 0
    np.testing.assert_allclose(reg.predict(X), ref, rtol=1e-5, atol=1e-6)


# -- row 2: load_subject's cached .npy arrays (nsd.py: not this session's file) ------------------------------------
def test_load_subject_npy_with_random_bytes_is_not_used_silently(ex):
    "Before: different images, no error (the .npy files were in no manifest). Now: sha256 checked, one warning, recomputed."
    from neurodecode import nsd
    ref = np.array(nsd.load_subject(1, data_dir=ex.ds.root).images_train)
    (f,) = sorted(Path(ex.ds.root).rglob("*.images_train.npy"))
    orig = f.read_bytes()
    b = bytearray(orig)
    b[-6000:-1000] = np.random.default_rng(0).bytes(5000)
    f.write_bytes(bytes(b))
    try:
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            got = nsd.load_subject(1, data_dir=ex.ds.root).images_train
        msgs = _cache_warnings(w)
        assert np.array_equal(got, ref) and len(msgs) == 1 and str(f) in msgs[0] and "sha256" in msgs[0]
        assert f.read_bytes() == orig  # recomputed and rewritten
    finally:
        f.write_bytes(orig)


# -- rows 4-6 and 9: the NSD readers, on the smoke tree ------------------------------------------------------------
def _linked(root: Path, dst: Path, *damaged: str) -> Path:
    "A copy of the tree `root` made of symlinks, except the `damaged` files (relative paths): real copies, to damage."
    shutil.copytree(root, dst, copy_function=os.symlink, ignore=shutil.ignore_patterns("cache"))
    for rel in damaged:
        (dst / rel).unlink()
        shutil.copyfile(root / rel, dst / rel)
    return dst


def test_simulated_world_writes_five_captions_for_every_image(ex):
    from neurodecode import nsd
    info = nsd.read_stim_info(ex.ds.root)
    caps = nsd.read_captions(info["nsdId"].to_numpy(), ex.ds.root, info)
    assert len(caps) == len(info) and {len(c) for c in caps} == {5}


def test_caption_file_with_half_its_annotations_removed_stops_the_run(ex, tmp_path):
    "Before: 48 of 96 train images got [] captions, no warning. Now: an error naming the file read and the count."
    from neurodecode import nsd
    rel = nsd.CAPTIONS[0]
    d = _linked(ex.ds.root, tmp_path / "nsd", rel)
    js = json.loads((d / rel).read_text())
    js["annotations"] = [a for a in js["annotations"] if a["image_id"] % 2]  # the annotations of every other image
    (d / rel).write_text(json.dumps(js))
    plan, info = nsd.plan_subject(1, d), nsd.read_stim_info(d)
    ids = np.concatenate([plan["ids_train"], plan["ids_test"]])
    kept = {a["image_id"] for a in js["annotations"]}  # and every image of the other caption file (val2017)
    for other in nsd.CAPTIONS[1:]:
        kept |= {a["image_id"] for a in json.loads((d / other).read_text())["annotations"]}
    n_lack = int((~info.set_index("nsdId").loc[ids, "cocoId"].isin(kept)).sum())
    assert 0 < n_lack < len(ids)
    with pytest.raises(ValueError) as e:
        nsd.load_subject(1, d, cache=False)
    msg = str(e.value)
    assert f"{n_lack} of {len(ids)} images have no caption in {d / rel}" in msg
    assert "NSD has 5 captions for every image" in msg and "make_simulated_nsd" in msg


def test_truncated_caption_json_names_the_file(ex, tmp_path):
    "Before: a bare JSONDecodeError with no file named."
    from neurodecode import nsd
    rel = nsd.CAPTIONS[0]
    d = _linked(ex.ds.root, tmp_path / "nsd", rel)
    b = (d / rel).read_bytes()
    (d / rel).write_bytes(b[: len(b) // 2])
    with pytest.raises(ValueError, match="cannot read COCO caption annotations from") as e:
        nsd.load_subject(1, d, cache=False)
    assert str(d / rel) in str(e.value) and "JSONDecodeError" in str(e.value) and "truncated" in str(e.value)


def test_stim_info_with_missing_rows_or_damage_names_the_csv(ex, tmp_path):
    "Before: `KeyError: None of [Index([...])]` with no file named (after all the betas were read)."
    import pandas as pd
    from neurodecode import nsd
    rel = nsd.STIM_INFO
    d = _linked(ex.ds.root, tmp_path / "nsd", rel)
    orig = (d / rel).read_bytes()
    info = pd.read_csv(d / rel)
    drop = sorted(nsd.plan_subject(1, d)["ids_train"][:3].tolist())  # three of the subject's images
    lines = orig.decode().splitlines(keepends=True)
    rows = set(np.flatnonzero(info["nsdId"].isin(drop)) + 1)  # + 1: the header line
    (d / rel).write_text("".join(x for i, x in enumerate(lines) if i not in rows))
    with pytest.raises(ValueError) as e:
        nsd.load_subject(1, d, cache=False)
    assert f"{d / rel} has no row for 3 of the nsdIds asked for (first: {drop}" in str(e.value)
    (d / rel).write_bytes(orig[: int(len(orig) * 0.6)])  # cut in the middle of a row
    with pytest.raises(ValueError) as e:
        nsd.load_subject(1, d, cache=False)
    assert str(d / rel) in str(e.value)
    (d / rel).write_bytes(np.random.default_rng(0).bytes(len(orig)))  # garbage
    with pytest.raises(ValueError, match="cannot parse .* as CSV") as e:
        nsd.read_stim_info(d)
    assert str(d / rel) in str(e.value) and "download it again" in str(e.value)


def test_expdesign_variables_as_strings_or_fractions_name_file_and_variable(ex, tmp_path):
    "Before: `invalid literal for int()` with no file named. Integer arrays (not only NSD's doubles) read the same."
    from scipy.io import loadmat, savemat
    from neurodecode import nsd
    rel = nsd.EXPDESIGN
    d = _linked(ex.ds.root, tmp_path / "nsd", rel)
    m = {k: v for k, v in loadmat(str(d / rel)).items() if not k.startswith("__")}
    ref = nsd.read_expdesign(ex.ds.root)
    savemat(str(d / rel), {**m, "subjectim": m["subjectim"].astype(np.int32), "masterordering": m["masterordering"].astype(np.uint16)})
    got = nsd.read_expdesign(d)
    for k in ("masterordering", "subjectim", "sharedix", "stimpattern"):
        np.testing.assert_array_equal(got[k], ref[k])
    savemat(str(d / rel), {**m, "subjectim": m["subjectim"].astype(int).astype(str)})
    with pytest.raises(ValueError, match="variable 'subjectim' in .* must hold integers") as e:
        nsd.load_subject(1, d, cache=False)
    assert str(d / rel) in str(e.value) and "download it again" in str(e.value)
    savemat(str(d / rel), {**m, "masterordering": m["masterordering"] + 0.5})
    with pytest.raises(ValueError, match=r"variable 'masterordering' in .* such as \d+\.5\. "):
        nsd.read_expdesign(d)


def test_only_nsdgeneral_with_a_wrong_shape_is_the_file_blamed(ex, tmp_path):
    "Before: the error blamed streams.nii.gz. Now: nsdgeneral.nii.gz, with the grid its neighbours and the betas agree on."
    import nibabel as nib
    from neurodecode import nsd, nsd_write
    rel = nsd.roi_file(1, "nsdgeneral")
    d = _linked(ex.ds.root, tmp_path / "nsd", rel)
    vol = np.asarray(nib.load(str(d / rel)).dataobj)
    nsd_write.write_roi(d, 1, "nsdgeneral", np.pad(vol, ((0, 1), (0, 0), (0, 0)), constant_values=-1))
    with pytest.raises(ValueError) as e:
        nsd.load_subject(1, d, cache=False)
    msg = str(e.value)
    bad = (vol.shape[0] + 1,) + vol.shape[1:]
    assert msg.startswith(f"ROI volume {d / rel} has shape {bad}; expected {vol.shape}") and "download it again" in msg
    assert "prf-visualrois.nii.gz, streams.nii.gz, betas_session01.hdf5" in msg and "streams.nii.gz has shape" not in msg
    with pytest.raises(ValueError, match=r"the mask has shape .* but ROI volume .*streams.nii.gz has shape"):
        nsd.roi_labels(1, np.ones(bad, bool), ex.ds.root)  # a mask of another grid: the mask is blamed


# -- row 10: subject validated at every entry point --------------------------------------------------------------
def _subject_entry_points(tmp: Path) -> dict:
    from neurodecode import betas, nsd, nsd_fetch, nsd_layout, nsd_write, pipeline, report, synthetic
    from neurodecode.sim.brain import make_brain
    from neurodecode.sim.profile import make_design, subject_trials
    from neurodecode.sim.world import read_ground_truth
    return {
        "nsd_layout.roi_file": lambda s: nsd_layout.roi_file(s, "nsdgeneral"),
        "nsd_layout.betas_file": lambda s: nsd_layout.betas_file(s, 1),
        "nsd.load_subject": lambda s: nsd.load_subject(s, tmp),
        "nsd.plan_subject": lambda s: nsd.plan_subject(s, tmp),
        "nsd.subject_sessions": lambda s: nsd.subject_sessions(s, tmp),
        "nsd.load_roi_mask": lambda s: nsd.load_roi_mask(s, "nsdgeneral", tmp),
        "nsd_fetch.fetch_nsd": lambda s: nsd_fetch.fetch_nsd(s, tmp, base_url="http://127.0.0.1:9/", accept_terms=True),
        "synthetic.make_simulated_nsd": lambda s: synthetic.make_simulated_nsd(tmp, s, "smoke"),
        "synthetic.ensure_simulated_nsd": lambda s: synthetic.ensure_simulated_nsd("smoke", subjects=(s,), root=tmp),
        "betas.write_nsd_betas": lambda s: betas.write_nsd_betas(None, tmp, s, 1),
        "report.output_dir": lambda s: report.output_dir(tmp, "simulated", s),
        "report.Provenance": lambda s: report.Provenance("simulated", s),
        "pipeline.resolve_data": lambda s: pipeline.resolve_data(s, tmp),
        "sim.brain.make_brain": lambda s: make_brain("smoke", 0, s),
        "sim.profile.subject_trials": lambda s: subject_trials(make_design("smoke", 0), s),
        "sim.world.read_ground_truth": lambda s: read_ground_truth(tmp, s),
        "nsd_write.write_betas_session": lambda s: nsd_write.write_betas_session(tmp, s, 1, np.zeros((1, 1)),
                                                                                 np.ones((1, 1, 1), bool)),
        "nsd_write.responses_table": lambda s: nsd_write.responses_table(make_design("smoke", 0), s),
    }


@pytest.mark.parametrize("entry", list(_subject_entry_points(Path("."))))
@pytest.mark.parametrize("subject, err, msg", [
    (1.0, TypeError, "subject must be an int 1..8; got 1.0 (float). Fix: subject=1"),
    (True, TypeError, "got True (bool)"),
    ("1", TypeError, "With papermill pass `-p subject 1`"),
    (9, ValueError, "subject must be one of 1..8; got 9"),
])
def test_subject_is_checked_where_it_enters(tmp_path, entry, subject, err, msg):
    "The same check and message at every entry point that takes a subject, before anything is read or written."
    with pytest.raises(err, match=re.escape(msg)):
        _subject_entry_points(tmp_path / "d")[entry](subject)
    assert not (tmp_path / "d").exists()


# -- row 13: orphan build folders ----------------------------------------------------------------------------------
def test_orphan_build_folders_are_removed_by_the_next_build(ex, tmp_path, monkeypatch):
    "Before: a killed `make_simulated_nsd` left `.build-subj01-*/` behind for good. Now the next build removes it."
    from neurodecode import synthetic
    from neurodecode.sim import world
    root = Path(ex.ds.root)
    # a build folder carries an OWNER file naming this process and host (seen from inside a build, on a linked copy)
    seen = []

    def interrupted(tmp, *a, **k):
        seen.append(json.loads((tmp / "OWNER").read_text()))
        raise RuntimeError("killed")
    monkeypatch.setattr(world, "_build_subject", interrupted)
    with pytest.raises(RuntimeError, match="killed"):
        synthetic.make_simulated_nsd(_linked(root, tmp_path / "copy"), 1, "smoke")
    assert seen[0]["pid"] == os.getpid() and seen[0]["host"] == socket.gethostname()
    monkeypatch.undo()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    made = {}
    for name, owner, age in [("dead", {"pid": dead.pid}, 0), ("live", {"pid": os.getpid()}, 0),
                             ("elsewhere", {"pid": dead.pid, "host": "another-host"}, 0),
                             ("old-no-owner", None, 7200), ("new-no-owner", None, 0)]:
        p = root / f".build-subj01-{name}"
        (p / "nsddata").mkdir(parents=True)
        if owner is not None:
            (p / "OWNER").write_text(json.dumps({"host": socket.gethostname(), **owner}))
        os.utime(p, (time.time() - age, time.time() - age))
        made[name] = p
    try:
        t0 = time.time()
        synthetic.ensure_simulated_nsd("smoke", subjects=(1,), root=root)  # the tree is complete: nothing is rebuilt
        assert time.time() - t0 < 5
        assert {k for k, p in made.items() if p.exists()} == {"live", "elsewhere", "new-no-owner"}
    finally:
        for p in made.values():
            shutil.rmtree(p, ignore_errors=True)


# -- table files written by the report -----------------------------------------------------------------------------
def test_damaged_table_csv_names_the_file(tmp_path):
    import pandas as pd
    from neurodecode import report
    prov = report.Provenance("simulated", 1)
    report.write_table(pd.DataFrame({"SSIM": [0.1, 0.2]}, index=["a", "b"]), tmp_path, "t", prov)
    (p,) = tmp_path.glob("t.csv")
    assert report.read_table(p).shape == (2, 1)
    with open(p, "a") as f:
        f.write("c,0.3,extra,fields\n")  # a line edited by hand
    with pytest.raises(ValueError, match="cannot parse the table") as e:
        report.read_table(p)
    assert str(p) in str(e.value) and "run the notebook that writes it again" in str(e.value)
    p.write_bytes(b"")
    with pytest.raises(ValueError, match=re.escape(str(p))):
        report.read_table(p)


# -- rows 7-8: checkpoints ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("content, expect", [
    (b"", "is empty (0 bytes"),
    ("random", "is not a PyTorch checkpoint of tensors"),
    ([1, 2, 3], "holds a list"),
    ("wrong-keys", "missing keys: "),
])
def test_vdvae_checkpoint_errors_name_file_expectation_and_source(tmp_path, content, expect):
    from neurodecode import vdvae as V
    p = tmp_path / V.VDVAE_FILE
    torch.save(V.VDVAE("tiny").state_dict(), p)  # a real checkpoint file, then damaged
    if content == "random":
        _garbage(p)
    elif content == "wrong-keys":
        pass  # the tiny model's weights for the imagenet64 architecture
    elif isinstance(content, bytes):
        p.write_bytes(content)
    else:
        torch.save(content, p)
    with pytest.raises(CheckpointError) as e:
        V.load_vdvae(weights_dir=tmp_path, device="cpu")
    msg = str(e.value)
    assert str(p) in msg and expect in msg and V.VDVAE_URL in msg and "weights_only=False" not in msg
    if content == "wrong-keys":  # counted, the first few shown, not a dump
        assert "1430 missing keys" in msg and "(1425 more)" in msg and len(msg) < 2000


def test_clip_folder_with_damaged_weights_names_the_folder(tmp_path):
    from transformers import CLIPTextModelWithProjection, CLIPVisionModelWithProjection
    from neurodecode.diffusion import load_clip, tiny_clip_configs
    tc, vc = tiny_clip_configs(width=32, image_size=32, patch_size=8, vision_layers=1, text_layers=1)
    d = tmp_path / "clip-vit-large-patch14"
    CLIPTextModelWithProjection(tc).save_pretrained(d / "text_encoder")
    CLIPVisionModelWithProjection(vc).save_pretrained(d / "image_encoder")
    (f,) = (d / "image_encoder").glob("*.safetensors")
    _garbage(f)
    with pytest.raises(CheckpointError) as e:
        load_clip(tmp_path, device="cpu")
    assert str(d / "image_encoder") in str(e.value) and "huggingface-cli download openai/clip-vit-large-patch14" in str(e.value)


# -- rows 10-11: arguments validated where they enter ------------------------------------------------------------
@pytest.mark.parametrize("kw, err, msg", [
    (dict(subject=1.0), TypeError, "got 1.0 (float). Fix: subject=1"),
    (dict(subject=True), TypeError, "got True (bool)"),
    (dict(subject="1"), TypeError, "With papermill pass `-p subject 1`"),
    (dict(subject=9), ValueError, "subject must be one of 1..8; got 9"),
    (dict(protocol="foo"), ValueError, "protocol must be one of 'brain-diffuser', 'mindeye2'; got 'foo'"),
    (dict(profile="fast"), ValueError, "profile must be one of 'smoke', 'default'; got 'fast'"),
    (dict(seed=-1), ValueError, "seed must be >= 0"),
])
def test_experiment_validates_at_construction(tmp_path, monkeypatch, kw, err, msg):
    "Each bad argument fails in `Experiment.__init__`, before any data is built, with the same message as core's."
    from neurodecode.pipeline import Experiment
    monkeypatch.setenv("NEURODECODE_DATA", str(tmp_path / "data"))
    with pytest.raises(err, match=re.escape(msg)):
        Experiment(**{"profile": "smoke", **kw})
    assert not (tmp_path / "data").exists()  # nothing was built
    if "subject" in kw:  # the same message from core's check, which every entry point uses
        with pytest.raises(err, match=re.escape(msg)):
            check_subject(kw["subject"])


# -- row 12: papermill parameters ---------------------------------------------------------------------------------
def _scratch_notebook(path: Path, marker: Path):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell("subject = 1\nseed = 0", metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell('from neurodecode.notebook import notebook_parameters\n'
                                          'notebook_parameters(globals(), "subject seed");'),
                nbformat.v4.new_code_cell(f"open({str(marker)!r}, 'w').write(str(subject))  # the 'heavy work'")]
    nbformat.write(nb, path)


@pytest.mark.parametrize("args, ok, msg", [
    (["-p", "bogus_param", "3"], False, "unknown notebook parameter bogus_param; this notebook accepts subject, seed"),
    (["-r", "subject", "1"], False, "With papermill pass `-p subject 1`"),
    (["-p", "subject", "2"], True, ""),
])
def test_papermill_unknown_or_raw_parameter_fails_before_work(tmp_path, args, ok, msg):
    "papermill only logs a name the notebook does not define; the check cell stops the run before the work cell."
    nb, marker = tmp_path / "scratch.ipynb", tmp_path / "worked.txt"
    _scratch_notebook(nb, marker)
    r = subprocess.run([sys.executable, "-m", "papermill", str(nb), str(tmp_path / "out.ipynb"), *args,
                        "--kernel", "python3"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert (r.returncode == 0) == ok, r.stderr[-3000:]
    assert marker.exists() == ok
    if ok:
        assert marker.read_text() == "2"
    else:
        assert msg in r.stderr + r.stdout


@pytest.mark.parametrize("name", ["04_noise", "05_ablation", "06_reconstruction", "06b_cross_subject"])
def test_paper_notebooks_check_parameters_right_after_the_parameters_cell(name):
    "Each paper notebook's cell after `parameters` refuses an injected unknown name and lists the accepted ones."
    nb = nbformat.read(ROOT / "nbs" / f"{name}.ipynb", as_version=4)
    (i,) = [k for k, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    params, check = nb.cells[i].source, nb.cells[i + 1].source
    assert "notebook_parameters(globals()" in check
    ns = {}
    exec(params, ns)
    exec(check, ns)  # the defaults pass
    ns = {}
    exec(params + "\nsubjcet = 2\n", ns)  # as papermill's injected cell would add it
    with pytest.raises(ValueError, match="unknown notebook parameter subjcet; this notebook accepts") as e:
        exec(check, ns)
    assert all(k in str(e.value) for k in ("data_dir", "profile", "seed"))


# -- issue 21: values a fresh run cannot reproduce came from artifacts of older weights ------------------------------
def test_stage_keys_follow_the_weights_that_ran(ex):
    "A retrained model (another fingerprint) recomputes the stages that used it instead of reusing the old artifacts."
    from neurodecode.pipeline import Experiment
    fp = ex.fingerprint("vae")
    assert fp == Experiment(1, profile="smoke", device="cpu").fingerprint("vae")  # deterministic, from the weights
    mans = lambda: sorted(p for p in (ex.cache.root / "latents").glob("*.json") if not p.name.endswith(".data.json"))
    before = mans()
    ref = ex.latents(15)
    assert mans() == before  # same weights: the cached latents
    ex._fingerprints["vae"] = "weights-of-a-retrained-vdvae"
    again = ex.latents(15)
    new = sorted(set(mans()) - set(before))
    assert len(new) == 1  # recomputed under a new key ...
    np.testing.assert_array_equal(again["test"], ref["test"])  # ... (here with the same weights, so the same values)
    for m in new:  # leave the shared tree as it was
        for p in m.parent.glob(m.stem + ".*"):
            p.unlink()
    ex._fingerprints["vae"] = fp
    assert fp in ex.provenance({"subject": 1}).weights["vdvae"]  # tables name the weights that made them
