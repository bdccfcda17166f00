"""``python -m <module> args`` many times over, each run a fork of one process that imported the modules first.

Starting the interpreter and importing numpy, Hydra and the package's entry modules costs about 0.5 CPU s
per run; the bad-input corpus runs its ~190 command lines this way instead, each still a real run of the
entry module as ``__main__`` (``runpy``, as ``python -m`` does) in its own process, working folder,
environment and stdout/stderr, so exit status, output and written files are the run's own.

The server is a separate, single-threaded process started with the caller's environment (so a PYTHONPATH
guard applies to the preloaded imports too); it refuses to start if preloading imported TensorFlow.

    with PreloadedRunner(["ptycho_exp.run"], env) as runner:
        proc = runner.run("ptycho_exp", ["data.N=abc"], cwd=folder, env=env, timeout=60)
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

_SERVER = r'''
import importlib, json, os, select, signal, sys
for name in json.loads(sys.argv[1]):
    importlib.import_module(name)
if any(m.split(".")[0] in ("tensorflow", "keras") for m in sys.modules):
    raise SystemExit("preloading imported TensorFlow")
sys.stdout.flush(); sys.stderr.flush()
requests, buffer, children = os.fdopen(0, "rb", buffering=0), b"", {}

def child(req):
    import atexit, io, runpy
    os.chdir(req["cwd"])
    os.environ.clear(); os.environ.update(req["env"])
    for fd, path, mode in ((0, os.devnull, os.O_RDONLY), (1, req["stdout"], os.O_WRONLY),
                           (2, req["stderr"], os.O_WRONLY)):
        os.dup2(os.open(path, mode), fd)
    sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False))
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), write_through=True)
    sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), write_through=True)
    sys.argv = [req["module"], *req["args"]]
    code = 0
    try:
        runpy.run_module(req["module"], run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if exc.code is not None and not isinstance(exc.code, int):
            print(exc.code, file=sys.stderr)
    except BaseException:
        import traceback
        traceback.print_exc()
        code = 1
    try:
        atexit._run_exitfuncs()
        sys.stdout.flush(); sys.stderr.flush()
    finally:
        os._exit(code)

while True:
    ready, _, _ = select.select([requests], [], [], 0.01)
    if ready:
        data = requests.read(65536)
        if not data:
            break
        buffer += data
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            req = json.loads(line)
            if "kill" in req:
                for pid, rid in children.items():
                    if rid == req["kill"]:
                        os.kill(pid, signal.SIGKILL)
                continue
            pid = os.fork()
            if pid == 0:
                child(req)
            children[pid] = req["id"]
    while children:
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            break
        os.write(1, (json.dumps([children.pop(pid), os.waitstatus_to_exitcode(status)]) + "\n").encode())
for pid in children:
    os.kill(pid, signal.SIGKILL)
'''


class PreloadedRunner:
    """A server process that has imported ``preload`` and forks one child per :meth:`run`; thread-safe."""

    def __init__(self, preload: list[str], env: dict, cwd: Path | None = None):
        self._proc = subprocess.Popen([sys.executable, "-c", _SERVER, json.dumps(preload)], env=env, cwd=cwd,
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self._lock = threading.Lock()
        self._done: dict[int, threading.Event] = {}
        self._codes: dict[int, int] = {}
        self._next = 0
        self._tmp = tempfile.TemporaryDirectory(prefix="preloaded-")
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self._proc.stdout:
            rid, code = json.loads(line)
            self._codes[rid] = code
            self._done[rid].set()
        for event in list(self._done.values()):  # the server ended: wake every waiter
            event.set()

    def run(self, module: str, args: list[str], cwd: Path, env: dict,
            timeout: float = 60) -> subprocess.CompletedProcess:
        """Run ``python -m module *args`` in ``cwd`` with exactly ``env``; as :func:`subprocess.run` would."""
        with self._lock:
            rid, self._next = self._next, self._next + 1
            self._done[rid] = threading.Event()
            out, err = (Path(self._tmp.name) / f"{rid}.{s}" for s in ("out", "err"))
            out.touch(), err.touch()
            request = {"id": rid, "module": module, "args": [str(a) for a in args], "cwd": str(cwd),
                       "env": dict(env), "stdout": str(out), "stderr": str(err)}
            self._proc.stdin.write((json.dumps(request) + "\n").encode())
            self._proc.stdin.flush()
        if not self._done[rid].wait(timeout):
            with self._lock:
                self._proc.stdin.write((json.dumps({"kill": rid}) + "\n").encode())
                self._proc.stdin.flush()
            self._done[rid].wait(10)
            raise subprocess.TimeoutExpired([module, *args], timeout, out.read_text(), err.read_text())
        if rid not in self._codes:
            raise RuntimeError(f"the preloaded server ended: {self._proc.stderr.read().decode()[-2000:]}")
        return subprocess.CompletedProcess([sys.executable, "-m", module, *args], self._codes[rid],
                                           out.read_text(), err.read_text())

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.stdin.close()
            self._proc.wait(30)
        self._tmp.cleanup()

    def __enter__(self) -> "PreloadedRunner":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
