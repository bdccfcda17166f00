"""``ptycho-exp plan``: expand a sweep like Hydra's basic sweeper and show each job's status.

Nothing runs: configs are composed with Hydra's compose API (:mod:`ptycho_exp.compose`), hashed exactly as a job hashes
itself, and compared with the ``result.json`` files already in the sweep folder.
"""
from __future__ import annotations

import itertools
import sys
from pathlib import Path
from typing import Any

from ptycho_exp import results
from ptycho_exp.compose import compose_job_config, compose_many, conf_dir, job_config_dict, split_overrides


def expand_sweep(overrides: list[str], sample: bool | None = None) -> tuple[list[list[str]], Any]:
    """Job override lists in Hydra's basic-sweeper order, and the composed (hydra) config.

    ``sample`` (default: when the sweeper is Optuna's): instead of every combination, one job with the
    first value of each search dimension (an interval's low end) plus, for each dimension, one job per
    other value (an interval's high end) with the rest at their first: the values a search can reach,
    checked one at a time.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    fixed, _ = split_overrides(overrides)
    base = compose_job_config(fixed, return_hydra=True)
    if sample is None:
        sample = _is_optuna(base)
    params = dict(base.hydra.sweeper.get("params") or {})
    args = [f"{k}={v}" for k, v in params.items()] + list(overrides)
    parsed = OverridesParser.create().parse_overrides(args)
    keyed: dict[str, list[str]] = {}
    for ov in parsed:  # later values of a key win, as in Hydra
        key = ov.get_key_element()
        keyed[key] = [f"{key}={v}" for v in _sweep_values(ov)] if ov.is_sweep_override() \
            else [f"{key}={ov.get_value_element_as_str()}"]
    if not sample:
        return [list(combo) for combo in itertools.product(*keyed.values())], base
    first = [values[0] for values in keyed.values()]
    jobs = [first]
    for i, values in enumerate(keyed.values()):
        jobs += [first[:i] + [v] + first[i + 1:] for v in values[1:]]
    return jobs, base


def _sweep_values(ov: Any) -> list[str]:
    """The values of a sweep override as strings; an interval gives its two ends."""
    from hydra.core.override_parser.types import IntervalSweep

    value = ov.value()
    if isinstance(value, IntervalSweep):
        ends = [value.start, value.end]
        return [str(int(v)) if float(v).is_integer() else repr(float(v)) for v in ends]
    return list(ov.sweep_string_iterator())


def job_overrides_of(jobs: list[list[str]]) -> list[list[str]]:
    """Each job's overrides without Hydra's own (``hydra.*``, ``hydra/...``): what its config depends on."""
    return [[o for o in job if not o.lstrip("+~").startswith(("hydra.", "hydra/"))] for job in jobs]


def check_overrides(overrides: list[str], multirun: bool) -> list:
    """Compose every job a run (``multirun``: a sweep) of these overrides would start and check it as the
    run would, before anything is written: the config ranges, the data files (headers and values) and
    Hydra's ``_target_`` s (:func:`ptycho_exp.errors.check_job_configs`). An Optuna sweep is checked on
    a sample of its search space (:func:`expand_sweep`); identical configs are checked once.

    Returns
    -------
    The composed job configs.

    Raises
    ------
    ptycho_exp.config.ConfigError
        A value the run would refuse, naming the key and the fix.
    hydra.errors.HydraException, omegaconf.errors.OmegaConfBaseException
        Overrides that do not compose (unknown key, wrong type, unknown group option).
    """
    from ptycho_exp.errors import check_job_configs

    if multirun:
        jobs, base = expand_sweep(overrides)
    else:
        jobs, base = [list(overrides)], compose_job_config(list(overrides), return_hydra=True)
    cfgs = compose_jobs(job_overrides_of(jobs))
    check_job_configs(cfgs, base.hydra)
    return cfgs


def plan(overrides: list[str]) -> tuple[list[dict], Path | None]:
    """One row per job: number, overrides, config hash, status in the sweep folder.

    Raises
    ------
    ValueError
        In one line, for overrides a run would refuse (the same checks, :func:`check_overrides`).
    """
    from omegaconf import OmegaConf

    from ptycho_exp.config import ConfigError
    from ptycho_exp.errors import check_job_configs, one_line_error

    try:
        jobs, base = expand_sweep(overrides)
        job_overrides = job_overrides_of(jobs)
        cfgs = compose_jobs(job_overrides)
        check_job_configs(cfgs, base.hydra)
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever Hydra or OmegaConf refuses: one line
        raise ValueError(one_line_error(exc)) from None
    sweep_dir = None
    if any(o.startswith("hydra.sweep.dir=") for o in overrides):
        sweep_dir = Path(next(o for o in overrides if o.startswith("hydra.sweep.dir=")).split("=", 1)[1])
    rows = []
    for num, (job_over, cfg) in enumerate(zip(job_overrides, cfgs)):
        h = results.config_hash(job_config_dict(cfg))
        status, seconds = "pending", None
        if sweep_dir is not None:
            try:
                prev = results.load_result(sweep_dir / str(num))
            except results.UnreadableResult as exc:
                print(f"ptycho-exp plan: skipped unreadable result file {exc}", file=sys.stderr)
                prev, status = None, "unreadable result (runs again)"
            if prev:
                same = prev.get("config_hash") == h
                status = prev.get("status", "?") if same else "stale (config changed)"
                seconds = (prev.get("timings") or {}).get("total_s")
        rows.append({"job": num, "overrides": " ".join(o for o in job_over if o in _swept(jobs)),
                     "model": OmegaConf.select(cfg, "model.name"), "hash": h, "status": status,
                     "seconds": seconds, "sampled": _is_optuna(base)})
    return rows, sweep_dir


def _is_optuna(base: Any) -> bool:
    return "optuna" in str(base.hydra.sweeper.get("_target_", "")).lower()


def _is_structural(override: str, groups: set[str]) -> bool:
    """Whether an override changes the defaults list (a config group, ``+``/``~``/``@``), not a value."""
    key = override.split("=", 1)[0]
    return key[:1] in "+~" or "@" in key or key in groups


def compose_jobs(job_overrides: list[list[str]]) -> list:
    """Resolved job configs, as :func:`compose_job_config` gives them, composing each distinct set of
    group choices once and applying the plain ``key=value`` overrides to a copy (a sweep of 24 jobs
    over 2 models composes twice, not 24 times)."""
    import copy

    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    groups = {p.name for p in Path(conf_dir()).iterdir() if p.is_dir()}
    structural = [tuple(o for o in job if _is_structural(o, groups)) for job in job_overrides]
    distinct = list(dict.fromkeys(structural))
    bases = dict(zip(distinct, compose_many([list(s) for s in distinct], resolve=False)))
    parser = OverridesParser.create()
    out = []
    for job, struct in zip(job_overrides, structural):
        cfg = copy.deepcopy(bases[struct])
        values = [o for o in job if o not in struct]
        for ov in parser.parse_overrides(values):
            OmegaConf.update(cfg, ov.key_or_group, ov.value(), merge=True)
        OmegaConf.resolve(cfg)
        out.append(cfg)
    return out


def _swept(jobs: list[list[str]]) -> set[str]:
    """Overrides whose value varies across jobs."""
    if not jobs:
        return set()
    columns = list(zip(*jobs))
    return {o for col in columns if len(set(col)) > 1 for o in col}


def print_plan(overrides: list[str]) -> int:
    from rich.console import Console
    from rich.table import Table

    rows, sweep_dir = plan(overrides)
    console = Console(file=sys.stdout, width=160)
    if rows and rows[0]["sampled"]:
        console.print(f"An Optuna search chooses its trials as it runs (`ptycho-exp status` shows them); "
                      f"each value of its search space was checked in {len(rows)} configs: all valid.")
        return 0
    table = Table(title=f"{len(rows)} jobs" + (f" in {sweep_dir}" if sweep_dir else ""))
    for col in ("job", "overrides", "hash", "status"):
        table.add_column(col)
    for r in rows:
        table.add_row(str(r["job"]), r["overrides"], r["hash"], r["status"])
    console.print(table)
    done = [r for r in rows if r["status"] == "ok"]
    todo = len(rows) - len(done)
    line = f"{len(done)} done, {todo} to run"
    secs = [r["seconds"] for r in done if r["seconds"]]
    if secs:
        est = sum(secs) / len(secs) * todo
        line += f"; estimated {est / 60:.1f} min of compute (mean of {len(secs)} finished jobs)"
    else:
        line += "; no finished jobs to estimate cost from"
    console.print(line)
    return 0
