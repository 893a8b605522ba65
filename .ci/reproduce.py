#!/usr/bin/env python
"""`make reproduce`: run every paper notebook (nbs/04_* onward) with papermill, per subject.

Executed copies go to runs/ (git-ignored); the notebooks write tables and figures to figures/.
Until the paper notebooks exist, it says so and executes the library notebooks instead, as a check that
the installation works end to end.

With `--jobs N` (default 'auto': 4 on a machine with two or more CPU cores) up to N notebooks run at a time, in
the order of `plan`: a notebook starts once the notebooks it needs are done (`DEPENDS`: 08a and 08b read what 08
computes without locks); everything else they share (the simulated tree, the tiny models, paper 1's stages) the
library computes once under inter-process locks while the other notebooks wait. Before the notebooks, the stand-ins
that every later stage needs (the tiny VDVAE, and beside it the tiny CLIP and VD) start training in their own process
at normal priority, and the notebooks run at `nice` +10: they fill the cores around that training instead of slowing
it. Each job gets one torch thread (`OMP_NUM_THREADS=1`), so that jobs share the cores without oversubscribing them and
every number is the same whatever the schedule; a job's output goes to runs/<notebook>.log, and the console shows one
line per start and finish.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test import ROOT, papermill_notebooks  # noqa: E402

#: notebooks that aggregate over subjects: run once, after the per-subject notebooks of their paper, with `subjects`
CROSS_SUBJECT = {"06b_cross_subject.ipynb", "08c_nd_subjects.ipynb"}
#: per-subject notebooks and the notebooks (same subject) that must finish first: 08a and 08b read 08's decoders and
#: kappa*, which `NDExperiment` computes without inter-process locks. Paper 1's notebooks share their stages under the
#: pipeline's locks, so 04, 05 and 06 run side by side (one trains what the others wait for), and 08 computes paper 1's
#: row through the same locked cache.
DEPENDS = {"08a_nd_guidance_grid": ("08_nd_reconstruction",), "08b_nd_repeats_decoding": ("08_nd_reconstruction",)}
#: nice increment of the notebooks when jobs run side by side (the stand-ins' training keeps normal priority)
NICE = 10
#: trains (or finds cached) the stand-ins every later stage waits for: the tiny VDVAE, with the tiny CLIP and VD beside
#: it in a second process (`Experiment.vae`); nothing on real weights
STANDINS = """import sys
from neurodecode.pipeline import Experiment
e = Experiment(int(sys.argv[1]), sys.argv[2] or None, profile=sys.argv[3])
print(e.ds.message, '| models:', e.models, flush=True)
if e.models == 'tiny':
    e.vae, e.tiny
print('stand-ins ready', flush=True)
"""


def paper(stem: str) -> int:
    "1 for paper 1's notebooks (04-06), 2 for NeuralDiffuser's (08 onward)."
    return 1 if stem[:2] < "07" else 2


@dataclass
class Task:
    nb: Path
    out: Path
    params: dict
    label: str
    after: list = field(default_factory=list)  # labels of the tasks that must finish first


def plan(nbs: list, subjects: list, profile: str = "default", data_dir=None, runs: Path = Path("runs")) -> list:
    """The tasks of a run, in priority order: subject by subject, each paper's notebooks in file order, then the
    cross-subject notebooks (only with two subjects or more: a one-subject cross-subject table says nothing and
    would overwrite the committed one)."""
    per_subject = [p for p in nbs if p.name not in CROSS_SUBJECT]
    cross = [p for p in nbs if p.name in CROSS_SUBJECT]
    stems = {p.stem for p in per_subject}
    tasks = []
    for s in subjects:
        for nb in per_subject:
            after = [f"{d}_sub-{s:02d}" for d in DEPENDS.get(nb.stem, ()) if d in stems]
            tasks.append(Task(nb, runs / f"{nb.stem}_sub-{s:02d}.ipynb",
                              {"subject": s, "profile": profile, "data_dir": data_dir}, f"{nb.stem}_sub-{s:02d}", after))
    if len(subjects) > 1:
        for nb in cross:
            after = [t.label for t in tasks if paper(t.nb.stem) == paper(nb.stem)]
            tasks.append(Task(nb, runs / nb.name, {"subjects": " ".join(map(str, subjects)), "profile": profile,
                                                   "data_dir": data_dir}, nb.stem, after))
    return tasks


def _command(t: Task) -> list:
    cmd = [sys.executable, "-m", "papermill", str(t.nb), str(t.out), "--cwd", str(ROOT / "nbs"), "-k", "python3",
           "--log-output"]
    for k, v in t.params.items():
        if v is not None:
            cmd += ["-p", k, str(v)] if not isinstance(v, str) else ["-r", k, v]
    return cmd


def _env(jobs: int) -> dict:
    env = {**os.environ, "NEURODECODE_PROGRESS": os.environ.get("NEURODECODE_PROGRESS", "text")}  # bars in the log
    if jobs > 1:
        env.setdefault("OMP_NUM_THREADS", "1")  # one torch thread per job: `jobs` jobs share the cores
    return env


def _background():
    "preexec_fn of the notebooks' processes when several run: lower priority than the stand-ins' training."
    try:
        os.nice(NICE)
    except OSError:
        pass


def _renice_kernels(parents: set, done: set):
    """Lower the priority of the notebooks' kernels. jupyter_client starts each kernel in a session of its own, and on
    Linux with autogroups a session's CPU share is set by its autogroup's nice value, not by its processes' (so the
    `nice` of `_background` alone would leave a kernel as strong as the stand-ins' training)."""
    if not parents or not os.path.exists("/proc/self/autogroup"):
        return
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) in done:
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid in parents:
            done.add(int(d))
            try:
                with open(f"/proc/{d}/autogroup", "w") as f:
                    f.write(str(NICE))
            except OSError:
                pass


def papermill(nb: Path, out: Path, params: dict) -> int:
    "One notebook in the foreground, its log on the console (`--jobs 1`, and the library notebooks' check)."
    t = Task(nb, out, params, out.stem)
    cmd = _command(t)
    print("$", " ".join(cmd[2:]), flush=True)
    t0 = time.time()
    rc = subprocess.run(cmd, cwd=ROOT, env=_env(1)).returncode
    print(f"== {out.stem}: {'ok' if rc == 0 else f'FAILED (exit {rc})'} in {time.time() - t0:.0f} s", flush=True)
    return rc


def start_standins(subject: int, profile: str, data_dir, runs: Path, t_start: float):
    "Start `STANDINS` in the background (normal priority, one torch thread per process); returns (process, log file)."
    log = runs / "standins.log"
    fh = open(log, "w")
    print(f"[{time.time() - t_start:6.0f} s] start the stand-ins' training (log: {log.name} in runs/)", flush=True)
    proc = subprocess.Popen([sys.executable, "-c", STANDINS, str(subject), data_dir or "", profile], cwd=ROOT,
                            env=_env(2), stdout=fh, stderr=subprocess.STDOUT)
    return proc, fh


def run_tasks(tasks: list, jobs: int, t_start: float, background=None) -> tuple[list, dict]:
    """Run `tasks` with at most `jobs` at a time, each once its `after` tasks are done (a failed one still releases its
    dependants: they run and report on their own). `background`: (process, log) of `start_standins`, reported when it
    ends. Returns (failed labels, {label: (start, seconds)})."""
    if jobs <= 1:
        failures, times = [], {}
        for t in tasks:
            t0 = time.time()
            if papermill(t.nb, t.out, t.params):
                failures.append(t.label)
            times[t.label] = (t0 - t_start, time.time() - t0)
        return failures, times
    pending, running, done, failures, times, reniced = list(tasks), {}, set(), [], {}, set()
    env = _env(jobs)
    while pending or running:
        ready = [t for t in pending if all(a in done for a in t.after)]
        while ready and len(running) < jobs:
            t = ready.pop(0)
            pending.remove(t)
            log = t.out.with_suffix(".log")
            fh = open(log, "w")
            shown = log.relative_to(ROOT) if log.is_relative_to(ROOT) else log
            print(f"[{time.time() - t_start:6.0f} s] start {t.label} (log: {shown})", flush=True)
            running[t.label] = (t, subprocess.Popen(_command(t), cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                                    preexec_fn=_background if os.name == "posix" else None), fh,
                                time.time())
        time.sleep(0.2)
        _renice_kernels({p.pid for _, p, _, _ in running.values()}, reniced)
        if background is not None and background[0].poll() is not None:
            background[1].close()
            rc = background[0].returncode
            print(f"[{time.time() - t_start:6.0f} s] == the stand-ins' training: {'ok' if rc == 0 else f'FAILED (exit {rc}): see runs/standins.log; the notebooks train what they need themselves'}", flush=True)
            background = None
        for label, (t, proc, fh, t0) in list(running.items()):
            rc = proc.poll()
            if rc is None:
                continue
            fh.close()
            del running[label]
            done.add(label)
            times[label] = (t0 - t_start, time.time() - t0)
            print(f"[{time.time() - t_start:6.0f} s] == {label}: {'ok' if rc == 0 else f'FAILED (exit {rc})'} in "
                  f"{time.time() - t0:.0f} s", flush=True)
            if rc:
                failures.append(label)
                tail = t.out.with_suffix(".log").read_text(errors="replace").splitlines()[-25:]
                print("   " + "\n   ".join(tail), flush=True)
    return failures, times


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subjects", default="1", help='space-separated NSD subjects, e.g. "1 2 5 7"')
    ap.add_argument("--profile", default="default")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--notebooks", default="", help='only these paper notebooks, e.g. "04_noise 06_reconstruction"')
    ap.add_argument("--jobs", default="auto", help="notebooks at a time: a number, or 'auto' (4 on 2+ CPU cores, else 1)")
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
    if len(set(subjects)) != len(subjects):
        print(f"SUBJECTS names a subject twice: {args.subjects!r}")
        return 2
    if args.jobs == "auto":
        jobs = 4 if (os.cpu_count() or 1) >= 2 else 1
    elif args.jobs.isdigit() and int(args.jobs) >= 1:
        jobs = int(args.jobs)
    else:
        print(f"JOBS must be a positive integer or 'auto'; got {args.jobs!r}")
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
    if not nbs:
        lib = sorted(p for p in (ROOT / "nbs").glob("[0-9]*.ipynb"))
        print("No paper notebooks (nbs/04_* onward) exist yet: later issues add them.\n"
              f"Running the {len(lib)} library notebooks instead, as an end-to-end check of the installation.")
        failures = [nb.name for nb in lib if papermill(nb, runs / nb.name, {})]
        return 1 if failures else 0
    tasks = plan(nbs, subjects, args.profile, args.data_dir, runs)
    skipped = [p.stem for p in nbs if p.name in CROSS_SUBJECT] if len(subjects) == 1 else []
    if skipped:
        print(f"one subject: the cross-subject notebooks ({', '.join(skipped)}) are left out; run them with "
              f'SUBJECTS="1 2 5 7" (their committed tables in figures/<source>/all/ stay as they are)')
    jobs = min(jobs, len(tasks))  # one notebook (`make notebook`): in the foreground, its log on the console
    print(f"{len(tasks)} notebook run(s), {jobs} at a time", flush=True)
    bg = None
    if jobs > 1 and any(paper(t.nb.stem) == 1 for t in tasks):
        bg = start_standins(subjects[0], args.profile, args.data_dir, runs, t0)
    failures, times = run_tasks(tasks, jobs, t0, bg)
    if bg is not None and bg[0].poll() is None:
        bg[0].wait()
    total = time.time() - t0
    print("\nnotebook                               start      time")
    for label, (start, secs) in sorted(times.items(), key=lambda kv: kv[1][0]):
        print(f"{label:<36} {start:7.0f} s {secs:7.0f} s")
    print(f"\nreproduce took {total:.0f} s ({total / 60:.1f} min, {jobs} job(s) at a time); executed notebooks are in "
          "runs/, outputs in figures/")
    if failures:
        print("failed: " + ", ".join(failures))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
