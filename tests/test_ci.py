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
