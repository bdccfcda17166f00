"""``ptycho-exp rerun <job dir>``: reproduce a job from its record and compare the metrics.

A job's ``result.json`` holds everything needed to run it again: the resolved job config (also in
``job_config.json``), the seed, the config hash and the provenance (git SHA, package versions,
host). ``rerun`` runs that config in a new folder (in an isolated child, as a sweep would) and
compares every metric bit for bit: exit status 0 when all are identical, 1 with a table of the
differences otherwise (2 for bad input, e.g. not a job folder).

Determinism
-----------
On CPU the same config and seed give bit-identical metrics: the job seeds Python, NumPy, TensorFlow
and Keras and, with ``train.deterministic=true`` (the default), enables
``tf.config.experimental.enable_op_determinism()``; data simulation and sampling use seeded NumPy
generators. Caveats: on a GPU, determinism holds only for the same GPU model, driver, CUDA/cuDNN and
TensorFlow versions (different kernels and autotuning choices change the rounding), some ops have no
deterministic GPU kernel and then raise an error under op determinism, and mixed precision
(``train.precision=mixed``) changes results between GPU generations. Different thread counts
(``hardware.intra_op_threads``) or library versions can change the last bits on CPU too; ``rerun``
prints the provenance differences (git SHA, versions, host) next to a metric difference.
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from ptycho_exp import results
from ptycho_exp.files import JOB_CONFIG_FILE, RESULT_FILE

_PROVENANCE_KEYS = ("git_sha", "host", "python", "platform")


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b and type(a) is type(b) or (a is None and b is None)


def compare_metrics(old: dict, new: dict) -> list[tuple[str, object, object]]:
    """``(key, old, new)`` for every metric that is not bit-identical (missing on one side counts)."""
    keys = sorted(set(old) | set(new))
    return [(k, old.get(k, "<missing>"), new.get(k, "<missing>")) for k in keys
            if not _same(old.get(k, "<missing>"), new.get(k, "<missing>"))]


def diff_table(diffs: list[tuple[str, object, object]]) -> str:
    """A fixed-width table: metric, original, rerun, absolute difference."""
    rows = [("metric", "original", "rerun", "abs diff")]
    for key, a, b in diffs:
        delta = abs(a - b) if isinstance(a, (int, float)) and isinstance(b, (int, float)) else ""
        rows.append((key, repr(a), repr(b), f"{delta:.3g}" if delta != "" else ""))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def provenance_changes(old: dict, new: dict) -> list[str]:
    """What differs between two runs' provenance (code version, packages, machine)."""
    po, pn = old.get("provenance") or {}, new.get("provenance") or {}
    out = [f"{k}: {po.get(k)} -> {pn.get(k)}" for k in _PROVENANCE_KEYS if po.get(k) != pn.get(k)]
    vo, vn = po.get("versions") or {}, pn.get("versions") or {}
    out += [f"{k}: {vo.get(k)} -> {vn.get(k)}" for k in sorted(set(vo) | set(vn)) if vo.get(k) != vn.get(k)]
    return out


def _default_out(job_dir: Path) -> Path:
    """``<job>_rerun`` beside a single run; for a sweep job, ``<sweep>_reruns/<job>`` beside the sweep, so
    the rerun never becomes an extra job of the sweep it reproduces (status, aggregate)."""
    sweep = job_dir.parent
    base = (sweep.with_name(sweep.name + "_reruns") / job_dir.name if (sweep / "multirun.yaml").is_file()
            else job_dir.with_name(job_dir.name + "_rerun"))
    out, i = base, 2
    while out.exists() and any(out.iterdir()):
        out = base.with_name(f"{base.name}_{i}")
        i += 1
    return out


def rerun_job(job_dir: Path, out: Path | None = None) -> int:
    """Run the recorded config of ``job_dir`` again in ``out`` and compare metrics.

    Returns
    -------
    0 when every metric is bit-identical, 1 when the rerun failed or any metric differs.

    Raises
    ------
    ValueError
        ``job_dir`` holds no readable ok result with a config, or ``out`` is not empty.
    """
    from ptycho_exp.compose import as_config
    from ptycho_exp.isolation import child_env
    from ptycho_exp.run import check_writable, run_isolated

    job_dir = Path(job_dir)
    try:
        old = results.load_result(job_dir)
    except results.UnreadableResult as exc:
        raise ValueError(f"{exc}; fix: pass a finished job folder") from None
    if old is None or "config" not in old:
        raise ValueError(f"{job_dir}: no readable result.json with a recorded config; fix: pass a job folder "
                         "(one that holds result.json)")
    if old.get("status") != "ok":
        raise ValueError(f"{job_dir}: the recorded job has status {old.get('status')!r}, not ok: there are no "
                         "metrics to reproduce; fix: re-run the sweep, or pass a finished job folder")
    job_cfg = old["config"]
    cfg_file = job_dir / JOB_CONFIG_FILE
    if cfg_file.exists():
        job_cfg = json.loads(cfg_file.read_text())
    if results.config_hash(job_cfg) != old.get("config_hash"):
        raise ValueError(f"{job_dir}: {JOB_CONFIG_FILE} does not match the config hash in result.json "
                         "(edited after the run?); fix: restore it or delete it to use result.json's config")
    out = Path(out) if out else _default_out(job_dir)
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out} exists and is not empty; fix: pass --out NEW_DIR")
    job_cfg = {**job_cfg, "paths": {**job_cfg.get("paths", {}), "output_dir": str(out)}}
    typed = as_config(job_cfg)
    check_writable(out)
    new = run_isolated(job_cfg, out, child_env(typed, 0, 1))
    if new.get("status") != "ok":
        print(f"ptycho-exp rerun: the rerun in {out} failed: {new.get('error')}", file=sys.stderr)
        return 1
    new["rerun_of"] = str(job_dir.resolve())
    results.write_json(out / RESULT_FILE, new)
    diffs = compare_metrics(old.get("metrics") or {}, new.get("metrics") or {})
    changes = provenance_changes(old, new)
    if diffs:
        print(f"rerun of {job_dir} in {out}: {len(diffs)} of {len(old.get('metrics') or {})} metrics differ:")
        print(diff_table(diffs))
        if changes:
            print("provenance differences (likely causes):\n  " + "\n  ".join(changes))
        return 1
    print(f"rerun of {job_dir} in {out}: all {len(old.get('metrics') or {})} metrics bit-identical")
    if changes:
        print("(provenance differs but results agree:\n  " + "\n  ".join(changes) + ")")
    return 0
