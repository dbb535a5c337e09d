"""Where a suite's jobs run: a local process pool, a Ray cluster, or SLURM through submitit.

Each engine only starts jobs (robench.jobs.execute) and hands back a concurrent.futures.Future
per job; the order comes from the driver in robench.bench, which submits a job once the jobs
it depends on are done, at most `max_parallel` at a time. Nothing here queues, retries or
places work itself: the process pool, Ray's scheduler and SLURM do.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from robench.errors import RobenchError
from robench.jobs import Context, Job, execute

EXECUTORS = ("local", "ray", "slurm")


@dataclass
class EngineOptions:
    executor: str = "local"
    max_parallel: int | None = None
    gpus_per_job: float = 0
    cpus_per_job: int | None = None     # ray/slurm: CPUs (torch threads) per job
    address: str | None = None          # ray: an existing cluster ("auto", "HOST:PORT")
    partition: str | None = None        # slurm
    account: str | None = None
    time_min: int = 24 * 60
    slurm_folder: Path | None = None

    def __post_init__(self) -> None:
        if self.executor not in EXECUTORS:
            raise RobenchError(f"--executor must be one of {', '.join(EXECUTORS)}, got {self.executor!r}")
        if self.max_parallel is not None and self.max_parallel < 1:
            raise RobenchError(f"--max-parallel must be >= 1, got {self.max_parallel}")
        if self.gpus_per_job < 0:
            raise RobenchError(f"--gpus-per-job must be >= 0, got {self.gpus_per_job}")
        if self.cpus_per_job is not None and self.cpus_per_job < 1:
            raise RobenchError(f"--cpus-per-job must be >= 1, got {self.cpus_per_job}")
        if self.time_min < 1:
            raise RobenchError(f"--time must be >= 1 minute, got {self.time_min}")


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover (macOS)
        return os.cpu_count() or 1


def _start_worker(threads: int, gpus: Any) -> None:
    # Workers x threads = cores: oversubscribed OpenMP threads made every timing noise here.
    if gpus is not None:
        # One GPU per worker, taken before CUDA starts in this process (it starts lazily).
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpus.get())
    import torch

    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)


def visible_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def local_workers() -> int:
    """The local pool's default size: one worker per GPU on a GPU node, else one per core."""
    return visible_gpus() or cores()


class LocalEngine:
    """A process pool sized to the machine (spawned: a forked torch with live OpenMP threads
    can deadlock). On a GPU node: one worker per GPU by default, each worker pinned to its own
    GPU (CUDA_VISIBLE_DEVICES), more workers than GPUs sharing them in turn."""

    def __init__(self, workers: int | None, threads: int | None = None) -> None:
        gpus = visible_gpus()
        self.workers = workers or gpus or cores()  # local_workers(), without asking CUDA twice
        self.threads = threads or max(1, cores() // self.workers)
        context = multiprocessing.get_context("spawn")
        queue = None
        if gpus:
            queue = context.Queue()
            for worker in range(self.workers):
                queue.put(worker % gpus)
        self.pool = ProcessPoolExecutor(self.workers, mp_context=context, initializer=_start_worker, initargs=(self.threads, queue))

    def submit(self, jobs: list[Job], ctx: Context) -> list[Future]:
        return [self.pool.submit(execute, job, ctx) for job in jobs]

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


class RayEngine:
    """Each job a Ray task asking for its CPUs (and GPUs); joins `address` or starts a local cluster."""

    def __init__(self, options: EngineOptions, threads: int) -> None:
        try:
            import ray
        except ImportError:
            raise RobenchError('--executor ray needs Ray: pip install "robench[ray]"') from None
        self.ray = ray
        try:
            ray.init(address=options.address, include_dashboard=False, log_to_driver=False,
                     configure_logging=False, ignore_reinit_error=True)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise RobenchError(f"cannot join the Ray cluster at {options.address!r} ({str(exc).strip().splitlines()[0][:200]}); start it with `ray start --head` or drop --address") from None
        self.threads = threads
        self.task = ray.remote(execute).options(num_cpus=threads, num_gpus=options.gpus_per_job, max_retries=2, retry_exceptions=False)
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.workers = max(1, options.max_parallel or cpus // threads)

    def submit(self, jobs: list[Job], ctx: Context) -> list[Future]:
        ctx = replace(ctx, threads=self.threads)
        return [self.task.remote(job, ctx).future() for job in jobs]

    def close(self) -> None:
        self.ray.shutdown()


class _Resumable:
    """A SLURM job that, when it times out or is preempted, is requeued with the same job:
    it resumes from the checkpoint and the cell store (submitit's Checkpointable protocol)."""

    def __call__(self, job: Job, ctx: Context) -> dict[str, Any]:
        return execute(job, ctx)

    def checkpoint(self, job: Job, ctx: Context) -> Any:
        import submitit

        return submitit.helpers.DelayedSubmission(self, job, ctx)


class SlurmEngine:
    """Jobs submitted with sbatch through submitit; those ready together go as one job array."""

    def __init__(self, options: EngineOptions, threads: int, folder: Path) -> None:
        import shutil

        if shutil.which("sbatch") is None:
            raise RobenchError("--executor slurm: sbatch is not on PATH; run on a SLURM login node (or use --executor local / ray)")
        try:
            import submitit
        except ImportError:
            raise RobenchError('--executor slurm needs submitit: pip install "robench[slurm]"') from None
        import logging

        # Without slurmdbd every status poll warns that sacct failed, though squeue and the
        # result files still tell the state; job failures are reported by the driver anyway.
        logging.getLogger("submitit").setLevel(logging.ERROR)
        self.threads = threads
        self.workers = options.max_parallel or 64
        self.executor = submitit.SlurmExecutor(folder=str(folder / "%j"), max_num_timeout=3)
        parameters: dict[str, Any] = {"time": options.time_min, "cpus_per_task": threads, "ntasks_per_node": 1,
                                      "job_name": "robench", "array_parallelism": self.workers}
        if options.gpus_per_job:
            parameters["gpus_per_node"] = int(options.gpus_per_job)
        if options.partition:
            parameters["partition"] = options.partition
        if options.account:
            parameters["account"] = options.account
        self.executor.update_parameters(**parameters)
        self.waiters = ThreadPoolExecutor(max_workers=min(self.workers, 256))

    def submit(self, jobs: list[Job], ctx: Context) -> list[Future]:
        ctx = replace(ctx, threads=self.threads)
        with self.executor.batch():
            submitted = [self.executor.submit(_Resumable(), job, ctx) for job in jobs]
        return [self.waiters.submit(_result, sub) for sub in submitted]

    def close(self) -> None:
        self.waiters.shutdown(wait=False, cancel_futures=True)


def _result(submitted: Any) -> Any:
    """A SLURM job's return value, or its error as one line (submitit's carries the whole log)."""
    try:
        return submitted.result()
    except RobenchError:
        raise
    except Exception as exc:
        lines = [line for line in str(exc).splitlines() if "RobenchError" in line or "Error" in line]
        raise RobenchError(f"SLURM job {submitted.job_id} failed: {(lines[-1] if lines else str(exc).splitlines()[0])[:300]}") from None


def engine(options: EngineOptions, workspace: Path, suite: str) -> Any:
    if options.executor == "local":
        return LocalEngine(options.max_parallel, options.cpus_per_job)
    if options.cpus_per_job is not None:
        threads = options.cpus_per_job
    elif options.executor == "ray" and options.address is None:
        # The local Ray cluster has this machine's cores: share them as the local pool does.
        threads = max(1, cores() // (options.max_parallel or cores()))
    else:
        threads = 1
    if options.executor == "ray":
        return RayEngine(options, threads)
    return SlurmEngine(options, threads, options.slurm_folder or workspace / "jobs" / suite / "slurm")
