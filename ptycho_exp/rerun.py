"""``ptycho-exp rerun <job dir>``: reproduce a job from its record and compare metrics."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from ptycho_exp import results
from ptycho_exp.run import JOB_CONFIG_FILE, run_isolated


def rerun_job(job_dir: Path, out: Path | None = None) -> int:
    """Run the recorded config again in ``out``; 0 when every metric is bit-identical."""
    old = results.read_result(job_dir)
    if old is None or "config" not in old:
        raise ValueError(f"{job_dir}: no readable result.json with a recorded config (is it a job folder?)")
    job_cfg = old["config"]
    cfg_file = job_dir / JOB_CONFIG_FILE
    if cfg_file.exists():
        job_cfg = json.loads(cfg_file.read_text())
    out = out or job_dir.with_name(job_dir.name + "_rerun")
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out} exists and is not empty: pass --out NEW_DIR")
    out.mkdir(parents=True, exist_ok=True)
    job_cfg = {**job_cfg, "paths": {**job_cfg.get("paths", {}), "output_dir": str(out)}}
    new = run_isolated(job_cfg, out)
    if new.get("status") != "ok":
        print(f"rerun failed: {new.get('error')}", file=sys.stderr)
        return 1
    diffs = []
    for key, a in sorted((old.get("metrics") or {}).items()):
        b = (new.get("metrics") or {}).get(key)
        same = (a == b) or (a is None and b is None) or (
            isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))
        if not same:
            diffs.append(f"  {key}: {a!r} -> {b!r}")
    if diffs:
        print(f"rerun in {out}: {len(diffs)} metric(s) differ:\n" + "\n".join(diffs))
        return 1
    print(f"rerun in {out}: all {len(old.get('metrics') or {})} metrics identical")
    return 0
