"""Wall time of a suite of 8 small attack jobs on 1 and 2 local workers, and the per-job
overhead of Ray and SLURM against the local pool, measured side by side in one run.

    python benchmarks/executor_scaling.py                    # local 1 vs 2 workers, Ray
    python benchmarks/executor_scaling.py --slurm            # and SLURM (scripts/local-slurm.sh start first)

One digits checkpoint is trained first (not timed); the suite is 8 runs of it, each PGD at
32/255 on 512 examples with its own attack seed: 8 independent one-shard attack jobs. Every
measurement starts from a copy of that workspace with no cells. Run it on an idle machine
(`uptime`): two cores shared with anything else make every figure noise.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from rich.console import Console

SUITE = """
[suite.scaling]
description = "8 independent attack jobs on one digits checkpoint"
dataset = "digits"
arch = "small-cnn"
epochs = 3
seed = 0
attacks = ["pgd"]
eps = ["32/255"]
n = 512
attack_batch_size = 512
verdict = false
convergence_check = false
""" + "".join(f"""
[[suite.scaling.run]]
name = "scaling"
defense = "none"
attack_seed = {seed}
""" for seed in range(1, 9))


def timed(base: Path, toml: Path, executor: str, workers: int, **extra: object) -> float:
    from robench.bench import resolve_suite, run_suite_jobs
    from robench.executors import EngineOptions
    from robench.workspace import Workspace

    root = base.parent / f"{executor}-{workers}-{extra.get('cpus_per_job')}"
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(base, root)
    quiet = Console(stderr=True, quiet=True)
    started = time.perf_counter()
    rows, failures = run_suite_jobs(resolve_suite(toml, "scaling"), Workspace(root), EngineOptions(executor, workers, **extra), console=quiet)
    seconds = time.perf_counter() - started
    assert not failures and len({r["seed"] for r in rows}) == 8, failures
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slurm", action="store_true", help="also measure --executor slurm (a running SLURM, SLURM_CONF set)")
    parser.add_argument("--no-ray", action="store_true")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f} (cores: {os.cpu_count()})")
    from robench.bench import _train_config, resolve_suite
    from robench.training import train
    from robench.workspace import Workspace

    with tempfile.TemporaryDirectory() as tmp:
        toml = Path(tmp) / "suite.toml"
        toml.write_text(SUITE)
        base = Path(tmp) / "base"
        settings = resolve_suite(toml, "scaling").runs[0].settings
        train(_train_config(settings), Workspace(base), name="scaling", console=Console(stderr=True, quiet=True))
        (base / "jobs").mkdir(exist_ok=True)
        single = timed(base, toml, "local", 1, cpus_per_job=1)
        one = timed(base, toml, "local", 1)
        two = timed(base, toml, "local", 2)
        print(f"local, 1 worker x 1 thread:   {single:6.1f} s")
        print(f"local, 1 worker x 2 threads:  {one:6.1f} s")
        print(f"local, 2 workers x 1 thread:  {two:6.1f} s   speedup {single / two:.2f}x over 1 x 1 (2 idle cores: close to 2x expected), {one / two:.2f}x over 1 x 2")
        if not args.no_ray:
            ray = timed(base, toml, "ray", 2)
            print(f"ray (local cluster), 2 at a time: {ray:6.1f} s   overhead {(ray - two) / 8:+.2f} s per job against local")
        if args.slurm:
            slurm = timed(base, toml, "slurm", 2, time_min=10)
            print(f"slurm, 2 at a time: {slurm:6.1f} s   overhead {(slurm - two) / 8:+.2f} s per job against local")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
