"""Many variants of a recipe, several seeds each, run side by side before a deadline: screen, then confirm.

    python benchmarks/sweep.py --plan benchmarks/plans/gpu_speedrun_variants.yaml --data-root PATH \\
        --parallel 4 --deadline-s 420

Made for a machine lent for minutes (a GPU that one small model leaves mostly idle): every run is one
``benchmarks/time_to_accuracy.py`` process (so each writes its usual record, with ``concurrent_runs``
set to ``--parallel``), ``--parallel`` of them at a time. The plan is YAML::

    screen_seeds: [0, 1]        # every variant first runs these seeds ...
    confirm_seeds: [2, 3, 4]    # ... then the variants run these, best screened mean first
    variants:
      - {name: base-7ep, config: configs/fast_cifar10_muon1024.yaml, set: [train.epochs=7]}
    after:                      # fixed runs once the confirmations are launched
      - {name: muon1024, config: configs/fast_cifar10_muon1024.yaml, seeds: [5, 6]}

No run starts after ``--deadline-s`` seconds; one still running ``--grace-s`` later is stopped (and
leaves no record). The summary at the end lists each variant's seeds and TTA top-1.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
TTA_LINE = re.compile(r"^seed (\d+): .*test top-1 ([\d.]+) %(?:, ([\d.]+) % with TTA)?", re.M)


@dataclass
class Variant:
    name: str
    config: str
    sets: list[str] = field(default_factory=list)
    results: dict[int, float] = field(default_factory=dict)  # seed -> TTA top-1 (plain top-1 without TTA)

    def mean(self) -> float:
        return statistics.fmean(self.results.values()) if self.results else float("-inf")

    def stderr(self) -> float:
        """The standard error of the mean (sample std / sqrt(seeds)); nan below two seeds. Seed-to-seed
        spread is ~0.15 points, so 16 seeds tell means ~0.04 points apart (issue 37)."""
        vals = list(self.results.values())
        return statistics.stdev(vals) / len(vals) ** 0.5 if len(vals) >= 2 else float("nan")

    def row(self) -> str:
        vals = [self.results[s] for s in sorted(self.results)]
        low = f"{min(vals):.2f}" if vals else "-"
        return f"| {self.name} | {len(vals)} | {self.mean():.2f} | {self.stderr():.3f} | {low} | {' '.join(f'{x:.2f}' for x in vals)} |"


@dataclass
class Job:
    variant: Variant
    seed: int


def load_plan(path: Path) -> tuple[list[Job], list[Variant], list[int], list[Job]]:
    """(screening jobs, variants, confirmation seeds, jobs after); a malformed plan fails in one line."""
    plan = yaml.safe_load(path.read_text())
    unknown = set(plan) - {"screen_seeds", "confirm_seeds", "variants", "after"}
    if unknown:
        raise SystemExit(f"{path}: unknown keys {sorted(unknown)}; use screen_seeds, confirm_seeds, variants, after")

    def variant(entry: dict) -> Variant:
        extra = set(entry) - {"name", "config", "set", "seeds"}
        if extra or "name" not in entry or "config" not in entry:
            raise SystemExit(f"{path}: a variant needs name and config (and may have set, seeds); got {entry}")
        if not (ROOT / entry["config"]).is_file():
            raise SystemExit(f"{path}: {entry['config']} does not exist; name a recipe in configs/")
        return Variant(entry["name"], entry["config"], list(entry.get("set") or []))

    variants = [variant(e) for e in plan.get("variants") or []]
    screen = [Job(v, s) for v in variants for s in plan.get("screen_seeds") or [0]]
    after = [Job(v, s) for e in plan.get("after") or [] for v in [variant(e)] for s in e.get("seeds") or [0]]
    return screen, variants, list(plan.get("confirm_seeds") or []), after


def command(job: Job, data_root: str, parallel: int, results: Path | None) -> list[str]:
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / "time_to_accuracy.py"),
        "--config",
        str(ROOT / job.variant.config),
        "--data-root",
        data_root,
        "--seeds",
        "1",
        "--first-seed",
        str(job.seed),
        "--concurrent",
        str(parallel),
    ]
    for s in job.variant.sets:
        cmd += ["--set", s]
    if results is not None:
        cmd += ["--results", str(results)]
    return cmd


class Pool:
    """At most ``parallel`` runs at a time; none started after the deadline, stragglers stopped at deadline + grace."""

    def __init__(self, args, log):
        self.args, self.log = args, log
        self.t0 = time.monotonic()
        self.running: list[tuple[subprocess.Popen, Job, float]] = []
        env = dict(os.environ)
        if args.threads:
            env["OMP_NUM_THREADS"] = str(args.threads)
        self.env = env

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def run(self, jobs: list[Job]) -> None:
        queue = list(jobs)
        while queue or self.running:
            while queue and len(self.running) < self.args.parallel and self.elapsed() < self.args.deadline_s:
                job = queue.pop(0)
                proc = subprocess.Popen(
                    command(job, self.args.data_root, self.args.parallel, self.args.results),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                    env=self.env,
                )
                self.running.append((proc, job, self.elapsed()))
            if queue and self.elapsed() >= self.args.deadline_s:
                self.log(f"deadline: {len(queue)} runs not started ({', '.join(f'{j.variant.name}/{j.seed}' for j in queue)})")
                queue.clear()
            self._reap()
            time.sleep(0.5)

    def _reap(self) -> None:
        still = []
        for proc, job, started in self.running:
            if proc.poll() is None:
                if self.elapsed() > self.args.deadline_s + self.args.grace_s:
                    proc.kill()
                    proc.wait()
                    self.log(f"{job.variant.name} seed {job.seed}: stopped at the deadline, no record")
                else:
                    still.append((proc, job, started))
                continue
            out = proc.stdout.read()
            match = TTA_LINE.search(out)
            if proc.returncode != 0 or match is None:
                tail = out.strip().splitlines()[-3:]
                self.log(f"{job.variant.name} seed {job.seed}: FAILED (exit {proc.returncode}): {' | '.join(tail)}")
                continue
            top1 = float(match.group(3) or match.group(2))
            job.variant.results[job.seed] = top1
            self.log(f"{job.variant.name} seed {job.seed}: {top1:.2f} % ({self.elapsed() - started:.0f} s)")
        self.running = still


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--plan", type=Path, required=True)
    ap.add_argument("--data-root", required=True)
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="OMP_NUM_THREADS of each run (0: as set)")
    ap.add_argument("--deadline-s", type=float, default=600.0)
    ap.add_argument("--grace-s", type=float, default=60.0)
    ap.add_argument("--results", type=Path, default=None, help="folder of the records (default: time_to_accuracy's)")
    args = ap.parse_args(argv)
    if args.parallel < 1:
        ap.error("--parallel must be at least 1")
    screen, variants, confirm_seeds, after = load_plan(args.plan)

    def log(msg: str) -> None:
        print(f"[{pool.elapsed():6.0f} s] {msg}", flush=True)

    pool = Pool(args, log)
    pool.run(screen)
    ranked = sorted(variants, key=Variant.mean, reverse=True)
    log("screened: " + ", ".join(f"{v.name} {v.mean():.2f}" for v in ranked))
    pool.run([Job(v, s) for v in ranked for s in confirm_seeds if s not in v.results])
    pool.run(after)
    print("\n| variant | seeds | mean TTA top-1 | std. error | lowest | values |\n|---|---|---|---|---|---|")
    for v in sorted([*variants, *{j.variant.name: j.variant for j in after}.values()], key=Variant.mean, reverse=True):
        print(v.row())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
