"""``ptycho-exp``: post-hoc and utility commands (aggregate, status, plan, data, predict, rerun).

Import-light: ``ptycho-exp --help`` imports no TensorFlow, pandas or matplotlib; each command
imports what it needs when it runs. Training sweeps themselves are ``python -m ptycho_exp``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line naming the problem and the fix (exit 2)."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: {message}; fix: see `{self.prog} --help`\n")


def _add_data_commands(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="inspect, simulate, split or import contract NPZ files")
    dsub = data.add_subparsers(dest="data_cmd", required=True)
    p = dsub.add_parser("inspect", help="summarise a contract NPZ (shapes, photons, scan, overlap)")
    p.add_argument("path")
    from ptycho_exp.export import add_export_parser

    add_export_parser(dsub)
    p = dsub.add_parser("simulate", help="write a contract NPZ simulated from a job config")
    p.add_argument("--out", required=True, help="output .npz")
    p.add_argument("--which", choices=("train", "test"), default="test")
    p.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. data=grf data.N=32")
    p = dsub.add_parser("split", help="cut one scan into spatially disjoint train/test NPZs")
    p.add_argument("path")
    p.add_argument("--train-out", required=True)
    p.add_argument("--test-out", required=True)
    p.add_argument("--axis", choices=("y", "x"), default="y", help="y: top/bottom halves; x: left/right")
    p.add_argument("--gap", type=float, metavar="PX", help="band around the cut whose patterns are dropped (default N)")
    from ptycho_exp.data.readers import add_import_command

    add_import_command(dsub)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="ptycho-exp",
        description="Post-hoc tools for ptycho_exp studies. Run jobs and sweeps with "
                    "`python -m ptycho_exp [-m] overrides...`.")
    sub = parser.add_subparsers(dest="cmd", required=True)
    from ptycho_exp.aggregate import add_aggregate_command
    from ptycho_exp.analysis.status import add_status_command

    add_aggregate_command(sub)
    add_status_command(sub)
    p = sub.add_parser("plan", help="list the jobs a sweep would run (and which are done) without running")
    p.add_argument("overrides", nargs="*", help="the same overrides as the sweep, e.g. study=generalization")
    _add_data_commands(sub)
    from ptycho_exp.external import add_score_parser

    add_score_parser(sub)
    p = sub.add_parser("predict", help="reconstruct a contract NPZ or .h5 scan with a trained network (.keras)")
    p.add_argument("model_dir", help="a job's model/ folder (or the job folder)")
    p.add_argument("data", help="contract NPZ with diffraction and positions, or the same keys in an .h5 file "
                                "(read batch by batch)")
    p.add_argument("--out", required=True, help="output NPZ (stitched object)")
    p.add_argument("--norm", choices=("model", "scan"), default="model",
                   help="model (default): multiply the patterns by the training set's normalisation factor, as "
                        "the job did with its test scan; scan: by this scan's own factor (another dose)")
    p.add_argument("--phase-sync", action="store_true",
                   help="align each patch's constant phase with its overlapping neighbours before stitching, as "
                        "a job with eval.phase_sync=true does (the scan is predicted twice)")
    p = sub.add_parser("rerun", help="re-run a finished job in a new folder and compare its metrics")
    p.add_argument("job_dir")
    p.add_argument("--out", help="new job folder (default <sweep dir>_reruns/<job> for a sweep job, "
                                 "<job_dir>_rerun for a single run)")
    return parser


def _need_folder(path: str, what: str, fix: str) -> None:
    p = Path(path)
    if not p.exists():
        raise ValueError(f"{what} {path!r} does not exist; fix: {fix}")
    if not p.is_dir():
        raise ValueError(f"{what} {path!r} is a file, not a folder; fix: {fix}")


def _need_file(path: str | None, option: str) -> None:
    if path is not None:
        from ptycho_exp.data.npz import require_regular_file

        require_regular_file(path, f"{option}", "check the path")


def _new_file(path: str | None, option: str, inputs: tuple = ()) -> None:
    """An output file: not an existing folder, not one of the command's input files."""
    if path is None:
        return
    if Path(path).is_dir():
        raise ValueError(f"{option} {path!r} is a folder, not a file name; fix: name the output file, "
                         f"e.g. {option} {Path(path) / 'out.npz'}")
    for other in inputs:
        if other and Path(other).exists() and Path(path).exists() and Path(path).samefile(other):
            raise ValueError(f"{option} {path!r} is also an input; fix: write to a new file")


def _new_folder(path: str | None, option: str) -> None:
    """An output folder: a folder or nothing yet, never an existing file."""
    if path is not None and Path(path).exists() and not Path(path).is_dir():
        raise ValueError(f"{option} {path!r} is an existing file, not a folder; fix: choose a new folder "
                         f"name (e.g. {option} {path}_out)")


def check_paths(args: argparse.Namespace) -> None:
    """Refuse bad paths on the command line before a command reads or writes anything.

    Inputs must be regular files (a FIFO or a device would block or never end) or existing folders,
    outputs must not be an existing folder (for a file) or an existing file (for a folder).

    Raises
    ------
    ValueError
        One line naming the argument, the path and the fix.
    """
    cmd = args.cmd
    if cmd == "status":
        _need_folder(args.sweep_dir, "sweep folder", "pass a sweep folder (multirun/<date>/<time>, the one "
                                                     "holding multirun.yaml)")
    elif cmd == "aggregate":
        for folder in args.sweep_dirs:
            _need_folder(folder, "sweep folder", "pass sweep folders (multirun/...) or job folders")
        _new_folder(args.out or str(Path(args.sweep_dirs[0]) / "aggregate"), "--out")
    elif cmd == "predict":
        _need_folder(args.model_dir, "model folder", "pass a job folder or its model/ folder")
        _need_file(args.data, "data file")
        _new_file(args.out, "--out", (args.data,))
    elif cmd == "rerun":
        _need_folder(args.job_dir, "job folder", "pass a job folder (one that holds result.json)")
        _new_folder(args.out, "--out")
    elif cmd == "score":
        _need_file(args.recon, "reconstruction file")
        _need_file(args.test, "--test file")
        _need_file(args.reference, "--reference file")
        _new_folder(args.out, "--out")
    elif cmd == "data":
        sub = args.data_cmd
        if sub in ("inspect", "split", "import"):
            _need_file(args.path, "input file")
        if sub == "split":
            _new_file(args.train_out, "--train-out", (args.path,))
            _new_file(args.test_out, "--test-out", (args.path,))
            if Path(args.train_out).absolute() == Path(args.test_out).absolute():
                raise ValueError(f"--train-out and --test-out are the same file {args.train_out!r}; "
                                 "fix: name two different files")
        elif sub == "import":
            _need_file(args.probe, "--probe file")
            _new_file(args.out, "--out", (args.path,))
        elif sub == "simulate":
            _new_file(args.out, "--out")
        elif sub == "export":
            _need_folder(args.job_dir, "job folder", "pass a job folder (one that holds result.json)")
            _new_folder(args.out, "--out")


def main(argv: list[str] | None = None) -> int:
    args, rest = build_parser().parse_known_args(argv)
    if rest and args.cmd != "plan":
        print(f"ptycho-exp: unrecognised arguments: {' '.join(rest)}; fix: see ptycho-exp {args.cmd} --help",
              file=sys.stderr)
        return 2
    try:
        check_paths(args)
        if args.cmd == "plan":
            from ptycho_exp.sweep.plan import print_plan

            return print_plan(list(args.overrides) + rest)
        if getattr(args, "handler", None):  # commands whose module registers its own handler
            return args.handler(args)
        if args.cmd == "data":
            return _data(args)
        if args.cmd == "predict":
            from ptycho_exp.data.npz import load_contract_npz
            from ptycho_exp.isolation import use_tensorflow_env
            from ptycho_exp.predict import predict_file

            load_contract_npz(args.data, check_intensity=False)  # a bad file fails before TensorFlow loads
            use_tensorflow_env()

            print(predict_file(args.model_dir, args.data, args.out, norm=args.norm, phase_sync=args.phase_sync))
            return 0
        if args.cmd == "rerun":
            from ptycho_exp.rerun import rerun_job

            return rerun_job(Path(args.job_dir), Path(args.out) if args.out else None)
        if args.cmd == "status":
            from ptycho_exp.analysis.status import run_status_command

            return run_status_command(args)
        from ptycho_exp.aggregate import run_aggregate_command

        return run_aggregate_command(args)
    except (ValueError, OSError) as exc:  # bad input: one clear line, no traceback
        cmd = f"{args.cmd} {args.data_cmd}" if args.cmd == "data" else args.cmd
        print(f"ptycho-exp {cmd}: {exc}", file=sys.stderr)
        return 2


def _data(args: argparse.Namespace) -> int:
    if args.data_cmd == "inspect":
        from ptycho_exp.data.tools import inspect_npz

        print(inspect_npz(args.path))
    elif args.data_cmd == "simulate":
        from ptycho_exp.compose import compose_validated
        from ptycho_exp.data.datasets import side_by_side
        from ptycho_exp.data.npz import save_contract_npz
        from ptycho_exp.data.simulate import simulate_object_scan

        # a typo'd key or wrong type (one line), or an out-of-range value (data.N=63, ...) naming the key
        cfg = compose_validated(args.overrides)
        n_objects = int(cfg.data.n_train_objects) if args.which == "train" else 1
        scans = [simulate_object_scan(cfg.data, args.which, i) for i in range(n_objects)]
        scan = side_by_side(scans, gap=int(cfg.data.N))  # the training set a job would draw from
        save_contract_npz(args.out, scan)
        objects = f", {n_objects} objects side by side" if n_objects > 1 else ""
        print(f"wrote {args.out}: {scan.n_positions} patterns of {scan.N}x{scan.N} ({args.which} scan{objects})")
    elif args.data_cmd == "split":
        from ptycho_exp.data.tools import split_npz

        print(split_npz(args.path, args.train_out, args.test_out, axis=args.axis, gap=args.gap))
    elif args.data_cmd == "import":
        from ptycho_exp.data.readers import run_import

        return run_import(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
