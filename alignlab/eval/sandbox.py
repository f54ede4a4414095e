"""Run untrusted Python (a model's code + the task's tests) in a kernel-enforced sandbox.

``run_program(program, tests)`` never raises: every outcome, including a failure of the sandbox
machinery itself, comes back as a ``SandboxResult`` whose ``status`` is one of

    passed        the program ran and every test passed, as judged by the separate judge process
    failed        an AssertionError in the tests (a test said no)
    timeout       wall-clock limit hit, or the CPU-time limit (SIGXCPU / SIGKILL) fired
    memory        MemoryError in the program or in a call the tests made
    syntax_error  the program does not compile
    error         any other exception, an early exit, a signal, a refused operation, a sandbox
                  failure, or no sandbox available (see ``unsafe_no_sandbox``)
    output_limit  stdout or stderr went past the cap, or a file write hit the file-size limit

Isolation (the threat model is in docs/evaluation.md):

* **bubblewrap** (``bwrap``) starts every run in new user, PID, network, IPC, UTS and mount
  namespaces, with a per-run uid inside, no capabilities, ``--die-with-parent`` and a new
  session. The filesystem is a read-only view of the interpreter, its standard library and the
  system shared libraries (site-packages hidden), a minimal read-only ``/dev`` (null, zero,
  urandom ...; no /dev/shm to fill) and a private tmpfs of
  ``disk_mb`` as ``/tmp`` and working folder. No /proc, no host folders, no host sockets.
* Inside, ``sandbox_harness.py`` is the **judge**: it forks the **candidate** process, which takes
  rlimits (CPU, address space, file size, open files, no core) and a seccomp filter (no new
  processes or exec, no ptrace / process_vm / pidfd_getfd, no namespaces or mounts, no bpf,
  io_uring, keyrings or userfaultfd) before the program runs. The tests run in the judge against
  the candidate's names as plain data (see the harness docstring), and only the judge holds the
  verdict descriptor. No secret exists anywhere.
* When the run ends (verdict, timeout, output cap) the whole PID namespace dies with it, so
  nothing the program started survives into another run, and the tmpfs goes with it.

Without a working ``bwrap`` the sandbox **refuses**: ``run_program`` returns ``error`` and
``run_many`` raises ``SandboxUnavailable``, unless the caller passes ``unsafe_no_sandbox=True``
(``alignlab eval --unsafe-no-sandbox``), which runs the same judge and candidate (rlimits and
seccomp still apply) directly on the host, with the host's files, network and processes in
reach. The result's ``isolation`` records which mode ran.
"""
from __future__ import annotations

import itertools
import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Sequence

STATUSES = ("passed", "failed", "timeout", "memory", "syntax_error", "error", "output_limit")

HARNESS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sandbox_harness.py")
HARNESS_IN_SANDBOX = "/run/alignlab/harness.py"
UNSAFE_FLAG = "--unsafe-no-sandbox"
_TAIL = 2000  # characters of stdout / stderr kept in the result


class SandboxUnavailable(RuntimeError):
    """No working bubblewrap here, and the caller did not opt in to running without it."""


@dataclass(frozen=True)
class SandboxLimits:
    """Per-run limits. ``cpu_s`` defaults to the wall timeout rounded up."""

    timeout_s: float = 5.0
    cpu_s: int | None = None
    memory_mb: int = 1024
    file_size_mb: int = 16
    disk_mb: int = 64  # size of the private tmpfs (working folder and /tmp)
    max_output_bytes: int = 64 * 1024
    max_open_files: int = 128


@dataclass
class SandboxResult:
    status: str
    passed: bool
    elapsed_s: float
    returncode: int | None = None
    exception: str | None = None
    stdout_tail: str = ""
    stderr_tail: str = ""
    isolation: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------------------- the bwrap command

_LOCK = threading.Lock()
_PY_INFO: dict[str, dict] = {}
_STATUS: dict[str, tuple[bool, str]] = {}
_UIDS = itertools.count()


def _python_info(python: str) -> dict:
    """Where the interpreter's standard library and site folders are (asked once per interpreter)."""
    with _LOCK:
        if python in _PY_INFO:
            return _PY_INFO[python]
    code = ("import json, sys, sysconfig\np = sysconfig.get_paths()\n"
            "print(json.dumps({'exe': sys.executable, 'base_prefix': sys.base_prefix,"
            " 'stdlib': p['stdlib'], 'platstdlib': p['platstdlib'],"
            " 'site': sorted({p['purelib'], p['platlib']}), 'version': '%d.%d' % sys.version_info[:2]}))")
    r = subprocess.run([python, "-I", "-S", "-c", code], capture_output=True, text=True, timeout=30,
                       env={"PATH": "/usr/bin:/bin"})
    if r.returncode != 0:
        raise OSError(f"cannot run the interpreter {python!r}: {r.stderr.strip()[-300:]}")
    info = json.loads(r.stdout)
    info["exe"] = os.path.realpath(info["exe"] or python)
    with _LOCK:
        _PY_INFO[python] = info
    return info


def _under(path: str, roots: list[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def bwrap_command(python: str, limits: SandboxLimits, verdict_fd: int) -> list[str]:
    """The full ``bwrap ... python -I -S -B harness FD`` command line for one run."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise SandboxUnavailable("bubblewrap (bwrap) is not installed")
    info = _python_info(python)
    uid = 10000 + next(_UIDS) % 50000  # an identity of its own inside every run's user namespace
    cmd = [bwrap, "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent",
           "--new-session", "--cap-drop", "ALL", "--uid", str(uid), "--gid", str(uid),
           "--hostname", "sandbox", "--clearenv"]
    for k, v in _scrubbed_env("/tmp").items():
        cmd += ["--setenv", k, v]
    mounted: list[str] = []
    for d in ("/usr/lib", "/usr/lib64", "/usr/lib32", "/usr/libx32"):  # shared libraries
        if os.path.isdir(d) and not os.path.islink(d):
            cmd += ["--ro-bind", d, d]
            mounted.append(d)
    for d in ("/lib", "/lib64", "/lib32", "/libx32"):
        if os.path.islink(d):
            cmd += ["--symlink", os.readlink(d), d]
        elif os.path.isdir(d):
            cmd += ["--ro-bind", d, d]
            mounted.append(d)
    prefix = os.path.realpath(info["base_prefix"])
    if prefix in ("/", "/usr", "/usr/local"):  # a system Python: its stdlib and binary only
        trees = [info["stdlib"], info["platstdlib"], info["exe"]]
    else:
        trees = [prefix, info["stdlib"], info["platstdlib"], info["exe"]]
    for t in trees:
        t = os.path.realpath(t)
        if os.path.exists(t) and not _under(t, mounted):
            cmd += ["--ro-bind", t, t]
            mounted.append(t)
    hide = list(info["site"]) + ["/usr/lib/python3/dist-packages", f"/usr/lib/python{info['version']}/site-packages"]
    for s in hide:  # installed packages (and the project, if installed) stay out of sight
        s = os.path.realpath(s)
        if os.path.isdir(s) and _under(s, mounted):
            cmd += ["--tmpfs", s]
    if os.path.exists("/etc/ld.so.cache"):
        cmd += ["--ro-bind", "/etc/ld.so.cache", "/etc/ld.so.cache"]
    cmd += ["--dev", "/dev", "--size", str(limits.disk_mb * 1024 * 1024), "--tmpfs", "/tmp",
            "--ro-bind", HARNESS, HARNESS_IN_SANDBOX, "--remount-ro", "/dev", "--remount-ro", "/",
            "--chdir", "/tmp",
            "--", info["exe"], "-I", "-S", "-B", HARNESS_IN_SANDBOX, str(verdict_fd)]
    return cmd


def sandbox_status(python: str | None = None) -> tuple[bool, str]:
    """(True, "bwrap") when a run under bubblewrap works here, else (False, the reason and the fix).

    Probed once per interpreter by running the real sandbox on a two-line program.
    """
    python = python or os.environ.get("ALIGNLAB_SANDBOX_PYTHON") or sys.executable
    with _LOCK:
        if python in _STATUS:
            return _STATUS[python]
    try:
        res = _run("import json\nx = json.dumps([1])", "assert x == '[1]'",
                   SandboxLimits(timeout_s=30), python, unsafe=False)
        ok = res.status == "passed"
        why = "bwrap" if ok else f"{res.status}: {res.exception} {res.stderr_tail.strip()[-300:]}"
    except SandboxUnavailable as e:
        ok, why = False, str(e)
    except (OSError, ValueError, subprocess.SubprocessError) as e:
        ok, why = False, f"{type(e).__name__}: {e}"
    if not ok:
        why = (f"the code sandbox does not work here ({why}). Install bubblewrap (Debian/Ubuntu: "
               f"apt-get install -y bubblewrap) on a kernel that allows user namespaces, or accept "
               f"running model-written code with your own user's rights via {UNSAFE_FLAG} "
               f"(unsafe_no_sandbox=True)")
    with _LOCK:
        _STATUS[python] = (ok, why)
    return ok, why


def _scrubbed_env(home: str) -> dict[str, str]:
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": home,
        "TMPDIR": home,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONHASHSEED": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONIOENCODING": "utf-8",
        "PYTHONUTF8": "1",
    }


# ---------------------------------------------------------------------------- running one job


def run_program(program: str, tests: str = "", *, limits: SandboxLimits | None = None,
                python: str | None = None, unsafe_no_sandbox: bool = False) -> SandboxResult:
    """Run ``program`` then ``tests`` (tests see the program's names) in the sandbox.

    ``python`` is the interpreter (default ``$ALIGNLAB_SANDBOX_PYTHON``, else the current one;
    only its standard library is visible). Without a working bubblewrap this returns ``error``
    with the reason, unless ``unsafe_no_sandbox`` is set. Never raises (except
    KeyboardInterrupt in the caller).
    """
    t0 = time.monotonic()
    try:
        python = python or os.environ.get("ALIGNLAB_SANDBOX_PYTHON") or sys.executable
        limits = limits or SandboxLimits()
        if not unsafe_no_sandbox:
            ok, why = sandbox_status(python)
            if not ok:
                return SandboxResult("error", False, time.monotonic() - t0, exception="refused: " + why)
        return _run(program, tests, limits, python, unsafe_no_sandbox)
    except Exception as e:  # the evaluation run must survive anything
        return SandboxResult("error", False, time.monotonic() - t0,
                             exception=f"sandbox failure: {type(e).__name__}: {e}")


def _run(program: str, tests: str, limits: SandboxLimits, python: str, unsafe: bool) -> SandboxResult:
    if not isinstance(program, str) or not isinstance(tests, str):
        return SandboxResult("error", False, 0.0, exception="program and tests must be strings")
    cpu_s = limits.cpu_s if limits.cpu_s is not None else max(1, int(limits.timeout_s + 0.999))
    payload = json.dumps({
        "program": program, "tests": tests,
        "limits": {"cpu_s": cpu_s, "memory_mb": limits.memory_mb, "file_size_mb": limits.file_size_mb,
                   "max_open_files": limits.max_open_files},
    }).encode("utf-8", "surrogatepass")
    verdict_r, verdict_w = os.pipe()
    workdir = None
    try:
        if unsafe:
            workdir = tempfile.mkdtemp(prefix="alignlab-unsafe-run-")
            exe = os.path.realpath(python)
            cmd, cwd, env = [exe, "-I", "-S", "-B", HARNESS, str(verdict_w)], workdir, _scrubbed_env(workdir)
            iso = {"sandbox": "none (unsafe_no_sandbox)"}
        else:
            cmd, cwd, env = bwrap_command(python, limits, verdict_w), "/", {"PATH": "/usr/bin:/bin"}
            iso = {"sandbox": "bwrap", "namespaces": ["user", "pid", "net", "ipc", "uts", "mount"],
                   "disk_mb": limits.disk_mb}
        start = time.monotonic()
        try:
            proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, pass_fds=(verdict_w,), start_new_session=True,
                                    close_fds=True)
        finally:
            os.close(verdict_w)
        try:
            return _supervise(proc, verdict_r, payload, limits, start, iso)
        finally:
            _kill_group(proc.pid)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            for f in (proc.stdin, proc.stdout, proc.stderr):
                try:
                    if f:
                        f.close()
                except OSError:
                    pass
    finally:
        if workdir:
            shutil.rmtree(workdir, ignore_errors=True)


def _tail(buf: bytearray) -> str:
    return bytes(buf[-_TAIL * 4:]).decode("utf-8", "replace")[-_TAIL:]


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError, OSError):
        pass


def _feed(stdin, payload: bytes) -> None:
    try:
        stdin.write(payload)
        stdin.close()
    except (OSError, ValueError):
        pass


def _supervise(proc: subprocess.Popen, verdict_r: int, payload: bytes, limits: SandboxLimits,
               start: float, iso: dict) -> SandboxResult:
    feeder = threading.Thread(target=_feed, args=(proc.stdin, payload), daemon=True)
    feeder.start()
    deadline = start + limits.timeout_s
    bufs = {"stdout": bytearray(), "stderr": bytearray(), "verdict": bytearray()}
    totals = dict.fromkeys(bufs, 0)
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ, "stdout")
    sel.register(proc.stderr, selectors.EVENT_READ, "stderr")
    verdict_file = os.fdopen(verdict_r, "rb", buffering=0)
    sel.register(verdict_file, selectors.EVENT_READ, "verdict")
    timed_out = output_over = False
    try:
        while sel.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                break
            for key, _ in sel.select(timeout=min(remaining, 0.25)):
                data = os.read(key.fileobj.fileno(), 65536)
                name = key.data
                if not data:
                    sel.unregister(key.fileobj)
                    continue
                totals[name] += len(data)
                bufs[name] += data
                if totals[name] > (1 << 20 if name == "verdict" else limits.max_output_bytes):
                    output_over = True
                if len(bufs[name]) > 64 * 1024 and name != "verdict":
                    del bufs[name][: len(bufs[name]) - 16 * 1024]
            if output_over:
                break
        if not (timed_out or output_over):
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                timed_out = True
    finally:
        if timed_out or output_over:
            _kill_group(proc.pid)
        sel.close()
        verdict_file.close()
    try:
        returncode = proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        returncode = None
    elapsed = time.monotonic() - start
    stderr = _tail(bufs["stderr"])
    verdict = None
    lines = bytes(bufs["verdict"]).decode("utf-8", "replace").splitlines()
    if len(lines) == 1:  # the judge writes exactly one line, then exits
        try:
            verdict = json.loads(lines[0])
        except ValueError:
            verdict = None
    if output_over:
        status, exc = "output_limit", "output exceeded the cap"
    elif timed_out:
        status, exc = "timeout", "wall-clock limit reached"
    elif isinstance(verdict, dict) and verdict.get("status") in STATUSES:
        status, exc = verdict["status"], verdict.get("exception")
        if isinstance(verdict.get("isolation"), dict):
            iso = {**iso, **verdict["isolation"]}
    else:
        last = stderr.strip().splitlines()[-1:] or ["no output"]
        status, exc = "error", f"sandbox failure: no verdict from the judge (exit code {returncode}): {last[0][:300]}"
    return SandboxResult(status, status == "passed", elapsed, returncode, exc,
                         _tail(bufs["stdout"]), stderr, iso)


def run_many(jobs: Sequence[tuple[str, str]], *, limits: SandboxLimits | None = None,
             workers: int | None = None, python: str | None = None,
             unsafe_no_sandbox: bool = False) -> list[SandboxResult]:
    """``run_program`` over (program, tests) pairs with a thread pool; results in input order.

    Raises ``SandboxUnavailable`` before running anything when bubblewrap does not work here and
    ``unsafe_no_sandbox`` is not set.
    """
    if not jobs:
        return []
    if not unsafe_no_sandbox:
        ok, why = sandbox_status(python)
        if not ok:
            raise SandboxUnavailable(why)
    workers = workers or max(1, min(4, (os.cpu_count() or 2)))
    with ThreadPoolExecutor(max_workers=workers) as ex:
        return list(ex.map(lambda j: run_program(j[0], j[1], limits=limits, python=python,
                                                 unsafe_no_sandbox=unsafe_no_sandbox), jobs))
