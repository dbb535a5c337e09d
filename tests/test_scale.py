"""Scale-out: torchrun (2 CPU processes, gloo) for train and attack; a suite as jobs on the local
process pool, a real two-node Ray cluster on localhost and a real single-node SLURM; bench
status and bench plan. The rows must equal a serial run's, whatever ran them."""

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import REPO, SHARED_DATA

ROBENCH = str(Path(sys.executable).parent / "robench")
# Columns that say when and how fast, not what was measured.
VOLATILE = ["seconds", "timestamp", "batch_size"]

MINI = """
[suite.mini]
description = "quick's shape at test size: none and tensor dropout, FGSM and PGD"
dataset = "digits"
arch = "small-cnn"
epochs = 2
train_size = 400
seed = 0
attacks = ["fgsm", "pgd"]
eps = ["32/255"]
n = 64
runs = 2
eot = 2
attack_batch_size = 32
verdict = false
convergence_check = false

[[suite.mini.run]]
name = "mini-none"
defense = "none"
expect = { clean = [0.3, 1.0] }

[[suite.mini.run]]
name = "mini-td"
defense = "tensor-dropout"
params = { theta = 0.8 }
expect = { clean = [0.2, 1.0] }
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(args, env=None, timeout=600, check=True):
    result = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})
    if check:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def torchrun(*args, env=None):
    return run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()), "--", ROBENCH, *args],
               env={"OMP_NUM_THREADS": "1", **(env or {})})


def rows(workspace: Path) -> pd.DataFrame:
    frame = pd.read_csv(workspace / "results" / "attacks.csv").drop(columns=VOLATILE)
    return frame.sort_values(["checkpoint", "attack", "eps"]).reset_index(drop=True)


def bench(workspace: Path, toml: Path, *options: str, env=None):
    return run([ROBENCH, "bench", "run", "mini", "--file", str(toml), "--workspace", str(workspace), *options], env=env)


@pytest.fixture(scope="module")
def serial(tmp_path_factory):
    """The suite run in one process (--max-parallel 1): the reference rows."""
    root = tmp_path_factory.mktemp("serial")
    toml = root / "mini.toml"
    toml.write_text(MINI)
    bench(root / "ws", toml, "--max-parallel", "1", env={"OMP_NUM_THREADS": "1"})
    return toml, rows(root / "ws")


# --- torchrun ---------------------------------------------------------------------------------

@pytest.mark.slow
def test_torchrun_trains_to_single_process_accuracy_and_resumes(tmp_path):
    ws = tmp_path / "ws"
    common = ["train", "--workspace", str(ws), "--epochs", "6", "--lr", "0.05"]
    run([ROBENCH, *common, "--name", "single"], env={"OMP_NUM_THREADS": "1"})
    torchrun(*common, "--name", "ddp")
    import robench

    single, ddp = robench.load("single", workspace=ws), robench.load("ddp", workspace=ws)  # loads in one process
    assert ddp.meta["distributed"] == {"processes": 2, "backend": "gloo", "sync_bn": False}
    assert ddp.meta["clean_acc"] > 0.9 and abs(ddp.meta["clean_acc"] - single.meta["clean_acc"]) <= 0.03
    assert [r["epoch"] for r in ddp.meta["history"]] == list(range(1, 7))

    # Killed under torchrun after its second committed epoch, the run resumes there under
    # torchrun and ends with every epoch recorded once.
    import json
    import signal
    import time

    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()), "--", ROBENCH,
               *common[:4], "8", "--lr", "0.05", "--name", "cut"]
    meta_path = ws / "checkpoints" / "cut" / "meta.json"
    process = subprocess.Popen(command, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not (meta_path.is_file() and json.loads(meta_path.read_text())["epochs_done"] >= 2):
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    # torchrun's workers live in sessions of their own: kill them by their command line too.
    subprocess.run(["pkill", "-9", "-f", "--", f"--workspace {ws} --epochs 8"], check=False)
    time.sleep(1)
    cut_at = json.loads(meta_path.read_text())["epochs_done"]
    assert 2 <= cut_at < 8
    resumed = torchrun(*common[:4], "8", "--lr", "0.05", "--name", "cut")
    assert f"resuming 'cut' from epoch {cut_at}/8" in resumed.stderr
    meta = json.loads(meta_path.read_text())
    assert meta["status"] == "complete" and [r["epoch"] for r in meta["history"]] == list(range(1, 9))


@pytest.mark.slow
def test_torchrun_attack_rows_equal_one_process(tmp_path):
    ws = tmp_path / "ws"
    run([ROBENCH, "train", "--workspace", str(ws), "--defense", "tensor-dropout", "--theta", "0.8", "--epochs", "2", "--train-size", "400", "--name", "td"])
    attack = ["attack", "-c", "td", "--suite", "fgsm,pgd", "--eps", "32/255", "--n", "96", "--batch-size", "32", "--runs", "2", "--eot", "2",
              "--no-verdict", "--no-convergence-check"]
    one = tmp_path / "one"
    shutil.copytree(ws / "checkpoints", one / "checkpoints")
    run([ROBENCH, *attack, "--workspace", str(one)], env={"OMP_NUM_THREADS": "1"})
    split = torchrun(*attack, "--workspace", str(ws))
    assert split.stdout.count("results appended") == 1  # rank 0 alone prints and writes
    distributed, single = rows(ws), rows(one)
    assert len(distributed) == len(single) == 4  # fgsm, pgd, worst-case, verdict: each once
    pd.testing.assert_frame_equal(distributed, single)


def test_sync_bn_needs_torchrun(cli):
    result = cli("train", "--epochs", "1", "--sync-bn")
    assert result.exit_code == 2 and "--sync-bn synchronizes batch norm across torchrun processes" in result.stderr


# --- executors --------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.xdist_group("executors")
def test_local_pool_rows_equal_serial_and_status(serial, tmp_path):
    toml, reference = serial
    ws = tmp_path / "ws"
    result = bench(ws, toml, "--executor", "local", "--max-parallel", "2")
    assert "6 jobs on local (2 at a time, 1 thread(s) each)" in result.stderr
    pd.testing.assert_frame_equal(rows(ws), reference)

    status = run([ROBENCH, "bench", "status", "mini", "--file", str(toml), "--workspace", str(ws), "--shards", "2"]).stdout
    assert status.count("done") >= 6 and "pending" not in status and "6 done" in status
    # A lost block file makes its shard pending again, and a re-run redoes only that shard.
    block = next((ws / "cells" / "mini-td").glob("pgd-*/block-000000032.safetensors"))
    block.unlink()
    status = run([ROBENCH, "bench", "status", "mini", "--file", str(toml), "--workspace", str(ws), "--shards", "2"]).stdout
    assert "attack/mini-td/2of2" in status and "1 of its blocks are gone" in status and "5 done, 1 pending" in status
    again = bench(ws, toml, "--executor", "local", "--max-parallel", "2")
    assert again.stderr.count("reusing checkpoint") == 2 and block.is_file()


@pytest.mark.slow
@pytest.mark.xdist_group("executors")
def test_ray_two_node_cluster_rows_equal_serial(serial, tmp_path):
    ray = pytest.importorskip("ray", reason="Ray is an optional extra; CI installs it (pip install -e '.[ray]')")
    del ray
    toml, reference = serial
    port = free_port()
    ray_bin = str(Path(sys.executable).parent / "ray")
    # Token authentication (Ray >= 2.5x, on when ~/.ray/auth_token exists) is for clusters
    # reachable by others; this one listens on localhost for the test only.
    env = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    temp = f"/tmp/ray-{port}"
    try:
        run([ray_bin, "start", "--head", "--port", str(port), "--num-cpus", "1", "--include-dashboard", "false", "--temp-dir", temp, "--disable-usage-stats"], env=env, timeout=180)
        run([ray_bin, "start", "--address", f"127.0.0.1:{port}", "--num-cpus", "1", "--disable-usage-stats"], env=env, timeout=180)
        ws = tmp_path / "ws"
        result = bench(ws, toml, "--executor", "ray", "--address", f"127.0.0.1:{port}", env=env)
        assert "6 jobs on ray (2 at a time" in result.stderr
        pd.testing.assert_frame_equal(rows(ws), reference)
        hosts = {__import__("json").loads(p.read_text())["pid"] for p in (ws / "jobs" / "mini").glob("*.json")}
        assert len(hosts) >= 2  # the jobs ran in more than one worker process
    finally:
        run([ray_bin, "stop", "--force"], check=False, timeout=120)


@pytest.fixture(scope="module")
def slurm():
    """A real single-node SLURM (scripts/local-slurm.sh), or a skip that says why it cannot start."""
    if os.geteuid() != 0 and shutil.which("slurmctld") is None:
        pytest.skip("SLURM not installed and not root to install it (scripts/local-slurm.sh install)")
    started = run([str(REPO / "scripts" / "local-slurm.sh"), "start"], check=False, timeout=600)
    if started.returncode != 0:
        reason = (started.stderr.strip().splitlines() or ["no output"])[-1]
        print(f"SLURM test skipped: the daemons could not start here: {reason}", file=sys.stderr)
        pytest.skip(f"local SLURM could not start: {reason}")
    yield {"SLURM_CONF": os.environ.get("SLURM_LOCAL", "/tmp/robench-slurm") + "/slurm.conf"}
    run([str(REPO / "scripts" / "local-slurm.sh"), "stop"], check=False)


@pytest.mark.slow
@pytest.mark.xdist_group("executors")
def test_slurm_rows_equal_serial(serial, slurm, tmp_path):
    pytest.importorskip("submitit", reason="submitit is an optional extra; CI installs it (pip install -e '.[slurm]')")
    toml, reference = serial
    ws = tmp_path / "ws"
    result = bench(ws, toml, "--executor", "slurm", "--max-parallel", "2", "--time", "10", env=slurm)
    assert "6 jobs on slurm" in result.stderr
    pd.testing.assert_frame_equal(rows(ws), reference)
    logs = list((ws / "jobs" / "mini" / "slurm").glob("*/*_log.out"))
    assert len(logs) >= 6  # each job was a SLURM job with its own log


def test_job_graph_orders_training_before_attacks_and_splits_shards():
    from robench.bench import resolve_suite
    from robench.jobs import plan_jobs

    suite = resolve_suite(REPO / "benchmarks.toml", "quick")
    jobs = plan_jobs(suite, shards=3)
    assert [j.id for j in jobs[:2]] == ["train/quick-none", "train/quick-td0.8"]
    attacks = [j for j in jobs if j.kind == "attack"]
    # n = 450 in blocks of 256: two blocks, so at most two shards however many are asked for.
    assert [j.id for j in attacks] == ["attack/quick-none/1of2", "attack/quick-none/2of2", "attack/quick-td0.8/1of2", "attack/quick-td0.8/2of2"]
    assert all(j.after == (f"train/{j.run}",) for j in attacks)
    decomposed = plan_jobs(resolve_suite(REPO / "benchmarks.toml", "decompose-vgg16-cifar10"), shards=1)
    kinds = {j.id: j for j in decomposed}
    assert any(j.kind == "decompose" and j.after and kinds[j.after[0]].kind == "train" for j in decomposed)


def test_worker_that_cannot_see_the_workspace_says_so(tmp_path):
    from robench.errors import RobenchError
    from robench.jobs import Context, Job, execute

    job = Job("train/x", "train", "x", 0, {"dataset": "digits", "attacks": ["fgsm"], "eps": ["8/255"]})
    with pytest.raises(RobenchError, match="is not visible on .*: the driver and every worker must see one shared folder"):
        execute(job, Context("mini", str(tmp_path / "elsewhere")))


def test_failed_job_is_reported_and_its_dependents_not_run(tmp_path, cli):
    toml = tmp_path / "bad.toml"
    # A checkpoint name that exists with other settings makes the train job fail (no --retrain);
    # the attack shards after it never start.
    toml.write_text(MINI[: MINI.index("[[suite.mini.run]]", MINI.index("mini-none"))])
    from robench.training import TrainConfig, train
    from robench.workspace import Workspace

    ws = Workspace(tmp_path / "ws")
    train(TrainConfig(epochs=1, train_size=100), ws, name="mini-none", data_dir=SHARED_DATA)
    result = cli("bench", "run", "mini", "--file", toml, "--max-parallel", "2", "--workspace", ws.root)
    assert result.exit_code == 1
    assert "failed train/mini-none: train/mini-none: checkpoint 'mini-none' already exists with other settings" in " ".join(result.stderr.split())
    assert "REGRESSION mini-none: train/mini-none: checkpoint 'mini-none' already exists" in " ".join(result.stdout.split())
    assert not (ws.root / "cells").exists()
    status = " ".join(cli("bench", "status", "mini", "--file", toml, "--workspace", ws.root, "--shards", "2").stdout.split())
    assert "train/mini-none │ - │ failed" in status and "1 failed, 2 pending" in status


def test_plan_estimates_every_job(tmp_path, cli):
    toml = tmp_path / "mini.toml"
    toml.write_text(MINI)
    result = cli("bench", "plan", "mini", "--file", toml, "--device", "cpu")
    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.split())
    assert "suite mini: 6 jobs" in text and "CPU-hours in all" in text
    from robench.bench import resolve_suite
    from robench.cost import estimate
    from robench.jobs import plan_jobs
    from robench.workspace import Workspace

    costs, where = estimate(plan_jobs(resolve_suite(toml, "mini"), 2), Workspace(tmp_path / "ws"), SHARED_DATA, "cpu")
    assert where == "CPU" and all(seconds > 0 for seconds, _ in costs)
    # 400 training examples in batches of 64: 7 steps per epoch; 64 examples in 2 shards of 32.
    assert [basis.endswith("x 7 steps x 2 epochs") for _, basis in costs[:2]] == [True, True]
    assert all(basis.endswith("passes x 32 examples") for _, basis in costs[2:])
    # The stochastic model's attack makes 2 EOT samples per pass: twice the passes at least.
    passes = [int(basis.split(" x ")[1].split()[0].replace(",", "")) for _, basis in costs[2:]]
    assert passes[2] >= 2 * passes[0]


@pytest.mark.parametrize("args,fragment", [
    (["--executor", "dask"], "--executor must be one of local, ray, slurm, got 'dask'"),
    (["--max-parallel", "0"], "--max-parallel must be >= 1, got 0"),
    (["--executor", "slurm", "--time", "0"], "--time must be >= 1 minute, got 0"),
])
def test_bad_executor_options(tmp_path, cli, args, fragment):
    toml = tmp_path / "mini.toml"
    toml.write_text(MINI)
    result = cli("bench", "run", "mini", "--file", toml, *args)
    assert result.exit_code == 2 and fragment in result.stderr and "Traceback" not in result.output


def test_slurm_without_sbatch_says_where_to_run(tmp_path, cli, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    toml = tmp_path / "mini.toml"
    toml.write_text(MINI)
    result = cli("bench", "run", "mini", "--file", toml, "--executor", "slurm")
    assert result.exit_code == 2 and "sbatch is not on PATH; run on a SLURM login node" in result.stderr


@pytest.mark.parametrize("args,fragment", [
    (["bench", "run", "quick"], "bench run spreads its jobs with --executor; start it without torchrun"),
    (["decompose", "--checkpoint", "x"], "decompose runs as one process; start it without torchrun"),
])
def test_commands_that_run_as_one_process_refuse_torchrun(cli, monkeypatch, args, fragment):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    if args[0] == "bench":
        args = [*args, "--file", str(REPO / "benchmarks.toml")]
    result = cli(*args)
    assert result.exit_code == 2 and fragment in result.stderr
