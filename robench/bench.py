"""`benchmarks.toml`: named suites of train + attack runs with expected accuracy bounds.

Layout:

    [suite.NAME]                 # keys here are defaults for every run of the suite
    description = "..."
    include = ["other-suite"]    # runs of other suites, run first
    dataset = "digits"
    attacks = ["fgsm", "pgd"]
    eps = ["2/255", "8/255"]

    [[suite.NAME.run]]
    name = "quick-none"          # the checkpoint name in the workspace
    defense = "none"
    params = { theta = 0.8 }     # defense parameters
    expect = { clean = [0.9, 1.0], "pgd@8/255" = [0.0, 0.3] }   # accuracy bounds, fractions
"""

from __future__ import annotations

import difflib
import sys
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from robench.attacks import get_attack, parse_attack_options, parse_eps, parse_suite
from robench.errors import RobenchError, unknown_name
from robench.evaluation import AttackRun, attack_checkpoint
from robench.training import TrainConfig, train

def _toml_type(annotation: str) -> type:
    """The TOML value type of a settings field, from its annotation ("int | None" -> int)."""
    base = annotation.replace(" | None", "").split("[")[0].strip()
    return {"int": int, "float": float, "str": str, "bool": bool, "list": list, "dict": dict}[base]


# One schema per settings family: benchmarks.toml's keys are TrainConfig's and AttackRun's
# fields (so a setting added there is settable here), under these TOML names where they differ.
_TRAIN_NAMES = {"defense_params": "params"}
_ATTACK_NAMES = {"suite": "attacks", "seed": "attack_seed", "options": "attack_options", "batch_size": "attack_batch_size"}
TRAIN_KEYS = {_TRAIN_NAMES.get(f.name, f.name): _toml_type(f.type) for f in fields(TrainConfig)}
# Sharding is how one run is split over processes, not a setting of the benchmark.
ATTACK_KEYS = {_ATTACK_NAMES.get(f.name, f.name): _toml_type(f.type) for f in fields(AttackRun) if f.name != "shard"}
RUN_KEYS = {**TRAIN_KEYS, **ATTACK_KEYS, "name": str, "expect": dict, "decompose": dict}
SUITE_KEYS = {**TRAIN_KEYS, **ATTACK_KEYS, "description": str, "include": list, "run": list, "reference": str}
# What the arrays hold (bools are refused where numbers are expected), and which must be non-empty.
ELEMENTS: dict[str, tuple[type, ...]] = {"attacks": (str,), "eps": (str, int, float), "schedule": (int,), "include": (str,)}
NON_EMPTY = {"attacks", "eps"}


@dataclass
class Bound:
    metric: str        # "clean" or "<attack>@<eps text>"
    attack: str | None
    eps: float | None
    low: float
    high: float


@dataclass
class BenchRun:
    name: str
    settings: dict[str, Any]
    expect: list[Bound] = field(default_factory=list)


@dataclass
class Suite:
    name: str
    description: str
    runs: list[BenchRun]


def _check_keys(table: dict[str, Any], allowed: dict[str, type], where: str) -> None:
    for key, value in table.items():
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise RobenchError(f"{where}: unknown key {key!r}{hint}")
        kind = allowed[key]
        ok = isinstance(value, kind) or (kind is float and isinstance(value, int) and not isinstance(value, bool))
        if not ok or (kind is int and isinstance(value, bool)):
            raise RobenchError(f"{where}: key {key!r} must be a {kind.__name__}, got {value!r}")
        if key in ELEMENTS:
            allowed_items = ELEMENTS[key]
            names = {(str,): "strings", (int,): "integers"}.get(allowed_items, "strings or numbers")
            if key in NON_EMPTY and not value:
                raise RobenchError(f"{where}: key {key!r} is empty; list at least one, e.g. {key} = {['fgsm'] if key == 'attacks' else ['8/255']}")
            for item in value:
                if isinstance(item, bool) or not isinstance(item, allowed_items):
                    raise RobenchError(f"{where}: key {key!r} must hold {names}, got {item!r}")


def _bounds(expect: dict[str, Any], where: str) -> list[Bound]:
    bounds = []
    for metric, value in expect.items():
        at = f"{where}.expect.{metric!r}"
        if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value)):
            raise RobenchError(f"{at}: must be [low, high] accuracy fractions, got {value!r}")
        low, high = float(value[0]), float(value[1])
        if not 0 <= low <= high <= 1:
            raise RobenchError(f"{at}: bounds must satisfy 0 <= low <= high <= 1, got {value!r}")
        if metric == "clean":
            bounds.append(Bound(metric, None, None, low, high))
            continue
        if "@" not in metric:
            raise RobenchError(f"{at}: name a metric as 'clean' or 'ATTACK@EPS', e.g. 'pgd@8/255'")
        attack, eps_text = metric.split("@", 1)
        try:
            if attack not in ("worst-case", "verdict"):
                get_attack(attack)
            eps = parse_eps(eps_text)
        except RobenchError as exc:
            raise RobenchError(f"{at}: {exc}") from None
        bounds.append(Bound(metric, attack, eps, low, high))
    return bounds


def load_suites(path: Path) -> dict[str, dict[str, Any]]:
    if not path.is_file():
        raise RobenchError(f"{path} not found; run from the repository root or pass --file PATH")
    try:
        data = tomllib.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise RobenchError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8") from None
    except OSError as exc:
        raise RobenchError(f"cannot read {path} ({exc.strerror or exc}); check its permissions") from None
    except tomllib.TOMLDecodeError as exc:
        raise RobenchError(f"{path} is not valid TOML: {' '.join(str(exc).split())}") from None
    except RecursionError:
        raise RobenchError(f"{path} is not valid TOML: arrays or tables nested too deeply") from None
    except ValueError as exc:  # int() refusing an integer of over 4300 digits
        reason = "an integer has too many digits" if "digits" in str(exc) else " ".join(str(exc).split())[:120]
        raise RobenchError(f"{path} is not valid TOML: {reason}") from None
    suites = data.get("suite")
    extra = sorted(set(data) - {"suite"})
    if extra:
        raise RobenchError(f"{path}: unknown top-level key {extra[0]!r}; suites live under [suite.NAME]")
    if not isinstance(suites, dict) or not suites:
        raise RobenchError(f"{path}: no [suite.NAME] tables found")
    for name, table in suites.items():
        if not isinstance(table, dict):
            raise RobenchError(f"{path}: suite.{name} must be a table")
        _check_keys(table, SUITE_KEYS, f"{path}: suite.{name}")
    return suites


def resolve_suite(path: Path, name: str, _seen: tuple[str, ...] = ()) -> Suite:
    suites = load_suites(path)
    if name not in suites:
        raise unknown_name(f"suite in {path}", name, suites)
    if name in _seen:
        raise RobenchError(f"{path}: suite.{name} includes itself (through {' -> '.join(_seen)})")
    table = suites[name]
    defaults = {k: v for k, v in table.items() if k not in {"description", "include", "run", "reference"}}
    runs: list[BenchRun] = []
    for included in table.get("include", []):
        runs.extend(resolve_suite(path, included, _seen + (name,)).runs)
    for index, run in enumerate(table.get("run", [])):
        where = f"{path}: suite.{name}.run[{index}]"
        if not isinstance(run, dict):
            raise RobenchError(f"{where} must be a table")
        _check_keys(run, RUN_KEYS, where)
        if "name" not in run:
            raise RobenchError(f"{where}: key 'name' is missing (the checkpoint name)")
        settings = {**defaults, **{k: v for k, v in run.items() if k not in {"name", "expect"}}}
        for key in ("attacks", "eps"):
            if key not in settings:
                raise RobenchError(f"{where}: key {key!r} is missing (set it on the run or the suite)")
        try:
            for attack in settings["attacks"]:
                get_attack(attack)
            for eps in settings["eps"]:
                parse_eps(str(eps))
        except RobenchError as exc:
            raise RobenchError(f"{where}: {exc}") from None
        # Every run's settings are checked here, so a mistake in the last run stops the suite
        # before the first one trains.
        try:
            if "decompose" not in settings:
                _train_config(settings)
            _attack_plan(settings)
        except RobenchError as exc:
            raise RobenchError(f"{where}: {exc}") from None
        runs.append(BenchRun(run["name"], settings, _bounds(run.get("expect", {}), where)))
    if not runs:
        raise RobenchError(f"{path}: suite.{name} has no runs ([[suite.{name}.run]] tables or include)")
    trained: dict[str, Any] = {}
    for bench_run in runs:
        # Same name, same checkpoint: the effective settings (defaults filled in) must agree.
        s = bench_run.settings
        recipe = s["decompose"] if "decompose" in s else _train_config(s).config_hash()
        if trained.setdefault(bench_run.name, recipe) != recipe:
            raise RobenchError(f"{path}: suite.{name}: two runs named {bench_run.name!r} train different checkpoints; give each its own name")
    return Suite(name, table.get("description", ""), runs)


def _keys(settings: type, renames: dict[str, str]) -> list[tuple[str, str]]:
    """(field, TOML key) pairs of a settings dataclass."""
    return [(f.name, renames.get(f.name, f.name)) for f in fields(settings)]


def _flatten(options: dict[str, Any]) -> list[tuple[str, Any]]:
    """attack_options = { pgd = { steps = 500 } } -> [("pgd.steps", 500)]."""
    flat = []
    for attack, values in options.items():
        if not isinstance(values, dict):
            raise RobenchError(f"attack_options.{attack} must be a table like {{ steps = 500 }}")
        flat.extend((f"{attack}.{key}", value) for key, value in values.items())
    return flat


def _train_config(s: dict[str, Any]) -> TrainConfig:
    train_args = {field: s[key] for field, key in _keys(TrainConfig, _TRAIN_NAMES) if key in s}
    return TrainConfig(**{**train_args, "defense_params": dict(s.get("params", {}))})


def _attack_plan(s: dict[str, Any]) -> AttackRun:
    suite_specs = parse_suite(",".join(s["attacks"]))
    options = parse_attack_options([f"{k}={v}" for k, v in _flatten(s.get("attack_options", {}))], suite_specs)
    attack_args = {field: s[key] for field, key in _keys(AttackRun, _ATTACK_NAMES) if key in s}
    return AttackRun(**{**attack_args, "suite": suite_specs, "eps": [parse_eps(str(e)) for e in s["eps"]], "options": options})


def check_bounds(run: BenchRun, rows: list[dict[str, Any]]) -> list[str]:
    """Failed bounds of one run, as sentences; empty when everything is within bounds."""
    failures = []
    for bound in run.expect:
        if bound.attack is None:
            values = [r["clean_acc"] for r in rows]
        else:
            values = [r["robust_acc"] for r in rows if r["attack"] == bound.attack and r["eps"] is not None and abs(r["eps"] - bound.eps) < 1e-9]
        if not values:
            failures.append(f"{run.name}: {bound.metric} was expected but not measured (add it to the run's attacks/eps)")
            continue
        value = sum(values) / len(values)
        if not bound.low <= value <= bound.high:
            side = "below" if value < bound.low else "above"
            failures.append(f"{run.name}: {bound.metric} accuracy {value:.3f} is {side} the expected [{bound.low:.3f}, {bound.high:.3f}]")
    return failures


def run_suite(suite: Suite, workspace, data_dir=None, download: bool = False, device: str = "auto", console=None, retrain: bool = False,
              engine_options: Any = None):
    """Train what is missing (a checkpoint with the same config hash is reused), attack every
    run, and return (all result rows, failed bounds). With `engine_options` (robench.executors)
    the suite runs as a graph of jobs on a process pool, Ray or SLURM; one local worker runs
    it here, in this process."""
    from robench.executors import local_workers

    if engine_options is not None and (engine_options.executor != "local" or (engine_options.max_parallel or local_workers()) > 1):
        return run_suite_jobs(suite, workspace, engine_options, data_dir, download, device, console, retrain)
    all_rows, failures = [], []
    for run in suite.runs:
        workspace.checkpoint_dir(run.name)  # a name the file system refuses stops the suite before any work
    for run in suite.runs:
        s = run.settings
        if "decompose" in s:
            # `decompose = { from = "RUN", method = "l1", rank = 0.5 }`: made by `robench decompose`, not trained.
            from robench.decompose import decompose_run

            result = decompose_run(s["decompose"], workspace, run.name, data_dir=data_dir, download=download, console=console, overwrite=retrain)
        else:
            config = _train_config(s)
            result = train(config, workspace, name=run.name, data_dir=data_dir, download=download, device=device, console=console, overwrite=retrain)
        if result.skipped and console is not None:
            console.print(f"reusing checkpoint {run.name!r} (same settings, config hash {result.meta['config_hash']})")
        plan = _attack_plan(s)
        rows = attack_checkpoint(workspace, run.name, plan, data_dir=data_dir, download=download, device=device, console=console)
        all_rows.extend(rows)
        failures.extend(check_bounds(run, rows))
    return all_rows, failures


def run_suite_jobs(suite: Suite, workspace, options: Any, data_dir=None, download: bool = False, device: str = "auto", console=None,
                   retrain: bool = False):
    """The suite as a graph of jobs (robench.jobs) on the engine `options` names. Each job is
    submitted once those it depends on are done, at most the engine's parallelism at a time; a
    job the workspace already holds is not submitted. Then, run by run, the driver merges the
    shards from the cell store and writes the rows (the rows of a serial run)."""
    from concurrent.futures import FIRST_COMPLETED, wait

    from rich.console import Console
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from robench.errors import Interrupted
    from robench.executors import engine
    from robench.jobs import MARKER, Context, job_state, plan_jobs
    from robench.workspace import atomic_write_bytes

    console = console or Console(stderr=True)
    workspace.root.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(workspace.root / MARKER, b"robench workspace: workers check they see this file\n")
    runner = engine(options, workspace.root, suite.name)
    ctx = Context(suite.name, str(workspace.root.resolve()), str(Path(data_dir).resolve()) if data_dir else None, download, device, runner.threads, retrain)
    jobs = plan_jobs(suite, runner.workers)
    console.print(f"{len(jobs)} jobs on {options.executor} ({runner.workers} at a time, {runner.threads} thread(s) each)")
    pending, running, done, failed, checked = list(jobs), {}, set(), {}, set()
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(), console=console)
    try:
        with progress:
            task = progress.add_task(f"suite {suite.name}", total=len(jobs))
            while pending or running:
                for job in [j for j in pending if any(d in failed for d in j.after)]:
                    failed[job.id] = f"not run: {next(d for d in job.after if d in failed)} failed"
                    pending.remove(job)
                    progress.advance(task)
                ready = [j for j in pending if all(d in done for d in j.after)]
                # Whether the workspace already holds a job is asked once, when it becomes ready,
                # not at every turn of this loop while it waits for a free worker.
                for job in [j for j in ready if j.id not in checked]:
                    checked.add(job.id)
                    if job_state(workspace, suite.name, job)[0] == "done":
                        if job.kind != "attack":
                            console.print(f"reusing checkpoint {job.run!r} (same settings)")
                        done.add(job.id)
                        pending.remove(job)
                        ready.remove(job)
                        progress.advance(task)
                batch = ready[: max(0, runner.workers - len(running))]
                if batch:
                    running.update(zip(runner.submit(batch, ctx), batch))
                    for job in batch:
                        pending.remove(job)
                if not running:
                    continue
                finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for future in finished:
                    job = running.pop(future)
                    error = future.exception()
                    if error is None:
                        done.add(job.id)
                    else:
                        failed[job.id] = str(error)
                        console.print(f"[red]failed[/] {escape(job.id)}: {escape(str(error))}")
                    progress.advance(task)
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted: finished jobs are kept in {workspace.root}; re-run the same command to go on") from None
    finally:
        runner.close()
    all_rows, failures = [], []
    for index, run in enumerate(suite.runs):
        broken = [failed[j.id] for j in jobs if j.id in failed and (j.index == index or (j.run == run.name and j.kind != "attack"))]
        if broken:
            failures.append(f"{run.name}: {broken[0]}")
            continue
        plan = replace(_attack_plan(run.settings), shard=(0, 0))
        rows = attack_checkpoint(workspace, run.name, plan, data_dir=data_dir, download=download, device=device, console=console)
        if rows is None:
            failures.append(f"{run.name}: some of its attack shards are unfinished; re-run the suite")
            continue
        all_rows.extend(rows)
        failures.extend(check_bounds(run, rows))
    return all_rows, failures
