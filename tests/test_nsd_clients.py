"""The simulated NSD read the way NSD's own clients read the real one, compared with `neurodecode.nsd.load_subject`.

Two clients are mirrored step by step (their code is not copied; each step names the line it follows):
- brain-diffuser, `data/prepare_nsddata.py` (ozcelikfu/brain-diffuser): `scipy.io.loadmat` of the design, the
  train/test split by `masterordering`, `nibabel` betas masked by `nsdgeneral > 0`, repeats averaged, `imgBrick`.
- nsd_access, `nsd_access/nsda.py` (tknapen/nsd_access, not on PyPI): `NSDAccess.read_betas`,
  `read_atlas_results`, `read_behavior`, `read_images` and `read_image_coco_info`.
The constants of brain-diffuser's script (37 sessions, 750 trials per session, 1000 shared images) are NSD's sizes;
on the smoke world they become its session count, its trials per session and `len(sharedix)`.
"""
import json
from collections import defaultdict
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import scipy.io as spio

from neurodecode import nsd
from neurodecode.nsd_layout import BETAS_VERSION, RESPONSES_COLUMNS
from neurodecode.synthetic import make_simulated_nsd


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    "The smoke world (OLS betas), subject 1."
    return make_simulated_nsd(tmp_path_factory.mktemp("clients") / "nsd", (1,), "smoke", seed=0, betas_method="ols",
                              quiet=True)


@pytest.fixture(scope="module")
def sd(root):
    "What neurodecode makes of subject 1 (brain-diffuser protocol, nsdgeneral, no cache)."
    return nsd.load_subject(1, data_dir=root, cache=False, quiet=True)


# ----------------------------------------------------------------------------- brain-diffuser, data/prepare_nsddata.py
def _bd_loadmat(filename):
    "prepare_nsddata.py's `loadmat`: spio.loadmat(struct_as_record=False, squeeze_me=True), mat_struct entries to dicts."
    data = spio.loadmat(filename, struct_as_record=False, squeeze_me=True)
    assert not any(isinstance(v, spio.matlab.mat_struct) for v in data.values())  # nsd_expdesign.mat holds no structs
    return data


def brain_diffuser_prepare(root: Path, sub: int) -> dict:
    "The arrays prepare_nsddata.py saves (fmri averaged per image, stimuli, image ids), for subject `sub`."
    stim_order = _bd_loadmat(root / "nsddata/experiments/nsd/nsd_expdesign.mat")  # stim_order_f = '...nsd_expdesign.mat'
    tps = stim_order["stimpattern"].reshape(len(stim_order["stimpattern"]), -1).sum(1)  # NSD: 750 per session
    n_sess = min(37, len(tps))  # "for i in range(37)": the sessions public at the time
    n_shared = len(stim_order["sharedix"])  # "masterordering[idx] > 1000": NSD's 1000 shared images
    sig_train, sig_test = {}, {}
    num_trials = int(tps[:n_sess].sum())  # num_trials = 37*750
    for idx in range(num_trials):  # for idx in range(num_trials): nsdId as in design csv files
        # nsdId = stim_order['subjectim'][sub-1, stim_order['masterordering'][idx] - 1] - 1 (fails on float arrays)
        nsdId = stim_order["subjectim"][sub - 1, stim_order["masterordering"][idx] - 1] - 1
        target = sig_train if stim_order["masterordering"][idx] > n_shared else sig_test
        target.setdefault(nsdId, []).append(idx)
    train_im_idx, test_im_idx = list(sig_train.keys()), list(sig_test.keys())
    roi_dir = root / f"nsddata/ppdata/subj{sub:02d}/func1pt8mm/roi/"
    betas_dir = root / f"nsddata_betas/ppdata/subj{sub:02d}/func1pt8mm/{BETAS_VERSION}/"
    mask = nib.load(roi_dir / "nsdgeneral.nii.gz").get_fdata()  # mask = nib.load(roi_dir+mask_filename).get_fdata()
    num_voxel = mask[mask > 0].shape[0]
    fmri = np.zeros((num_trials, num_voxel)).astype(np.float32)
    ends = np.r_[0, np.cumsum(tps[:n_sess])]
    for i in range(n_sess):  # beta_f = nib.load(betas_dir+beta_filename).get_fdata().astype(np.float32)
        beta_f = nib.load(betas_dir / f"betas_session{i + 1:02d}.nii.gz").get_fdata().astype(np.float32)
        fmri[ends[i]:ends[i + 1]] = beta_f[mask > 0].transpose()  # fmri[i*750:(i+1)*750] = beta_f[mask>0].transpose()
    with h5py.File(root / "nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5", "r") as f_stim:
        stim = f_stim["imgBrick"][:]  # stim = f_stim['imgBrick'][:]
    out = {"train_im_idx": train_im_idx, "test_im_idx": test_im_idx, "n_sessions": n_sess}
    for split, sig, ids in (("train", sig_train, train_im_idx), ("test", sig_test, test_im_idx)):
        fmri_array = np.zeros((len(ids), num_voxel))
        stim_array = np.zeros((len(ids),) + stim.shape[1:])
        for i, idx in enumerate(ids):  # stim_array[i] = stim[idx]; fmri_array[i] = fmri[sorted(sig_train[idx])].mean(0)
            stim_array[i] = stim[idx]
            fmri_array[i] = fmri[sorted(sig[idx])].mean(0)
        out[f"{split}_fmri"], out[f"{split}_stim"] = fmri_array, stim_array
    return out


def test_expdesign_loads_as_integers(root):
    plain = spio.loadmat(root / nsd.EXPDESIGN)  # any client's loadmat: integer arrays, 1-based
    for k in ("masterordering", "subjectim", "sharedix"):
        assert plain[k].dtype.kind in "iu", (k, plain[k].dtype)
    sq = _bd_loadmat(root / nsd.EXPDESIGN)
    assert sq["masterordering"].ndim == 1 and sq["masterordering"].min() == 1
    ed = nsd.read_expdesign(root)  # our reader sees the same values
    assert np.array_equal(ed["masterordering"], sq["masterordering"]) and np.array_equal(ed["subjectim"], sq["subjectim"])


def test_brain_diffuser_prepare_matches_load_subject(root, sd):
    bd = brain_diffuser_prepare(root, 1)
    assert bd["n_sessions"] == sd.description["n_sessions"]
    # the same images, in the same order (first appearance), on both sides of the split
    assert np.array_equal(bd["train_im_idx"], sd.nsd_ids_train) and np.array_equal(bd["test_im_idx"], sd.nsd_ids_test)
    # brain-diffuser keeps raw int16 units (x 300) and z-scores later with the train statistics (ddof 1)
    for split, X in (("train", sd.X_train), ("test", sd.X_test)):
        raw = bd[f"{split}_fmri"] / 300
        np.testing.assert_allclose(raw, X * sd.x_std + sd.x_mean, rtol=1e-5, atol=1e-5)
        mu, sigma = bd["train_fmri"].mean(0) / 300, (bd["train_fmri"] / 300).std(0, ddof=1)
        np.testing.assert_allclose((raw - mu) / sigma, X, atol=2e-4)
    assert np.array_equal(bd["train_stim"], sd.images_train) and np.array_equal(bd["test_stim"], sd.images_test)


# ----------------------------------------------------------------------------- nsd_access, nsd_access/nsda.py
class _COCOIndex:
    "What pycocotools' `COCO(annotation_file)` indexes (createIndex) and the two lookups nsd_access calls."

    def __init__(self, annotation_file):
        dataset = json.loads(Path(annotation_file).read_text())
        assert isinstance(dataset, dict), "annotation file format not supported"  # COCO's own check
        self.anns, self.imgs, self.imgToAnns = {}, {}, defaultdict(list)
        for ann in dataset.get("annotations", []):
            self.imgToAnns[ann["image_id"]].append(ann)
            self.anns[ann["id"]] = ann
        for img in dataset.get("images", []):
            self.imgs[img["id"]] = img

    def getAnnIds(self, imgIds=()):
        imgIds = list(imgIds) if isinstance(imgIds, (list, tuple, np.ndarray)) else [imgIds]
        anns = [a for i in imgIds if i in self.imgToAnns for a in self.imgToAnns[i]] if imgIds else list(self.anns.values())
        return [a["id"] for a in anns]

    def loadAnns(self, ids):
        return [self.anns[i] for i in ids]


def _coco(annotation_file):
    try:  # pycocotools is optional here: without it, index the JSON as COCO() does
        from pycocotools.coco import COCO
    except ImportError:
        return _COCOIndex(annotation_file)
    return COCO(str(annotation_file))


class NSDAccessMirror:
    "The reads of nsd_access's `NSDAccess` (same paths and readers; nibabel's removed `get_data()` -> `dataobj`)."

    def __init__(self, nsd_folder):  # NSDAccess.__init__
        self.nsd_folder = Path(nsd_folder)
        self.nsddata_folder = self.nsd_folder / "nsddata"
        self.ppdata_folder = self.nsd_folder / "nsddata" / "ppdata"
        self.nsddata_betas_folder = self.nsd_folder / "nsddata_betas" / "ppdata"
        self.behavior_file = str(self.ppdata_folder / "{subject}" / "behav" / "responses.tsv")
        self.stimuli_file = self.nsd_folder / "nsddata_stimuli" / "stimuli" / "nsd" / "nsd_stimuli.hdf5"
        self.stimuli_description_file = self.nsd_folder / "nsddata" / "experiments" / "nsd" / "nsd_stim_info_merged.csv"
        self.coco_annotation_file = str(self.nsd_folder / "nsddata_stimuli" / "stimuli" / "nsd" / "annotations" / "{}_{}.json")

    def read_betas(self, subject, session_index, data_type=BETAS_VERSION, data_format="func1pt8mm"):
        # read_betas: op.join(nsddata_betas_folder, subject, data_format, data_type), str(session_index).zfill(2)
        # (the docstring says "counting from 0", but the file names are 1-based: session_index 1 is betas_session01)
        data_folder = self.nsddata_betas_folder / subject / data_format / data_type
        out_data = np.asanyarray(nib.load(data_folder / f"betas_session{str(session_index).zfill(2)}.nii.gz").dataobj)
        return out_data[..., slice(0, out_data.shape[-1])]

    def read_atlas_results(self, subject, atlas="nsdgeneral", data_format="func1pt8mm"):
        # mapp_df = pd.read_csv(nsddata/freesurfer/fsaverage/label/{atlas}.mgz.ctab, delimiter=' ', header=None, index_col=0)
        mapp_df = pd.read_csv(self.nsddata_folder / "freesurfer" / "fsaverage" / "label" / f"{atlas}.mgz.ctab",
                              delimiter=" ", header=None, index_col=0)
        atlas_mapping = {y: x for x, y in mapp_df.to_dict()[1].items()}  # name -> code
        ipf = self.ppdata_folder / subject / data_format / "roi" / f"{atlas}.nii.gz"  # volume formats
        return np.asanyarray(nib.load(ipf).dataobj), atlas_mapping

    def read_behavior(self, subject, session_index):
        behavior = pd.read_csv(self.behavior_file.format(subject=subject), delimiter="\t")
        return behavior[behavior["SESSION"] == session_index]  # session_behavior.iloc[slice(0, len(...))]

    def read_images(self, image_index):
        self.stim_descriptions = pd.read_csv(self.stimuli_description_file, index_col=0)
        with h5py.File(self.stimuli_file, "r") as sf:  # sdataset = sf.get('imgBrick'); return sdataset[image_index]
            return sf.get("imgBrick")[image_index]

    def read_image_coco_info(self, image_index, info_type="captions"):
        stim_descriptions = pd.read_csv(self.stimuli_description_file, index_col=0)
        subj_info = stim_descriptions.iloc[image_index]  # image_index: 0-based 73k index
        annot_file = self.coco_annotation_file.format(info_type, subj_info["cocoSplit"])
        assert Path(annot_file).is_file(), f"annotations file not found: {annot_file}"  # nsda would download COCO's
        coco = _coco(annot_file)
        return coco.loadAnns(coco.getAnnIds([subj_info["cocoId"]])), subj_info["cocoSplit"]


def test_nsd_access_betas_nifti_is_hdf5_transposed(root, sd):
    na = NSDAccessMirror(root)
    mask = nsd.load_roi_mask(1, "nsdgeneral", root)
    for s in sd.description["sessions"]:
        vol = na.read_betas("subj01", s)
        assert vol.dtype == np.int16 and vol.ndim == 4
        with h5py.File(root / nsd.betas_file(1, s, "hdf5"), "r") as f:
            h = f["betas"][()]
        assert h.dtype == np.int16 and np.array_equal(vol, h.transpose(3, 2, 1, 0))  # NSD: the same array, transposed
        assert np.array_equal(vol[mask].T, nsd.read_betas_session(root / nsd.betas_file(1, s), mask))


def test_nsd_access_atlases_and_label_tables(root, sd):
    na = NSDAccessMirror(root)
    gen, gen_map = na.read_atlas_results("subj01", "nsdgeneral")
    assert gen_map == {"Unknown": 0, "nsdgeneral": 1}
    mask = gen == gen_map["nsdgeneral"]
    assert np.array_equal(mask, nsd.load_roi_mask(1, "nsdgeneral", root)) and mask.sum() == sd.X_train.shape[1]
    streams, s_map = na.read_atlas_results("subj01", "streams")
    s_name = {v: k for k, v in s_map.items()}
    # prf-visualrois is drawn per subject: its table lives in the subject's FreeSurfer label folder, read the same way
    prf_map = pd.read_csv(root / "nsddata/freesurfer/subj01/label/prf-visualrois.mgz.ctab", delimiter=" ", header=None,
                          index_col=0).to_dict()[1]
    assert prf_map == {0: "Unknown", 1: "V1v", 2: "V1d", 3: "V2v", 4: "V2d", 5: "V3v", 6: "V3d", 7: "hV4"}
    prf = np.asanyarray(nib.load(root / nsd.roi_file(1, "prf-visualrois")).dataobj)
    area = [prf_map[p][:2] if p > 0 and prf_map[p][0] == "V" else (prf_map[p] if p > 0 else None) for p in prf[mask]]
    expected = [a or (s_name[s] if s > 0 else "other") for a, s in zip(area, streams[mask])]
    assert list(sd.roi_labels) == expected
    assert {"V1", "early"} & set(expected) and len(set(expected)) > 3


def test_nsd_access_behaviour_follows_the_design(root, sd):
    na = NSDAccessMirror(root)
    beh = pd.concat([na.read_behavior("subj01", s) for s in sd.description["sessions"]])
    assert tuple(beh.columns) == RESPONSES_COLUMNS and (beh["SUBJECT"] == 1).all()
    plan = nsd.plan_subject(1, root)
    assert np.array_equal(beh["73KID"].to_numpy() - 1, plan["trial_nsd"])  # 73KID is 1-based
    ed = nsd.read_expdesign(root)
    assert np.array_equal(beh["10KID"].to_numpy(), ed["masterordering"][:len(beh)])
    # each run's trials, in TRIAL order, are the nonzero entries of that run's design file (the time series' events)
    for (s, r), g in beh.groupby(["SESSION", "RUN"]):
        dv = nsd.read_design_run(1, s, r, root)
        assert np.array_equal(g.sort_values("TRIAL")["73KID"].to_numpy(), dv[dv > 0]) and g["TRIAL"].min() == 1
    # ISOLD and MEMORYRECENT from the 73KID sequence itself
    last = {}
    for t, (k, isold, gap) in enumerate(beh[["73KID", "ISOLD", "MEMORYRECENT"]].itertuples(index=False)):
        assert isold == (k in last) and (np.isnan(gap) if k not in last else gap == t - last[k] - 1)
        last[k] = t
    assert np.all(np.diff(beh["TIME"].to_numpy()) > 0) and beh["RT"].dropna().between(0, 4000).all()
    answered = beh["BUTTON"].notna()
    assert np.array_equal(beh.loc[answered, "ISCORRECT"], ((beh["BUTTON"] == 2) == (beh["ISOLD"] == 1))[answered])
    assert 0.5 < beh["ISCORRECT"].mean() < 1  # simulated answers: better than chance, not perfect


def test_nsd_access_images_and_both_caption_files(root, sd):
    na = NSDAccessMirror(root)
    ids = np.concatenate([sd.nsd_ids_train, sd.nsd_ids_test])
    caps = list(sd.captions_train) + list(sd.captions_test)
    order = np.argsort(ids)
    imgs = na.read_images(list(ids[order]))  # h5py fancy indexing wants increasing indices
    assert np.array_equal(imgs, np.concatenate([sd.images_train, sd.images_test])[order])
    splits = set()
    for i, c in zip(ids, caps):
        anns, split = na.read_image_coco_info(int(i))
        splits.add(split)
        assert [a["caption"].strip() for a in anns] == c and len(c) == 5
    assert splits == {"train2017", "val2017"}, splits  # the subject's images are filed in both COCO files
    for split in ("train2017", "val2017"):
        d = json.loads((root / f"nsddata_stimuli/stimuli/nsd/annotations/captions_{split}.json").read_text())
        ann_ids = [a["id"] for a in d["annotations"]]
        assert len(set(ann_ids)) == len(ann_ids) and {a["image_id"] for a in d["annotations"]} <= {i["id"] for i in d["images"]}


def test_brainmask_holds_every_voxel_with_signal(root, sd):
    img = nib.load(root / "nsddata/ppdata/subj01/func1pt8mm/brainmask.nii.gz")
    assert img.get_data_dtype() == np.int16
    bm = np.asanyarray(img.dataobj)
    assert set(np.unique(bm)) == {0, 1}
    brain = bm == 1
    for name in nsd.ROI_FILES:  # NSD's ROI convention: -1 exactly outside the brain mask
        assert np.array_equal(np.asanyarray(nib.load(root / nsd.roi_file(1, name)).dataobj) != -1, brain), name
    betas = np.asanyarray(nib.load(root / nsd.betas_file(1, 1, "nii.gz")).dataobj)
    assert not betas[~brain].any() and np.count_nonzero(betas[brain].any(1)) > 0.5 * brain.sum()
    ts, _ = nsd.read_timeseries_run(1, 1, 1, root)
    assert not ts[~brain].any() and ts[brain].any(1).all()
    assert nsd.load_roi_mask(1, "nsdgeneral", root)[~brain].sum() == 0
