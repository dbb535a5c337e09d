"""What robench's attack path costs on top of torchattacks: throughput, EOT cost, peak memory.

Three measurements in one run, on models trained for the purpose (a few seconds for digits,
~45 s for MNIST) in a temporary workspace that is deleted at the end (--keep-workspace keeps it,
--workspace DIR reuses one). Torch runs on ONE thread by default (--threads): on a 2-core
machine shared with other jobs, 2 intra-op threads oversubscribe the cores and PGD runs ~4x
slower and far noisier; the memory children get the same OMP_NUM_THREADS.

1. Throughput of PGD-20 (Linf, eps 8/255, step 1/255, random start) on the 450-image digits
   test split (small-cnn, 2 epochs), batches of 256. Variants, interleaved round-robin with
   the order rotated every round, after one untimed warm-up round; medians:
     robench        everything `robench attack` does except loading: the checkpoint and
                    dataset are loaded once, then the model-in core `run_attacks` runs and its
                    rows are appended to the CSV. Timed: subset selection, attacker view, clean pass, crafting,
                    evaluation of the adversarial batches, the tally (incl. perturbation norms),
                    the progress bar (drawn into /dev/null as on a terminal), the CSV row append
                    (with its fsync).
     robench-nobar  the same with a console that is not a terminal (stderr redirected, CI).
     hand           a plain loop over the same batches: `torchattacks.PGD(model, eps, alpha,
                    steps=20, random_start=True)`, a no-grad forward pass, a count of the correct
                    predictions. Same seed, so it must find the same robust accuracy (checked).
     clean          the clean pass alone (`robench.evaluation.correct_matrix` over the batches).
   Ratios robench / hand in examples per second, end to end and with the clean pass subtracted
   from robench's time. The second is the like-for-like one: the clean accuracy is a result
   robench reports and the hand loop does not compute (one forward pass against PGD's 20
   forward+backward passes, ~2.5%), so charging it to robench compares different work.
2. EOT cost: PGD-20 against a tensor-dropout (theta 0.8) digits checkpoint, `eot=1` vs
   `eot=10`, `runs=1` so both evaluate the adversarial examples once, on 128 examples (one
   batch). Rounds of eot=1, eot=10, eot=1 (the cheap call brackets the long one, so load drift
   shows on both sides). Wall seconds per call (loading excluded as above), the row's own
   `seconds` (crafting + evaluation), and the ratios, expected just under 10x.
3. Peak RSS of `robench attack` as a fresh subprocess (`/usr/bin/time -v` when present, else a
   fresh Python parent per measurement reading `getrusage(RUSAGE_CHILDREN).ru_maxrss`) on MNIST
   (small-cnn, 1 epoch on --train-size 2000), `--suite fgsm --n 1000` and `--n 10000`, the
   workspace passed in ROBENCH_WORKSPACE; plus a reference child that only imports robench and
   loads MNIST. Each size runs with the default glibc allocator (what a user gets; its peak
   carries 100-250 MiB of allocator slack that varies by ~100 MiB between identical runs) and
   with MALLOC_MMAP_THRESHOLD_=131072 (large blocks go back to the OS when freed, so the peak
   follows the live tensors and repeats to within 1 MiB: the precise flatness check).
   Skipped with a note when MNIST is not under --data-dir.

    python benchmarks/attack_overhead.py            # ~5-6 minutes on 2 busy cores
    python benchmarks/attack_overhead.py --quick    # ~3 minutes: fewer rounds, default allocator only
    python benchmarks/attack_overhead.py --parts 1,2 --repeats 9
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torchattacks  # noqa: E402
from rich.console import Console  # noqa: E402

from robench.attacks import ATTACKS  # noqa: E402
from robench.checkpoint import load_checkpoint  # noqa: E402
from robench.data import load_dataset, subset  # noqa: E402
from robench.evaluation import AttackRun, checkpoint_target, correct_matrix, run_attacks  # noqa: E402
from robench.training import TrainConfig, train  # noqa: E402
from robench.workspace import Workspace  # noqa: E402

EPS = 8 / 255
ALPHA = 1 / 255
STEPS = 20
BATCH = 256
SEED = 0
MEMORY_ARCH = "small-cnn"
MEMORY_CHECKPOINT = "mnist-small-cnn"


# --------------------------------------------------------------------------- helpers


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


DEVNULL = open(os.devnull, "w")  # noqa: SIM115 (lives as long as the process)


def quiet_console() -> Console:
    # A terminal console writing into /dev/null: the progress bar is rendered as for a user at a
    # terminal (its cost is counted) but nothing reaches this script's output.
    return Console(file=DEVNULL, force_terminal=True, width=100)


def plain_console() -> Console:
    # What `robench attack` gets when stderr is not a terminal (a log file, CI): the progress
    # bar is not drawn.
    return Console(file=DEVNULL, force_terminal=False)


class Preloaded:
    """Everything `robench attack` does except loading: each checkpoint and dataset is loaded
    once, then the model-in core (`run_attacks`) runs and its rows are appended to the CSV."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        self.loaded: dict[str, object] = {}
        self.data = load_dataset("digits")

    def attack(self, name: str, plan: AttackRun, console: Console) -> list[dict]:
        if name not in self.loaded:
            self.loaded[name] = load_checkpoint(self.workspace, name, "cpu")
        x_all, y_all = subset(self.data.test_x, self.data.test_y, plan.n, plan.seed)
        target = checkpoint_target(self.loaded[name], x_all[: plan.batch_size])
        rows = run_attacks(target, x_all, y_all, plan, torch.device("cpu"), console)
        self.workspace.append_results(rows)
        return rows


@dataclass
class Timings:
    seconds: dict[str, list[float]] = field(default_factory=dict)

    def median(self, name: str) -> float:
        return statistics.median(self.seconds[name])

    def spread(self, name: str) -> str:
        values = self.seconds[name]
        return f"{min(values):.3f}-{max(values):.3f}"


def interleave(variants: dict[str, Callable[[], object]], repeats: int, warmup: int) -> Timings:
    """Round-robin: every round runs each variant once, in an order rotated per round."""
    names = list(variants)
    for _ in range(warmup):
        for name in names:
            variants[name]()
    timings = Timings({name: [] for name in names})
    for round_index in range(repeats):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            started = time.perf_counter()
            variants[name]()
            timings.seconds[name].append(time.perf_counter() - started)
    return timings


def pgd_plan(n: int | None, eot: int | None = None) -> AttackRun:
    return AttackRun(suite=[ATTACKS["pgd"]], eps=[EPS], n=n, seed=SEED, runs=1, steps=STEPS, step_size=ALPHA, batch_size=BATCH, eot=eot)


# --------------------------------------------------------------------------- 1. throughput


@dataclass
class ThroughputResult:
    n: int
    timings: Timings
    robench_acc: float
    hand_acc: float

    def rate(self, name: str) -> float:
        return self.n / self.timings.median(name)

    def adjusted_seconds(self, name: str) -> float:
        return self.timings.median(name) - self.timings.median("clean")


def throughput(workspace: Workspace, name: str, repeats: int, warmup: int) -> ThroughputResult:
    preloaded = Preloaded(workspace)
    target = load_checkpoint(workspace, name, "cpu")
    data = load_dataset("digits")
    x_all, y_all = subset(data.test_x, data.test_y, None, SEED)
    batches = [(x_all[i : i + BATCH], y_all[i : i + BATCH]) for i in range(0, len(y_all), BATCH)]
    model = target.model.eval()
    last: dict[str, float] = {}

    def robench_variant(console: Callable[[], Console], key: str) -> Callable[[], None]:
        def run() -> None:
            rows = preloaded.attack(name, pgd_plan(None), console())
            last[key] = rows[0]["robust_acc"]
        return run

    def hand_variant() -> None:
        torch.manual_seed(SEED)
        attack = torchattacks.PGD(model, eps=EPS, alpha=ALPHA, steps=STEPS, random_start=True)
        correct = 0
        for x, y in batches:
            adv = attack(x, y)
            with torch.no_grad():
                correct += int((model(adv).argmax(1) == y).sum())
        last["hand"] = correct / len(y_all)

    def clean_variant() -> None:
        for x, y in batches:
            correct_matrix(model, x, y, 1)

    timings = interleave({
        "robench": robench_variant(quiet_console, "robench"),
        "robench-nobar": robench_variant(plain_console, "robench-nobar"),
        "hand": hand_variant,
        "clean": clean_variant,
    }, repeats, warmup)
    assert last["robench"] == last["robench-nobar"], last
    return ThroughputResult(len(y_all), timings, last["robench"], last["hand"])


# --------------------------------------------------------------------------- 2. EOT cost


@dataclass
class EotResult:
    n: int
    timings: Timings
    row_seconds: dict[str, list[float]]
    # Per round: eot=10 over the mean of the two eot=1 calls that bracket it (call, row).
    round_ratios: list[tuple[float, float]]

    def ratio(self) -> float:
        return self.timings.median("eot=10") / self.timings.median("eot=1")

    def row_ratio(self) -> float:
        return statistics.median(self.row_seconds["eot=10"]) / statistics.median(self.row_seconds["eot=1"])

    def paired(self, index: int) -> float:
        return statistics.median(r[index] for r in self.round_ratios)


def eot_cost(workspace: Workspace, name: str, n: int, repeats: int) -> EotResult:
    """Each round is eot=1, eot=10, eot=1: the cheap variant brackets the expensive one, so a
    change in the machine's load during the long call shows on both sides of the ratio."""
    preloaded = Preloaded(workspace)

    def run(eot: int) -> tuple[float, float]:
        started = time.perf_counter()
        rows = preloaded.attack(name, pgd_plan(n, eot), quiet_console())
        wall = time.perf_counter() - started
        assert rows[0]["eot"] == eot and rows[0]["runs"] == 1, rows[0]
        return wall, rows[0]["seconds"]

    timings = Timings({"eot=1": [], "eot=10": []})
    row_seconds: dict[str, list[float]] = {"eot=1": [], "eot=10": []}
    round_ratios = []
    # Warm up with the cheap variant only: it runs the same code (tensor-dropout layers, the
    # attack, the tally), and an eot=10 warm-up would double this part's time.
    run(1)
    for _ in range(repeats):
        before, expensive, after = run(1), run(10), run(1)
        for key, (wall, row) in (("eot=1", before), ("eot=10", expensive), ("eot=1", after)):
            timings.seconds[key].append(wall)
            row_seconds[key].append(row)
        round_ratios.append((expensive[0] / ((before[0] + after[0]) / 2), expensive[1] / ((before[1] + after[1]) / 2)))
    return EotResult(n, timings, row_seconds, round_ratios)


# --------------------------------------------------------------------------- 3. peak memory


def robench_command() -> list[str]:
    script = Path(sys.executable).with_name("robench")
    if script.is_file():
        return [str(script)]
    found = shutil.which("robench")
    if found:
        return [found]
    return [sys.executable, "-c", "import sys; from robench.cli import main; sys.argv[0] = 'robench'; sys.exit(main())"]


def peak_rss_mib(command: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """(peak RSS in MiB, wall seconds, method) of `command` run as a fresh child."""
    time_bin = "/usr/bin/time"
    started = time.perf_counter()
    if os.access(time_bin, os.X_OK):
        done = subprocess.run([time_bin, "-v", *command], env=env, capture_output=True, text=True)
        wall = time.perf_counter() - started
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
        match = re.search(r"Maximum resident set size \(kbytes\):\s*(\d+)", done.stderr)
        if match:
            return int(match.group(1)) / 1024, wall, "/usr/bin/time -v"
    # A fresh Python parent per measurement: RUSAGE_CHILDREN is the maximum over every child
    # a process has waited for, so reusing this process would report the largest run so far.
    probe = (
        "import resource, subprocess, sys\n"
        "code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, code)\n"
    )
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", probe, *command], env=env, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - started
    kib, code = done.stdout.split()
    if code != "0":
        raise RuntimeError(f"{' '.join(command)} failed ({code})")
    return int(kib) / 1024, wall, "getrusage(RUSAGE_CHILDREN)"


# glibc raises its mmap threshold each time a large block is freed, after which big tensors are
# carved from the heap and their pages stay resident: peak RSS then carries 100-250 MiB of
# allocator slack that changes from run to run (by ~100 MiB for the same command). A fixed
# threshold (this also switches the dynamic adjustment off) makes large blocks go back to the
# OS when freed, so peak RSS follows the live tensors and repeats to within 1 MiB: that is the
# run that shows whether robench's memory grows with --n.
FIXED_MMAP = {"MALLOC_MMAP_THRESHOLD_": "131072"}
ALLOCATORS = {"default": {}, "fixed mmap threshold": FIXED_MMAP}


@dataclass
class MemoryResult:
    peaks: dict[tuple[str, str], list[float]]  # (allocator, label) -> MiB per run
    walls: dict[tuple[str, str], list[float]]
    method: str
    dataset_mib: float
    test_mib: float

    def median(self, allocator: str, label: str) -> float:
        return statistics.median(self.peaks[(allocator, label)])


def memory(workspace: Workspace, name: str, data_dir: str, sizes: list[int], repeats: int, allocators: list[str]) -> MemoryResult:
    env = {**os.environ, "ROBENCH_WORKSPACE": str(workspace.root), "PYTHONUNBUFFERED": "1"}
    for key in FIXED_MMAP:
        env.pop(key, None)
    commands: dict[str, list[str]] = {
        "load only": [sys.executable, "-c", f"import robench.cli, robench.evaluate; from robench.data import load_dataset; load_dataset('mnist', {data_dir!r})"],
    }
    for n in sizes:
        commands[f"--n {n}"] = [*robench_command(), "attack", "-c", name, "--suite", "fgsm", "--eps", "8/255", "--n", str(n), "--runs", "1", "--data-dir", data_dir, "--device", "cpu"]
    # The two allocator runs of a size go side by side (two single-threaded children on two
    # cores): peak RSS is per process, and this part is the longest of the benchmark.
    groups = [[("default", "load only")]] + [[(allocator, f"--n {n}") for allocator in allocators] for _ in range(repeats) for n in sizes]
    peaks: dict[tuple[str, str], list[float]] = {key: [] for group in groups for key in group}
    walls: dict[tuple[str, str], list[float]] = {key: [] for group in groups for key in group}
    method = ""
    with ThreadPoolExecutor(max_workers=len(ALLOCATORS)) as pool:
        for group in groups:
            futures = {key: pool.submit(peak_rss_mib, commands[key[1]], {**env, **ALLOCATORS[key[0]]}) for key in group}
            for (allocator, label), future in futures.items():
                peak, wall, method = future.result()
                peaks[(allocator, label)].append(peak)
                walls[(allocator, label)].append(wall)
                log(f"  memory {label} ({allocator} allocator): {peak:.1f} MiB peak RSS ({wall:.1f} s)")
    data = load_dataset("mnist", data_dir)
    tensors = (data.train_x, data.train_y, data.test_x, data.test_y)
    dataset_mib = sum(t.numel() * t.element_size() for t in tensors) / 2**20
    test_mib = sum(t.numel() * t.element_size() for t in tensors[2:]) / 2**20
    return MemoryResult(peaks, walls, method, dataset_mib, test_mib)


# --------------------------------------------------------------------------- main


def mnist_available(data_dir: str) -> bool:
    raw = Path(data_dir) / "MNIST" / "raw"
    return (raw / "t10k-images-idx3-ubyte").is_file() or (raw / "t10k-images-idx3-ubyte.gz").is_file()


def train_quietly(config: TrainConfig, workspace: Workspace, name: str, data_dir: str | None = None) -> None:
    started = time.perf_counter()
    result = train(config, workspace, name=name, data_dir=data_dir, device="cpu", console=quiet_console())
    log(f"  trained {name}: clean acc {result.meta['clean_acc']:.3f} ({time.perf_counter() - started:.1f} s)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer timing rounds, and the memory runs with the default allocator only")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds of the throughput benchmark [default: 5, quick 3]")
    parser.add_argument("--eot-repeats", type=int, default=None, help="timed rounds of the EOT benchmark [default: 3, quick 2]")
    parser.add_argument("--eot-n", type=int, default=None, help="test examples for the EOT benchmark [default: 128]")
    parser.add_argument("--memory-repeats", type=int, default=None, help="peak-RSS runs per (size, allocator) [default: 1]")
    parser.add_argument("--data-dir", default=os.environ.get("ROBENCH_DATA") or str(Path(__file__).resolve().parents[2] / "shared" / "data"),
                        help="folder holding MNIST/raw for the memory benchmark [default: $ROBENCH_DATA, else ../shared/data beside the repository]")
    parser.add_argument("--skip-memory", action="store_true", help="leave out the peak-RSS subprocesses")
    parser.add_argument("--threads", type=int, default=1, help="torch threads, in process and (OMP_NUM_THREADS) in the memory children [default: 1; on a shared 2-core machine 2 threads oversubscribe and run ~4x slower and far noisier]")
    parser.add_argument("--parts", default="1,2,3", help="which measurements to run, e.g. 1,2 [default: 1,2,3]")
    parser.add_argument("--workspace", type=Path, default=None, help="reuse this workspace (models already trained there with the same settings are not retrained) instead of a temporary one")
    parser.add_argument("--keep-workspace", action="store_true", help="print and keep the temporary workspace")
    args = parser.parse_args(argv)

    repeats = args.repeats or (3 if args.quick else 5)
    eot_repeats = args.eot_repeats or (2 if args.quick else 3)
    eot_n = args.eot_n or 128
    memory_repeats = args.memory_repeats or 1
    torch.set_num_threads(args.threads)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # inherited by the memory children
    parts = {int(p) for p in args.parts.split(",") if p.strip()}

    began = time.perf_counter()
    temporary = args.workspace is None
    root = Path(tempfile.mkdtemp(prefix="robench-attack-overhead-")) if temporary else args.workspace
    workspace = Workspace(root)
    tp = eot = mem = None
    memory_skipped = ""
    try:
        log(f"workspace {root}; training the benchmark models ({args.threads} torch thread(s))")
        if 1 in parts:
            train_quietly(TrainConfig(dataset="digits", epochs=2), workspace, "bench")
        if 2 in parts:
            train_quietly(TrainConfig(dataset="digits", epochs=2, defense="tensor-dropout", defense_params={"theta": 0.8}), workspace, "bench-td")
        if 3 in parts:
            if args.skip_memory:
                memory_skipped = "--skip-memory"
            elif not mnist_available(args.data_dir):
                memory_skipped = f"MNIST not found under {args.data_dir}"
            else:
                train_quietly(TrainConfig(dataset="mnist", arch=MEMORY_ARCH, epochs=1, train_size=2000), workspace, MEMORY_CHECKPOINT, args.data_dir)

        if 1 in parts:
            log(f"1. throughput: PGD-{STEPS}, {repeats} rounds")
            tp = throughput(workspace, "bench", repeats, warmup=1)
        if 2 in parts:
            log(f"2. EOT cost: eot=1 vs eot=10 on {eot_n} examples, {eot_repeats} rounds")
            eot = eot_cost(workspace, "bench-td", eot_n, eot_repeats)
        if 3 in parts and not memory_skipped:
            log(f"3. peak RSS: robench attack --suite fgsm, {memory_repeats} run(s) per size and allocator")
            allocators = ["default"] if args.quick else list(ALLOCATORS)
            mem = memory(workspace, MEMORY_CHECKPOINT, args.data_dir, [1000, 10000], memory_repeats, allocators)
    finally:
        if temporary and not args.keep_workspace:
            shutil.rmtree(root, ignore_errors=True)
        else:
            log(f"kept workspace {root}")

    report(tp, eot, mem, memory_skipped if 3 in parts else "not asked for (--parts)", args.threads, time.perf_counter() - began)
    return 0


def report(tp: ThroughputResult | None, eot: EotResult | None, mem: MemoryResult | None, memory_skipped: str, threads: int, total: float) -> None:
    width = 80
    summary: list[tuple[str, str]] = []
    print("=" * width)
    print(f"robench attack overhead: torch {torch.__version__}, torchattacks {torchattacks.__version__}, "
          f"{threads} torch thread(s), {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print("=" * width)
    if tp is not None:
        t = tp.timings
        hand_rate = tp.rate("hand")
        print(f"1. PGD-{STEPS} (Linf, eps 8/255, step 1/255, random start), digits small-cnn, n={tp.n}, batch {BATCH}")
        print(f"   median of {len(t.seconds['hand'])} interleaved rounds after a warm-up round; loading excluded")
        print(f"   {'variant':<44}{'median s':>9}{'min-max s':>14}{'examples/s':>11}")
        labels = {
            "robench": "robench attack_checkpoint, progress bar",
            "robench-nobar": "robench attack_checkpoint, no bar (no tty)",
            "hand": "hand-written torchattacks loop",
            "clean": "clean pass alone (correct_matrix)",
        }
        for key, label in labels.items():
            print(f"   {label:<44}{t.median(key):>9.3f}{t.spread(key):>14}{tp.rate(key):>11.1f}")
        for key in ("robench", "robench-nobar"):
            shown = labels[key].replace("attack_checkpoint, ", "").replace(" (no tty)", "")
            print(f"   {shown + ' minus clean pass':<44}{tp.adjusted_seconds(key):>9.3f}{'':>14}{tp.n / tp.adjusted_seconds(key):>11.1f}")
        mark = lambda r: f"{r:.4f} {'ok ' if r >= 0.97 else 'LOW'}"  # noqa: E731
        print("   ratio robench / hand in examples/s (target >= 0.97; LOW = below)")
        print(f"   {'':<44}{'end to end':>14}{'clean pass excluded':>22}")
        ratios = {}
        for key in ("robench", "robench-nobar"):
            raw = tp.rate(key) / hand_rate
            adjusted = tp.n / tp.adjusted_seconds(key) / hand_rate
            ratios[key] = (raw, adjusted)
            print(f"   {labels[key].replace('robench attack_checkpoint, ', 'robench, '):<44}{mark(raw):>14}{mark(adjusted):>22}")
        same = "identical" if abs(tp.robench_acc - tp.hand_acc) < 1e-12 else "DIFFERENT"
        print(f"   robust accuracy: robench {tp.robench_acc:.4f}, hand {tp.hand_acc:.4f} ({same})")
        print("   (clean excluded is like for like: the hand loop computes no clean accuracy)")
        print()
        summary += [
            ("PGD-20 hand-written torchattacks examples/s", f"{hand_rate:.1f}"),
            ("PGD-20 robench examples/s, end to end", f"{tp.rate('robench'):.1f}"),
            ("PGD-20 robench examples/s, clean pass excluded", f"{tp.n / tp.adjusted_seconds('robench'):.1f}"),
            ("ratio robench / hand, end to end", f"{ratios['robench'][0]:.4f}"),
            ("ratio robench / hand, clean pass excluded (target >= 0.97)", f"{ratios['robench'][1]:.4f}"),
            ("ratio robench (no bar) / hand, end to end", f"{ratios['robench-nobar'][0]:.4f}"),
            ("ratio robench (no bar) / hand, clean pass excluded", f"{ratios['robench-nobar'][1]:.4f}"),
        ]
    if eot is not None:
        e = eot.timings
        print(f"2. EOT cost: PGD-{STEPS} against tensor-dropout theta 0.8 (digits small-cnn), n={eot.n}, runs=1")
        print(f"   {len(e.seconds['eot=10'])} rounds of eot=1, eot=10, eot=1; medians; loading excluded")
        print("   call s = the whole attack_checkpoint call; row s = the row's `seconds` (crafting + evaluation)")
        print(f"   {'variant':<12}{'call s':>10}{'min-max s':>18}{'row s':>10}")
        for key in ("eot=1", "eot=10"):
            print(f"   {key:<12}{e.median(key):>10.2f}{e.spread(key):>18}{statistics.median(eot.row_seconds[key]):>10.2f}")
        print(f"   ratio eot=10 / eot=1, ratio of medians     call {eot.ratio():6.2f}x   row {eot.row_ratio():6.2f}x")
        print(f"   ratio eot=10 / eot=1, median per round     call {eot.paired(0):6.2f}x   row {eot.paired(1):6.2f}x   (expected about 10x, not more)")
        print()
        summary += [
            ("EOT eot=1 seconds", f"{e.median('eot=1'):.2f}"),
            ("EOT eot=10 seconds", f"{e.median('eot=10'):.2f}"),
            ("EOT ratio eot=10 / eot=1 (call, median per round)", f"{eot.paired(0):.2f}x"),
            ("EOT ratio eot=10 / eot=1 (row seconds, median per round)", f"{eot.paired(1):.2f}x"),
        ]
    if mem is not None:
        runs = len(mem.peaks[("default", "--n 10000")])
        print(f"3. peak RSS of `robench attack` as a fresh child ({mem.method}), median of {runs} run(s)")
        print(f"   MNIST {MEMORY_ARCH} (1 epoch, --train-size 2000), --suite fgsm --eps 8/255, default --batch-size 256;")
        print(f"   MNIST tensors once loaded: {mem.dataset_mib:.1f} MiB (float32 train + test; test alone {mem.test_mib:.1f} MiB)")
        print(f"   {'command':<50}{'allocator':>22}{'peak MiB':>10}{'wall s':>8}")
        for (allocator, label), values in mem.peaks.items():
            shown = "reference: import robench, load_dataset('mnist')" if label == "load only" else f"robench attack --suite fgsm {label}"
            print(f"   {shown:<50}{allocator:>22}{statistics.median(values):>10.1f}{statistics.median(mem.walls[(allocator, label)]):>8.1f}")
        base = mem.median("default", "load only")
        differences = {}
        for allocator in ALLOCATORS:
            if (allocator, "--n 1000") not in mem.peaks:
                continue
            small, large = mem.median(allocator, "--n 1000"), mem.median(allocator, "--n 10000")
            differences[allocator] = large - small
            print(f"   {allocator + ' allocator:':<34} --n 10000 minus --n 1000 {large - small:+7.1f} MiB ({100 * (large - small) / small:+.1f}%);"
                  f" above load-only {small - base:+.0f} / {large - base:+.0f} MiB")
        print()
        summary += [
            ("peak RSS --n 1000 (MiB)", f"{mem.median('default', '--n 1000'):.1f}"),
            ("peak RSS --n 10000 (MiB)", f"{mem.median('default', '--n 10000'):.1f}"),
            ("peak RSS difference (MiB)", f"{differences['default']:+.1f}"),
        ]
        if "fixed mmap threshold" in differences:
            summary.append(("peak RSS difference, fixed mmap threshold (MiB)", f"{differences['fixed mmap threshold']:+.1f}"))
    elif memory_skipped:
        print(f"3. peak RSS: skipped ({memory_skipped})")
        print()
    summary.append(("benchmark wall time, training included (s)", f"{total:.0f}"))
    print("summary")
    print("-" * width)
    for label, value in summary:
        print(f"   {label:<58}{value:>14}")
    print("-" * width)


if __name__ == "__main__":
    sys.exit(main())
