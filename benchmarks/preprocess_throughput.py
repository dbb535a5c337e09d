"""Images per second of the preprocessing defenses on 32x32x3 batches, against the reference
implementations, with the PSNR of each output to the clean image, and peak memory on a
10,000-image test set.

Measured in one process, each variant timed on the same images (median of --repeats runs
after one warm-up run):

1. every robench preprocessing defense at its defaults (keypoint-completion on a randomly
   initialized small CNN: its cost is the completion, not the network; quilting with a database
   of 20,000 patches cut from the CIFAR-10 subset's training images),
2. ART's `TotalVarMin` (adversarial-robustness-toolbox, scipy L-BFGS-B, one image and one
   channel at a time; `pip install adversarial-robustness-toolbox`, part of the `bench` extra)
   at keep probability 0.5, max_iter 10, for lamb = 0.5 (ART's default) and 0.1, against robench
   `tvm` at the same keep probability (its defaults: weight 0.03, 100 iterations, and 30),
3. ME-Net's per-image numpy USVT (`usvt()` of ME-Net's train_pure.py, loaded from --menet-src;
   observation probability 0.9, svdprob 0.8, channels concatenated: the settings of its test
   time) against robench `me-net --me-method usvt` at the same settings (rank 0.8) and at rank 8.
   ME-Net's code is not part of robench: fetch github.com/YyzHarry/ME-Net into a temporary
   directory and pass the path of its train_pure.py.

Ratios are robench images/s over the reference's. PSNR is to the clean image (dB, mean over
images); ART and ME-Net get the same images. Peak RSS: each defense preprocesses
--rss-images images (the subset's test images tiled) in a fresh subprocess, once in chunks of
256 (what the defenses do) and once as a single chunk. The peak-RSS mark is reset after the
data are loaded (/proc/self/clear_refs), so the table shows the RSS before preprocessing and
the peak during it.

    python benchmarks/preprocess_throughput.py --threads 2 --menet-src /tmp/me-net/train_pure.py
"""

from __future__ import annotations

import argparse
import os
import sys


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "cifar10-partial", "cifar10_exact_subset.npz"))
    p.add_argument("--n", type=int, default=256, help="images per batch for the batched robench kernels")
    p.add_argument("--n-slow", type=int, default=32, help="images for the slow variants (ART, keypoint-completion, nucnorm)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1); the numpy/scipy references always run on one")
    p.add_argument("--menet-src", default=None, help="path to ME-Net's train_pure.py (skipped when absent)")
    p.add_argument("--rss-images", type=int, default=10000)
    p.add_argument("--rss-variants", default="me-net usvt,me-net softimpute,splic", help="comma-separated variants for the peak-RSS table")
    p.add_argument("--skip-rss", action="store_true")
    p.add_argument("--sections", default="defenses,art,menet,rss", help="comma-separated parts to run: defenses, art, menet, rss")
    p.add_argument("--rss-child", nargs=2, metavar=("SPEC", "CHUNK"), help=argparse.SUPPRESS)
    return p.parse_args()


ARGS = parse()
for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = str(ARGS.threads)
# The references (numpy/scipy, OpenBLAS) run one image at a time: small per-image LAPACK calls
# gain nothing from threads, and on a loaded machine OpenBLAS threads made them 4-17x slower.
# They keep one thread; --threads applies to torch.
os.environ["OPENBLAS_NUM_THREADS"] = "1"
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import ast  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
import types  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(ARGS.threads)

from robench.preprocess.chunks import psnr  # noqa: E402
from robench.preprocess.quilting import sample_patches  # noqa: E402
from robench.registry import defense_stack  # noqa: E402

SPECS = {
    "tvm": ("tvm", {}),
    "tvm-30it": ("tvm", {"tvm_iters": 30}),
    "quilting": ("quilting", {"quilt_data": "cifar10-subset"}),
    "splic": ("splic", {}),
    "me-net usvt": ("me-net", {}),
    "me-net usvt rank8": ("me-net", {"me_rank": 8}),
    "me-net softimpute": ("me-net", {"me_method": "softimpute"}),
    "me-net nucnorm": ("me-net", {"me_method": "nucnorm"}),
    "keypoint-completion": ("keypoint-completion", {}),
}
SLOW = {"keypoint-completion", "me-net nucnorm"}


def load(path: str) -> tuple[torch.Tensor, torch.Tensor]:
    data = np.load(path)
    test = torch.tensor(data["test_images"]).permute(0, 3, 1, 2).float() / 255
    train = torch.tensor(data["train_images"]).permute(0, 3, 1, 2).float() / 255
    return test, train


def timed(fn, repeats: int) -> tuple[float, object]:
    out = fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def make(label: str, train: torch.Tensor):
    spec, params = SPECS[label]
    stack = defense_stack(spec, params)
    defense = stack.parts[0]
    if spec == "quilting":
        defense.set_database(sample_patches(train, 20000, 5, torch.Generator().manual_seed(0)))
    if defense.needs_model:
        from robench.models import build_model

        net = build_model("small-cnn", 3, 10, (32, 32), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)).eval()
        return lambda x: defense.preprocess(x, model=net)
    return defense.preprocess


def menet_usvt(src: str):
    """ME-Net's usvt() from its own file (never copied into robench), with its test-time args."""
    tree = ast.parse(open(src).read())
    body = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "usvt"]
    if not body:
        raise SystemExit(f"{src} has no usvt(); pass ME-Net's train_pure.py")
    scope = {"np": np, "args": types.SimpleNamespace(me_channel="concat", svdprob=0.8)}
    exec(compile(ast.Module(body=body, type_ignores=[]), src, "exec"), scope)
    return scope["usvt"]


def row(name: str, n: int, seconds: float, quality: float, ref: tuple[float, float] | None = None) -> str:
    rate = n / seconds
    ratio = f"{rate / ref[0]:.1f}x" if ref else ""
    dpsnr = f"{quality - ref[1]:+.2f}" if ref else ""
    return f"| {name} | {n} | {rate:,.1f} | {quality:.2f} | {ratio} | {dpsnr} |"


def rss_child(label: str, chunk: int) -> None:
    test, train = load(ARGS.data)
    reps = -(-ARGS.rss_images // len(test))
    x = test.repeat(reps, 1, 1, 1)[: ARGS.rss_images].contiguous()
    fn = make(label, train)
    del train
    base = _reset_peak()
    import robench.preprocess.chunks as chunks

    if chunk != 256:
        original = chunks.chunked

        def one_chunk(f, xs, chunk=256, progress=False, description="preprocess"):
            return original(f, xs, chunk=len(xs), progress=progress, description=description)

        for module in [m for name, m in sys.modules.items() if name.startswith("robench.defenses.")]:
            if hasattr(module, "chunked"):
                module.chunked = one_chunk
        start = time.perf_counter()
        out = fn(x)
    else:
        from robench.preprocess.chunks import chunked

        start = time.perf_counter()
        # The defenses chunk internally; the outer loop only adds the progress bar.
        out = chunked(fn, x, chunk=256, progress=True, description=label)
    seconds = time.perf_counter() - start
    peak = _status_kib("VmHWM") if base is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"base_mib": (base or 0) / 1024, "peak_mib": peak / 1024, "seconds": seconds, "psnr": psnr(out, x).mean().item()}))


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def _reset_peak() -> int | None:
    """Current RSS (KiB) after resetting the kernel's peak-RSS mark to it, so that the peak
    measured afterwards is that of the preprocessing, not of importing torch and loading data.
    None where /proc/self/clear_refs is unavailable (then ru_maxrss, the whole process's peak)."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
        return _status_kib("VmRSS")
    except OSError:
        return None


def compare_art(x: torch.Tensor, slow: torch.Tensor, train: torch.Tensor) -> None:
    try:
        from art.defences.preprocessor import TotalVarMin
    except ImportError:
        print("\nART not installed: pip install adversarial-robustness-toolbox (the `bench` extra); skipped")
        return
    images = slow.permute(0, 2, 3, 1).numpy().copy()
    for lamb in (0.5, 0.1):
        np.random.seed(0)
        art = TotalVarMin(prob=0.5, norm=2, lamb=lamb, max_iter=10, clip_values=(0.0, 1.0))
        seconds, (out, _) = timed(lambda: art(images), 1)
        ref = (len(slow) / seconds, psnr(torch.tensor(out).permute(0, 3, 1, 2), slow).mean().item())
        print(row(f"ART TotalVarMin(prob=0.5, lamb={lamb}, max_iter=10)", len(slow), seconds, ref[1]))
        for label in ("tvm", "tvm-30it"):
            torch.manual_seed(0)
            s, o = timed(lambda: make(label, train)(x), ARGS.repeats)
            print(row(f"  robench {label} vs that", len(x), s, psnr(o, x).mean().item(), ref))


def main() -> None:
    if ARGS.rss_child:
        rss_child(ARGS.rss_child[0], int(ARGS.rss_child[1]))
        return
    load_avg = os.getloadavg()
    print(f"threads {ARGS.threads}, torch {torch.__version__}, load average {load_avg[0]:.2f} {load_avg[1]:.2f} {load_avg[2]:.2f}, OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}")
    test, train = load(ARGS.data)
    x = test[: ARGS.n]
    slow = test[: ARGS.n_slow]
    sections = {part.strip() for part in ARGS.sections.split(",")}
    print("\n| variant | images | images/s | PSNR (dB) | speed-up vs reference | PSNR vs reference |\n|---|---|---|---|---|---|")
    for label in SPECS if "defenses" in sections else ():
        batch = slow if label in SLOW else x
        torch.manual_seed(0)
        seconds, out = timed(lambda: make(label, train)(batch), 1 if label in SLOW else ARGS.repeats)
        print(row(label, len(batch), seconds, psnr(out, batch).mean().item()), flush=True)

    # ART TotalVarMin vs tvm.
    if "art" in sections:
        compare_art(x, slow, train)

    # ME-Net's per-image USVT vs me-net usvt.
    if "menet" not in sections:
        pass
    elif ARGS.menet_src is None:
        print("\nME-Net: --menet-src not given; skipped")
    else:
        usvt = menet_usvt(ARGS.menet_src)
        pixels = (x.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
        np.random.seed(0)
        seconds, out = timed(lambda: np.stack([usvt(img.copy(), 0.9) for img in pixels]), ARGS.repeats)
        ref = (len(x) / seconds, psnr(torch.tensor(out / 255, dtype=torch.float32).permute(0, 3, 1, 2), x).mean().item())
        print(row("ME-Net usvt() per image (numpy, p=0.9, svdprob 0.8, concat)", len(x), seconds, ref[1]))
        for label in ("me-net usvt", "me-net usvt rank8"):
            torch.manual_seed(0)
            s, o = timed(lambda: make(label, train)(x), ARGS.repeats)
            print(row(f"  robench {label} vs that", len(x), s, psnr(o, x).mean().item(), ref))

    if ARGS.skip_rss or "rss" not in sections:
        return
    print(f"\npeak RSS preprocessing {ARGS.rss_images:,} images (fresh process each):\n\n| variant | chunk | RSS after loading (MiB) | peak RSS (MiB) | seconds | PSNR (dB) |\n|---|---|---|---|---|---|")
    for label in [v.strip() for v in ARGS.rss_variants.split(",") if v.strip()]:
        if label not in SPECS:
            raise SystemExit(f"--rss-variants: unknown variant {label!r}; one of {', '.join(SPECS)}")
        for chunk in (256, ARGS.rss_images):
            cmd = [sys.executable, __file__, "--threads", str(ARGS.threads), "--data", ARGS.data, "--rss-images", str(ARGS.rss_images), "--rss-child", label, str(chunk)]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                print(f"| {label} | {chunk} | failed: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode} | | | |")
                continue
            r = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"| {label} | {chunk} | {r['base_mib']:.0f} | {r['peak_mib']:.0f} | {r['seconds']:.1f} | {r['psnr']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
