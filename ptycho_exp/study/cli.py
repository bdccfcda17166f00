"""``ptycho-exp aggregate`` and ``ptycho-exp status`` (import-light: pandas etc. load when they run)."""
from __future__ import annotations

import argparse
from pathlib import Path


def add_study_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("aggregate", help="tables, plots, computed findings and report.html from sweep folders")
    p.add_argument("sweep_dirs", nargs="+", help="sweep folders (or job folders); all are read together")
    p.add_argument("--out", help="output folder (default <first sweep dir>/aggregate)")
    p.add_argument("--ensemble", action="store_true",
                   help="also score the complex mean of the seeds' registered reconstructions per group")
    p.add_argument("--min-ms-ssim-phase", type=float, default=None,
                   help="exclude jobs whose phase MS-SSIM is below this (reported in the summary)")
    p.add_argument("--no-plots", action="store_true", help="tables and summary only (fast)")
    p = sub.add_parser("status", help="done / failed / running / pending jobs of a sweep, with an ETA")
    p.add_argument("sweep_dir")
    p.add_argument("--max-rows", type=int, default=200)


def run_study_command(args: argparse.Namespace) -> int:
    if args.cmd == "status":
        from ptycho_exp.study.status import print_status

        if not Path(args.sweep_dir).is_dir():
            raise FileNotFoundError(f"sweep folder {args.sweep_dir!r} does not exist: pass a multirun/... folder")
        print_status(args.sweep_dir, max_rows=args.max_rows)
        return 0
    if args.cmd == "aggregate":
        from ptycho_exp.study.aggregate import aggregate

        out = Path(args.out) if args.out else Path(args.sweep_dirs[0]) / "aggregate"
        summary = aggregate([Path(p) for p in args.sweep_dirs], out, ensemble=args.ensemble,
                            min_ms_ssim_phase=args.min_ms_ssim_phase, plots=not args.no_plots)
        print(summary)
        return 0
    raise ValueError(f"unknown command {args.cmd!r}")
