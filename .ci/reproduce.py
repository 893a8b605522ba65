#!/usr/bin/env python
"""`make reproduce`: run every paper notebook (nbs/04_* onward) with papermill, per subject.

Executed copies go to runs/ (git-ignored); the notebooks write tables and figures to figures/.
Until the paper notebooks exist, it says so and executes the library notebooks instead, as a check that
the installation works end to end.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test import ROOT, papermill_notebooks  # noqa: E402

#: notebooks that aggregate over subjects: run once, after the per-subject ones, with `subjects` as a parameter
CROSS_SUBJECT = {"06b_cross_subject.ipynb", "08c_nd_subjects.ipynb"}


def papermill(nb: Path, out: Path, params: dict) -> int:
    cmd = [sys.executable, "-m", "papermill", str(nb), str(out), "--cwd", str(ROOT / "nbs"), "-k", "python3", "--log-output"]
    for k, v in params.items():
        if v is not None:
            cmd += ["-p", k, str(v)] if not isinstance(v, str) else ["-r", k, v]
    print("$", " ".join(cmd[2:]), flush=True)
    env = {**os.environ, "NEURODECODE_PROGRESS": os.environ.get("NEURODECODE_PROGRESS", "text")}  # bars in the log
    t0 = time.time()
    rc = subprocess.run(cmd, cwd=ROOT, env=env).returncode
    print(f"== {out.stem}: {'ok' if rc == 0 else f'FAILED (exit {rc})'} in {time.time() - t0:.0f} s", flush=True)
    return rc


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--subjects", default="1", help='space-separated NSD subjects, e.g. "1 2 5 7"')
    ap.add_argument("--profile", default="default")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--notebooks", default="", help='only these paper notebooks, e.g. "04_noise 06_reconstruction"')
    args = ap.parse_args(argv)
    try:
        subjects = [int(s) for s in args.subjects.split()]
    except ValueError:
        print(f"SUBJECTS must be integers between 1 and 8; got {args.subjects!r}")
        return 2
    bad = [s for s in subjects if not 1 <= s <= 8]
    if bad or not subjects:
        print(f"SUBJECTS must be one or more of 1..8; got {args.subjects!r}")
        return 2
    runs = ROOT / "runs"
    runs.mkdir(exist_ok=True)
    t0 = time.time()
    nbs = papermill_notebooks(ROOT / "nbs")
    if args.notebooks.strip():
        wanted = [w.removesuffix(".ipynb") for w in args.notebooks.replace(",", " ").split()]
        known = {p.stem: p for p in nbs}
        unknown = [w for w in wanted if w not in known]
        if unknown:
            print(f"unknown paper notebook(s) {unknown}; choose from: {' '.join(sorted(known))}")
            return 2
        nbs = [known[w] for w in wanted]
    per_subject = [p for p in nbs if p.name not in CROSS_SUBJECT]
    cross = [p for p in nbs if p.name in CROSS_SUBJECT]
    failures = []
    if not nbs:
        lib = sorted(p for p in (ROOT / "nbs").glob("[0-9]*.ipynb"))
        print("No paper notebooks (nbs/04_* onward) exist yet: later issues add them.\n"
              f"Running the {len(lib)} library notebooks instead, as an end-to-end check of the installation.")
        for nb in lib:
            if papermill(nb, runs / nb.name, {}):
                failures.append(nb.name)
    for s in subjects:
        for nb in per_subject:
            params = {"subject": s, "profile": args.profile, "data_dir": args.data_dir}
            if papermill(nb, runs / f"{nb.stem}_sub-{s:02d}.ipynb", params):
                failures.append(f"{nb.name} (subject {s})")
    for nb in cross:
        params = {"subjects": " ".join(map(str, subjects)), "profile": args.profile, "data_dir": args.data_dir}
        if papermill(nb, runs / nb.name, params):
            failures.append(nb.name)
    print(f"\nreproduce took {time.time() - t0:.0f} s; executed notebooks are in runs/, outputs in figures/")
    if failures:
        print("failed: " + ", ".join(failures))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
