"""The CI gate itself: it must fail when notebooks and library disagree, when a papermill notebook lost its
`parameters` tag, and when no test ran."""
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("ci_test", ROOT / ".ci" / "test.py")
ci = importlib.util.module_from_spec(spec)
sys.modules["ci_test"] = ci
spec.loader.exec_module(ci)


def nb(cells):
    return {"cells": cells, "metadata": {"kernelspec": {"display_name": "python3", "language": "python", "name": "python3"}},
            "nbformat": 4, "nbformat_minor": 5}


def code(src, tags=None):
    return {"cell_type": "code", "execution_count": None, "id": f"c{abs(hash(src)) % 10**8}",
            "metadata": {"tags": tags} if tags else {}, "outputs": [], "source": src}


@pytest.fixture
def scratch(tmp_path):
    "A minimal nbdev project using this repo's settings.ini and CI scripts."
    root = tmp_path / "proj"
    (root / "nbs").mkdir(parents=True)
    (root / ".ci").mkdir()
    shutil.copy(ROOT / "settings.ini", root)
    for f in ("test.py", "readme.py"):
        shutil.copy(ROOT / ".ci" / f, root / ".ci")
    (root / "nbs" / "00_x.ipynb").write_text(json.dumps(nb([code("#| default_exp x"),
                                                            code("#| export\ndef f(): return 1"),
                                                            code("assert f() == 1")])))
    ci.check_clean(root)
    assert ci.check_export(root) == ["neurodecode/__init__.py", "neurodecode/_modidx.py", "neurodecode/x.py"]
    return root


def gate(root, *args):
    return subprocess.run([sys.executable, str(root / ".ci" / "test.py"), "--skip-pytest", *args], cwd=root,
                          capture_output=True, text=True)


def test_export_in_sync_then_out_of_sync(scratch):
    assert ci.check_export(scratch) == []
    p = scratch / "nbs" / "00_x.ipynb"
    d = json.loads(p.read_text())
    d["cells"][1]["source"] = "#| export\ndef f(): return 2"
    p.write_text(json.dumps(d))
    assert ci.check_export(scratch) == ["neurodecode/x.py"]


def test_gate_fails_when_library_disagrees(scratch):
    (scratch / "neurodecode" / "x.py").write_text("def f(): return 'edited by hand'\n")
    r = gate(scratch)
    assert r.returncode == 1
    assert "FAIL  nbdev_export leaves neurodecode/ unchanged" in r.stdout
    assert r.stdout.strip().splitlines()[-1].endswith("failed") and " 0 failed" not in r.stdout.splitlines()[-1]


def test_parameters_tag(scratch):
    p = scratch / "nbs" / "04_noise.ipynb"
    p.write_text(json.dumps(nb([code("subject = 1", tags=["parameters"]), code("print(subject)")])))
    assert ci.missing_parameters_tag(scratch / "nbs") == []
    # nbdev_clean must keep the tag (settings.ini: allowed_cell_metadata_keys = tags)
    ci.check_clean(scratch)
    assert ci.missing_parameters_tag(scratch / "nbs") == []
    p.write_text(json.dumps(nb([code("subject = 1"), code("print(subject)")])))
    assert ci.missing_parameters_tag(scratch / "nbs") == ["04_noise.ipynb"]
    r = gate(scratch)
    assert r.returncode == 1 and "04_noise.ipynb lost it" in r.stdout


def test_paper2_library_notebooks_are_not_papermill(tmp_path):
    "`07*` notebooks export paper 2's library (no parameters cell); `04`-`06`, `08` onward are paper notebooks."
    for name in ("04_noise", "06b_cross_subject", "07_single_trials", "07e_guidance", "08_neuraldiffuser", "10_x"):
        (tmp_path / f"{name}.ipynb").write_text("{}")
    assert [p.stem for p in ci.papermill_notebooks(tmp_path)] == ["04_noise", "06b_cross_subject", "08_neuraldiffuser",
                                                                    "10_x"]


def test_gate_fails_when_no_notebook_ran(scratch):
    for p in (scratch / "nbs").glob("*.ipynb"):
        p.unlink()
    r = gate(scratch)
    assert r.returncode == 1
    assert "no notebook ran" in r.stdout


def test_gate_counts_notebooks_and_failures(scratch):
    (scratch / "nbs" / "index.ipynb").write_text(json.dumps(nb([{"cell_type": "markdown", "metadata": {},
                                                                   "id": "m1", "source": "# scratch"}])))
    ci.check_clean(scratch)
    subprocess.run([sys.executable, ".ci/readme.py"], cwd=scratch, check=True, capture_output=True)
    r = gate(scratch)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip().splitlines()[-1] == "6 passed, 0 failed"  # export, clean, readme, tags, 2 notebooks
    (scratch / "nbs" / "01_bad.ipynb").write_text(json.dumps(nb([code("assert 1 == 2")])))
    ci.check_clean(scratch)
    r = gate(scratch)
    assert r.returncode == 1
    assert "FAIL  notebook 01_bad.ipynb" in r.stdout
    assert r.stdout.strip().splitlines()[-1] == "6 passed, 1 failed"


def test_parse_helpers(tmp_path):
    started, failed = ci.parse_nbdev_test("No files were eligible for testing\n", "")
    assert started == [] and failed == []
    started, failed = ci.parse_nbdev_test("Starting /a/nbs/00_x.ipynb\nStarting /a/nbs/01_y.ipynb\n",
                                          "\nnbdev Tests Failed On The Following Notebooks:\n=====\n\t01_y.ipynb\n")
    assert started == ["00_x.ipynb", "01_y.ipynb"] and failed == ["01_y.ipynb"]
    # parallel workers printing on one line, a path with a space, and a notebook seen only in the --timing lines
    out = "Starting /my dir/nbs/00_x.ipynbStarting /my dir/nbs/01_y.ipynb\n00_x.ipynb: 3 secs\n02_z.ipynb: 0 secs\n"
    assert ci.parse_nbdev_test(out, "")[0] == ["00_x.ipynb", "01_y.ipynb", "02_z.ipynb"]
    x = tmp_path / "j.xml"
    x.write_text('<testsuites><testsuite tests="5" failures="1" errors="1" skipped="1"/></testsuites>')
    assert ci.parse_junit(x) == (2, 2, 1)


def test_smoke_values_check_catches_a_changed_number(tmp_path):
    "Issue 21: a regenerated smoke table that differs from the committed one is reported, cell by cell."
    from neurodecode.report import Provenance, write_table
    import pandas as pd
    ref, out = tmp_path / "ref", tmp_path / "out"
    t = pd.DataFrame({"SSIM": [0.648, 0.5], "CLIP (sim)": ["50.4%", "60.0%"]}, index=["No noise", "Added noise (8)"])
    d = out / "simulated" / "sub-01"
    d.mkdir(parents=True)
    write_table(t, d, "table6_noise", Provenance("simulated", 1))
    assert ci.update_smoke_values(out, ref) == 1
    assert not (ref / "simulated/sub-01/table6_noise.csv").read_text().startswith("#")  # no commit/time lines
    assert json.loads((ref / "PLATFORM.json").read_text())["torch"]
    assert ci.compare_smoke_values(out, ref) == []
    t.loc["No noise", "SSIM"] = 0.649
    t.loc["Added noise (8)", "CLIP (sim)"] = "61.0%"
    write_table(t, d, "table6_noise", Provenance("simulated", 1))
    got = ci.compare_smoke_values(out, ref)
    assert len(got) == 2 and "[No noise, SSIM] committed 0.648, now 0.649" in got[0] and "61.0%" in got[1]
    (d / "table6_noise.csv").unlink()
    assert ci.compare_smoke_values(out, ref) == ["simulated/sub-01/table6_noise.csv: not written by this run"]


# -- issue 25: `make reproduce` runs two notebooks at a time, each after the notebooks it reads ----------------------
def _reproduce_module():
    saved = sys.modules.get("test")
    sys.modules["test"] = ci  # reproduce.py imports the gate as `test` (its own folder is on sys.path when run)
    try:
        s = importlib.util.spec_from_file_location("ci_reproduce", ROOT / ".ci" / "reproduce.py")
        mod = importlib.util.module_from_spec(s)
        sys.modules["ci_reproduce"] = mod  # dataclasses look their module up
        s.loader.exec_module(mod)
    finally:
        if saved is None:
            sys.modules.pop("test", None)
        else:
            sys.modules["test"] = saved
    return mod


PAPER_NBS = [Path(f"nbs/{n}.ipynb") for n in ("04_noise", "05_ablation", "06_reconstruction", "06b_cross_subject",
                                            "08_nd_reconstruction", "08a_nd_guidance_grid", "08b_nd_repeats_decoding",
                                            "08c_nd_subjects")]


def test_reproduce_plan_dependencies_and_cross_subject():
    rp = _reproduce_module()
    one = {t.label: t for t in rp.plan(PAPER_NBS, [1])}
    assert "06b_cross_subject" not in one and "08c_nd_subjects" not in one  # one subject: no cross-subject table
    assert one["08a_nd_guidance_grid_sub-01"].after == ["08_nd_reconstruction_sub-01"]
    assert one["08b_nd_repeats_decoding_sub-01"].after == ["08_nd_reconstruction_sub-01"]
    # paper 1's notebooks share their stages under the pipeline's locks: they run side by side, as does 08
    assert all(one[f"{n}_sub-01"].after == [] for n in ("04_noise", "05_ablation", "06_reconstruction",
                                                         "08_nd_reconstruction"))
    four = rp.plan(PAPER_NBS, [1, 2, 5, 7])
    labels = [t.label for t in four]
    assert labels[:6] == ["04_noise_sub-01", "05_ablation_sub-01", "06_reconstruction_sub-01",
                          "08_nd_reconstruction_sub-01", "08a_nd_guidance_grid_sub-01", "08b_nd_repeats_decoding_sub-01"]
    cross = {t.label: t for t in four if "sub-" not in t.label}
    assert set(cross["06b_cross_subject"].after) == {f"{n}_sub-{s:02d}" for s in (1, 2, 5, 7)
                                                     for n in ("04_noise", "05_ablation", "06_reconstruction")}
    assert len(cross["08c_nd_subjects"].after) == 12 and all(a.startswith("08") for a in cross["08c_nd_subjects"].after)
    assert cross["08c_nd_subjects"].params["subjects"] == "1 2 5 7"
    # a subset (`--notebooks`) waits only for what it runs
    assert [t.after for t in rp.plan([PAPER_NBS[2]], [1])] == [[]]


def test_reproduce_runs_at_most_jobs_at_a_time_after_their_dependencies(tmp_path, monkeypatch):
    rp = _reproduce_module()
    log = tmp_path / "events.txt"

    def command(t):  # a stand-in notebook: logs its start and end; `bad` fails
        code = (f"import time, sys; f = open({str(log)!r}, 'a'); f.write('start {t.label} %f\\n' % time.time()); "
                f"f.flush(); time.sleep(0.4); f.write('end {t.label} %f\\n' % time.time()); f.close(); "
                f"sys.exit({1 if t.label == 'bad' else 0})")
        return [sys.executable, "-c", code]

    monkeypatch.setattr(rp, "_command", command)
    T = lambda label, after=(): rp.Task(Path("x.ipynb"), tmp_path / f"{label}.ipynb", {}, label, list(after))
    tasks = [T("a"), T("b", ["a"]), T("c"), T("bad"), T("d", ["bad"]), T("e", ["b", "c"])]
    bg = subprocess.Popen([sys.executable, "-c", "print('stand-ins ready')"]), open(tmp_path / "bg.log", "w")
    failures, times = rp.run_tasks(tasks, 2, 0.0, background=bg)
    assert failures == ["bad"] and set(times) == {"a", "b", "c", "bad", "d", "e"}
    assert bg[0].poll() == 0 and bg[1].closed  # the stand-ins' process is reported and its log closed
    ev = [ln.split() for ln in log.read_text().splitlines()]
    t = {(kind, label): float(x) for kind, label, x in ev}
    running, most = 0, 0
    for kind, _, _ in sorted(ev, key=lambda e: float(e[2])):
        running += 1 if kind == "start" else -1
        most = max(most, running)
    assert most == 2  # two at a time, never three
    assert t["start", "b"] >= t["end", "a"] and t["start", "d"] >= t["end", "bad"]  # a failure still releases d
    assert t["start", "e"] >= max(t["end", "b"], t["end", "c"])
    assert (tmp_path / "bad.log").exists()  # each job's output in runs/<notebook>.log
