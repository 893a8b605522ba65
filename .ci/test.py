#!/usr/bin/env python
"""`make test`: the project's whole gate, ending with one line `N passed, N failed`.

Steps (each one counts as a test in the closing line):
  1. `nbdev_export` leaves the library unchanged  (notebooks and neurodecode/ agree)
  2. `nbdev_clean` leaves the notebooks unchanged (no outputs or stray metadata committed)
  3. every papermill notebook keeps its `parameters` tag (else `-p subject N` is silently ignored)
  4. `nbdev_test` on every notebook             (one test per notebook)
  5. `pytest tests/`                              (one test per pytest test)
The run fails when any step fails, and also when no notebook or no pytest test ran:
`nbdev_test` prints `Success.` and exits 0 even when it tested nothing.

Usage: python .ci/test.py [--skip-pytest] [--pytest-args "..."] [--flags "slow"]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: notebooks run by papermill (paper experiments): `NN_*.ipynb` with NN >= 04, as DESIGN.md lays out ...
PAPERMILL_GLOB = re.compile(r"^(0[4-9]|[1-9]\d)[a-z]?_.*\.ipynb$")
#: ... except paper 2's library notebooks (`07*`: single trials, shared space, guidance), which export modules
LIBRARY_GLOB = re.compile(r"^07[a-z]?_.*\.ipynb$")


@dataclass
class Tally:
    passed: int = 0
    failed: int = 0
    notes: list = field(default_factory=list)

    def ok(self, what: str):
        self.passed += 1
        print(f"PASS  {what}", flush=True)

    def bad(self, what: str, why: str = ""):
        self.failed += 1
        self.notes.append(f"{what}: {why}" if why else what)
        print(f"FAIL  {what}" + (f"\n      {why}" if why else ""), flush=True)


def snapshot(paths, root: Path = ROOT) -> dict:
    "sha256 of every file under `paths` (files or folders), keyed by path relative to `root`."
    out = {}
    for p in paths:
        p = Path(p)
        files = [p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file() and "__pycache__" not in q.parts)
        for f in files:
            out[str(f.relative_to(root))] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def changed(before: dict, after: dict) -> list:
    "Relative paths added, removed or modified between two snapshots."
    return sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))


#: nbdev_test runs one notebook per core side by side; torch/MKL/OpenMP would start a thread per core in each, and the
#: oversubscribed spin-waits made a 80 s notebook take 500 s on 2 cores. One thread per notebook (unless set).
SINGLE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


def run(cmd, env_extra: dict | None = None, **kw) -> subprocess.CompletedProcess:
    "Run `cmd` without IN_TEST in its environment: with IN_TEST set, `nbdev_export` silently exports nothing."
    env = {k: v for k, v in os.environ.items() if k != "IN_TEST"}
    env.update({k: v for k, v in (env_extra or {}).items() if k not in os.environ})
    return subprocess.run(cmd, cwd=kw.pop("cwd", ROOT), text=True, capture_output=True, env=env, **kw)


def bin_(name: str) -> str:
    "An executable next to this interpreter (the project's venv), else from PATH."
    cand = Path(sys.executable).parent / name
    return str(cand) if cand.exists() else name


def check_export(root: Path = ROOT) -> list:
    "Run `nbdev_export`; return the library files it changed (empty means in sync)."
    lib = root / "neurodecode"
    before = snapshot([lib], root)
    r = run([bin_("nbdev_export")], cwd=root)
    if r.returncode:
        raise RuntimeError(f"nbdev_export failed:\n{r.stderr[-3000:]}")
    return changed(before, snapshot([lib], root))


def check_clean(root: Path = ROOT) -> list:
    "Run `nbdev_clean`; return the notebooks it changed (empty means clean)."
    nbs = root / "nbs"
    before = snapshot([nbs], root)
    r = run([bin_("nbdev_clean")], cwd=root)
    if r.returncode:
        raise RuntimeError(f"nbdev_clean failed:\n{r.stderr[-3000:]}")
    return changed(before, snapshot([nbs], root))


def papermill_notebooks(nbs: Path) -> list:
    return sorted(p for p in nbs.glob("*.ipynb") if PAPERMILL_GLOB.match(p.name) and not LIBRARY_GLOB.match(p.name))


def missing_parameters_tag(nbs: Path) -> list:
    "Papermill notebooks that have no cell tagged `parameters`."
    bad = []
    for p in papermill_notebooks(nbs):
        cells = json.loads(p.read_text(encoding="utf-8"))["cells"]
        if not any("parameters" in c.get("metadata", {}).get("tags", []) for c in cells):
            bad.append(p.name)
    return bad


def parse_nbdev_test(stdout: str, stderr: str) -> tuple[list, list]:
    "From `nbdev_test --do_print` output, the notebooks that ran and those that failed."
    # parallel workers can print on one line ("Starting a.ipynbStarting b.ipynb"), so no anchors; the --timing
    # lines ("a.ipynb: 3 secs") name every notebook that finished as well
    started = (re.findall(r"Starting (.+?\.ipynb)", stdout)
               + re.findall(r"^\s*(.+?\.ipynb): \d+ secs\s*$", stdout, flags=re.M))
    started = list(dict.fromkeys(Path(s).name for s in started))
    failed = []
    m = re.search(r"nbdev Tests Failed On The Following Notebooks:\n=+\n(.*)", stderr, flags=re.S)
    if m:
        failed = [ln.strip() for ln in m.group(1).splitlines() if ln.strip().endswith(".ipynb")]
    return started, failed


def run_nbdev_test(root: Path, flags: str = "", env: dict | None = None) -> tuple[list, list, str]:
    cmd = [bin_("nbdev_test"), "--do_print", "--timing"]
    if flags:
        cmd += ["--flags", flags]
    t0 = time.time()
    r = run(cmd, env_extra={**SINGLE_THREAD, **(env or {})}, cwd=root)
    started, failed = parse_nbdev_test(r.stdout, r.stderr)
    timing = "\n".join(ln for ln in r.stdout.splitlines() if re.match(r".+\.ipynb: \d+ secs", ln))
    if r.returncode and not failed:  # crashed before reporting: count every notebook that started as failed
        failed = started or ["nbdev_test"]
    print(f"      nbdev_test took {time.time() - t0:.0f} s\n" + "\n".join("      " + t for t in timing.splitlines()))
    if r.returncode:
        sys.stderr.write(r.stderr[-20000:])
    return started, failed, r.stdout


#: committed smoke-size tables: what `make test` regenerates must equal them (issue 21: committed values that a fresh
#: run does not give were undetected). Same folder layout as figures/: <source>/sub-0N/<table>.csv
SMOKE_VALUES = ROOT / "tests" / "fixtures" / "smoke_values"
SMOKE_OUT = ROOT / ".ci" / "out" / "smoke-figures"


def platform_signature() -> dict:
    "What the numbers may depend on beyond the code (the library's own definition, also in every table's provenance)."
    from neurodecode.report import platform_signature as sig
    return sig()


def _read_values(path: Path):
    import pandas as pd
    return pd.read_csv(path, comment="#", index_col=0)


def compare_smoke_values(out: Path = SMOKE_OUT, ref: Path = SMOKE_VALUES) -> list[str]:
    "Differences between the smoke tables just written under `out` and the committed ones (empty: identical)."
    import numpy as np
    problems = []
    refs = sorted(ref.rglob("*.csv"))
    if not refs:
        return [f"no committed smoke tables under {ref.relative_to(ROOT)}"]
    for r in refs:
        rel = r.relative_to(ref)
        g = out / rel
        if not g.exists():
            problems.append(f"{rel}: not written by this run")
            continue
        a, b = _read_values(r), _read_values(g)
        if list(a.columns) != list(b.columns) or list(map(str, a.index)) != list(map(str, b.index)):
            problems.append(f"{rel}: rows/columns changed: {list(a.index)} x {list(a.columns)} -> "
                            f"{list(b.index)} x {list(b.columns)}")
            continue
        for c in a.columns:
            x, y = a[c].to_numpy(), b[c].to_numpy()
            if x.dtype.kind in "fi" and y.dtype.kind in "fi":
                bad = ~np.isclose(x.astype(float), y.astype(float), rtol=1e-9, atol=1e-12, equal_nan=True)
            else:
                bad = np.array([str(u) != str(v) for u, v in zip(x, y)])
            for i in np.flatnonzero(bad)[:3]:
                problems.append(f"{rel}: [{a.index[i]}, {c}] committed {x[i]}, now {y[i]}")
    return problems


def update_smoke_values(out: Path = SMOKE_OUT, ref: Path = SMOKE_VALUES) -> int:
    "Replace the committed smoke tables with this run's (after an intended change of the numbers)."
    import shutil
    if ref.exists():
        shutil.rmtree(ref)
    n = 0
    for g in sorted(out.rglob("*.csv")):
        dst = ref / g.relative_to(out)
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_text("".join(ln for ln in g.read_text().splitlines(keepends=True) if not ln.startswith("#")))
        n += 1
    (ref / "PLATFORM.json").write_text(json.dumps(platform_signature(), indent=1) + "\n")
    return n


def parse_junit(path: Path) -> tuple[int, int, int]:
    "(passed, failed, skipped) from a pytest junit XML file."
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    tests = sum(int(s.get("tests", 0)) for s in suites)
    failed = sum(int(s.get("failures", 0)) + int(s.get("errors", 0)) for s in suites)
    skipped = sum(int(s.get("skipped", 0)) for s in suites)
    return tests - failed - skipped, failed, skipped


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--skip-pytest", action="store_true")
    ap.add_argument("--pytest-args", default="")
    ap.add_argument("--flags", default="", help="nbdev_test flags to run that are normally skipped (e.g. 'slow')")
    ap.add_argument("--update-smoke-values", action="store_true",
                    help="after an intended change of the numbers: write this run's smoke tables to "
                         "tests/fixtures/smoke_values (commit them with the change)")
    args = ap.parse_args(argv)
    t0 = time.time()
    t = Tally()
    skipped = 0

    try:
        diff = check_export()
        t.ok("nbdev_export leaves neurodecode/ unchanged") if not diff else t.bad(
            "nbdev_export leaves neurodecode/ unchanged",
            f"the library was out of sync with nbs/ ({', '.join(diff)}); run nbdev_export and commit both")
    except RuntimeError as e:
        t.bad("nbdev_export", str(e))
    try:
        diff = check_clean()
        t.ok("nbdev_clean leaves nbs/ unchanged") if not diff else t.bad(
            "nbdev_clean leaves nbs/ unchanged", f"notebooks were not clean ({', '.join(diff)}); run nbdev_clean and commit")
    except RuntimeError as e:
        t.bad("nbdev_clean", str(e))

    r = run([sys.executable, str(ROOT / ".ci" / "readme.py"), "--check"])
    t.ok("README.md is generated from nbs/index.ipynb") if not r.returncode else t.bad(
        "README.md is generated from nbs/index.ipynb", r.stdout.strip())

    bad = missing_parameters_tag(ROOT / "nbs")
    pm = papermill_notebooks(ROOT / "nbs")
    if bad:
        t.bad("papermill notebooks keep their 'parameters' tag",
              f"{', '.join(bad)} lost it: papermill would silently ignore -p subject N")
    else:
        t.ok(f"papermill notebooks keep their 'parameters' tag ({len(pm)} notebooks)")

    # pytest runs beside nbdev_test (3 single-thread processes on 2 cores): serial, pytest's one process left a core
    # idle for ~4 minutes. Every process is pinned to one BLAS/torch thread, else spin-waiting threads of one process
    # stall the others (measured: a smoke 04_noise took 18 min with 2 threads under load, 2.4 min with 1)
    py = None
    if not args.skip_pytest:
        junit = ROOT / ".ci" / "out" / "pytest.xml"
        junit.parent.mkdir(parents=True, exist_ok=True)
        junit.unlink(missing_ok=True)
        cmd = [sys.executable, "-m", "pytest", "tests", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}"]
        cmd += args.pytest_args.split()
        log = open(ROOT / ".ci" / "out" / "pytest.log", "w+")
        t_py = time.time()
        py = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                              env={**os.environ, **SINGLE_THREAD})
    import shutil
    shutil.rmtree(SMOKE_OUT, ignore_errors=True)
    started, failed, _ = run_nbdev_test(ROOT, args.flags, env={"NEURODECODE_SMOKE_FIGURES": str(SMOKE_OUT)})
    if not started:
        t.bad("nbdev_test", "no notebook ran (nbdev_test says 'Success.' even then)")
    for nb in started:
        t.bad(f"notebook {nb}", "see the traceback above") if nb in failed else t.ok(f"notebook {nb}")
    what = "the paper notebooks' smoke tables equal the committed ones (tests/fixtures/smoke_values)"
    if args.update_smoke_values:
        print(f"      wrote {update_smoke_values()} smoke tables to {SMOKE_VALUES.relative_to(ROOT)}; commit them")
    written, committed = any(SMOKE_OUT.rglob("*.csv")), any(SMOKE_VALUES.rglob("*.csv"))
    diffs = compare_smoke_values() if written or committed else []
    plat = json.loads((SMOKE_VALUES / "PLATFORM.json").read_text()) if (SMOKE_VALUES / "PLATFORM.json").exists() else {}
    here = platform_signature()
    if not written and not committed:
        skipped += 1  # a project without paper notebooks (the gate's own tests) writes none and has none to compare
        print(f"SKIP  {what}: no paper notebook wrote smoke tables")
    elif not diffs:
        t.ok(what)
    elif plat and {k: plat.get(k) for k in ("cpu", "isa", "torch")} != {k: here[k] for k in ("cpu", "isa", "torch")}:
        skipped += 1  # float results of training legitimately differ across CPU vector units and torch builds
        print(f"SKIP  {what}: {len(diffs)} differences, but the committed values come from another platform "
              f"({plat}; here {here}); e.g. " + "; ".join(diffs[:3]))
    else:
        t.bad(what, f"{len(diffs)} differences, e.g.\n        " + "\n        ".join(diffs[:8]) +
              "\n      Fix: if the change of numbers is intended, run `python .ci/test.py --update-smoke-values` and "
              "commit tests/fixtures/smoke_values with it; otherwise find what changed them")

    if py is not None:
        rc = py.wait()
        log.seek(0)
        sys.stdout.write(log.read())
        log.close()
        print(f"      pytest took {time.time() - t_py:.0f} s (beside nbdev_test)")
        if not junit.exists():
            t.bad("pytest", f"pytest exited {rc} without a report")
        else:
            p, f, s = parse_junit(junit)
            skipped += s
            t.passed += p
            t.failed += f
            print(f"{'PASS' if not f else 'FAIL'}  pytest tests/: {p} passed, {f} failed, {s} skipped")
            if p + f == 0:
                t.bad("pytest", "no pytest test ran")
            elif f:
                t.notes.append(f"pytest: {f} failed")

    print(f"\nmake test took {time.time() - t0:.0f} s")
    for n in t.notes:
        print(f"  failed: {n}")
    total_ran = t.passed + t.failed
    if total_ran == 0:
        t.failed += 1
        print("  failed: no test ran at all")
    if skipped:
        print(f"  skipped: {skipped} (see SKIP lines above and .ci/out/pytest.log)")
    print(f"{t.passed} passed, {t.failed} failed")  # the closing line CI reads: exactly `N passed, N failed`
    return 1 if t.failed else 0


if __name__ == "__main__":
    sys.exit(main())
