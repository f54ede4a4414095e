"""Run untrusted Python (a model's code + the task's tests) in a separate, limited process.

``run_program(program, tests)`` never raises: every outcome, including a failure of the sandbox
machinery itself, comes back as a ``SandboxResult`` whose ``status`` is one of

    passed        program and tests ran to the end, exit code 0, completion token received
    failed        an AssertionError (a test said no)
    timeout       wall-clock limit hit, or the CPU-time limit (SIGXCPU / SIGKILL) fired
    memory        MemoryError, or the process died from an allocation failure
    syntax_error  the program does not compile
    error         any other exception, a blocked operation (SandboxViolation), an early exit
                  (sys.exit / os._exit before the tests finished), a signal, a sandbox failure
    output_limit  stdout or stderr went past the cap, or a file write hit the file-size limit

Layers, outermost first (``SandboxResult.isolation`` records which applied on this machine):

1. **Process**: a fresh interpreter (``python -s -B``) in its own session / process group, so the
   wall timeout kills it and everything it started with one ``killpg``; stdin is closed after
   the payload, stdout / stderr are read through capped pipes; the environment is scrubbed to a
   fixed minimal set (no tokens, no proxies, no PYTHONPATH); the working directory is a fresh
   ``tempfile.mkdtemp`` removed afterwards.
2. **Network namespace**: the child is started through ``unshare --net`` (as root) or
   ``unshare --net --map-root-user`` (unprivileged user namespaces), probed once per process.
   Inside, only a down loopback exists, so no connection can leave. Where neither works
   (containers without the capability) this layer is absent and layer 5 still applies.
3. **Unprivileged user**: when alignlab runs as root, the child drops to ``nobody`` (uid/gid
   65534) with no supplementary groups and ``no_new_privs`` before running user code, so the
   kernel refuses writes to root-owned files and folders, signals to other users' processes,
   and raising limits. If the interpreter is unreadable by ``nobody`` (it lives under /root,
   say), the child keeps exactly one capability, CAP_DAC_READ_SEARCH (read any file; writes are
   still checked as ``nobody``). ``uid_drop_mode`` probes which works, once per interpreter.
4. **Resource limits** (``resource.setrlimit``, set before user code): RLIMIT_CPU (soft =
   cpu seconds, hard = +1 s), RLIMIT_AS (address space), RLIMIT_FSIZE (largest file it may
   write), RLIMIT_NOFILE, RLIMIT_CORE = 0, and RLIMIT_NPROC only when layer 3 applied (the
   limit counts every process of the uid, so it is only safe for a dedicated uid).
5. **Interpreter guard** (``sys.addaudithook`` + module replacement), effective everywhere:
   ``socket`` is replaced by a stub whose constructors raise and ``_socket`` / ``_ssl`` cannot be
   imported; process creation (fork, exec, spawn, ``os.system``, ``subprocess``,
   ``_posixsubprocess``), ``ctypes``, syslog, sqlite extensions, signals to other processes,
   ``resource.setrlimit``, and every route to the harness's frames (``sys._getframe``,
   ``tb_frame``, ``gi_frame``, ``f_back``, ``sys.settrace``, ``gc.get_objects``) are refused; any
   open for writing, delete, rename, chmod, link, mkdir or sqlite database whose resolved path
   (``dir_fd`` and symlinks included) is outside the working directory is refused. A refused
   operation raises ``SandboxViolation`` (a ``PermissionError``) inside the program; frame access
   raises a subclass that is also a ``ValueError``, which namedtuple, typing and logging already
   tolerate. Programs that print tracebacks themselves (``traceback.print_exc``) fail under it.

Limits of the design, stated plainly: layer 5 is a tripwire, not a security boundary (an audit
hook cannot see everything C code does); the real boundaries are layers 2–4, and they depend on
the host (root or user namespaces). The program can read files readable by its user (any file
in the CAP_DAC_READ_SEARCH mode), and world-writable places such as /tmp are only protected by
layer 5. Run evaluations of truly hostile code in a container or VM as well.

The program runs as a fresh ``__main__`` module (pickle finds its classes); the tests run in the
same namespace afterwards. Success needs a per-run random token that the harness writes to a private pipe after the tests
finish, so a program that exits early with status 0 is reported as ``error``, not ``passed``.
"""
from __future__ import annotations

import json
import os
import secrets
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

NOBODY_UID = 65534
NOBODY_GID = 65534
_TAIL = 2000  # characters of stdout / stderr kept in the result


@dataclass(frozen=True)
class SandboxLimits:
    """Per-run limits. ``cpu_s`` defaults to the wall timeout rounded up."""

    timeout_s: float = 5.0
    cpu_s: int | None = None
    memory_mb: int = 1024
    file_size_mb: int = 16
    max_output_bytes: int = 64 * 1024
    max_open_files: int = 128
    max_procs: int = 16


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


# ---------------------------------------------------------------------------- the child side

# Runs as `python -s -B -c _BOOTSTRAP <info_fd>` inside the working directory. Reads a JSON
# payload {token, program, tests, limits, ...} from stdin, applies layers 3-5, runs the program
# and then the tests in one namespace, and reports on the info pipe. Everything lives inside
# _m() so user code finds nothing of the harness in __main__.
_BOOTSTRAP = r'''
def _m():
    import sys, os, json, resource, builtins
    del globals()["_m"]
    info_fd = int(sys.argv[1])
    payload = json.loads(sys.stdin.buffer.read().decode("utf-8"))
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    token = payload.pop("token")
    lim = payload["limits"]
    iso = {"rlimits": []}

    # Bind everything used after user code runs: the program may rebind builtins or os.*.
    dumps, write, _exit, _exec, _type, _isinstance, _str, _getattr = (
        json.dumps, os.write, os._exit, exec, type, isinstance, str, getattr)

    def report(obj):
        try:
            write(info_fd, (dumps(obj) + "\n").encode("utf-8", "replace"))
        except BaseException:
            pass

    def setlim(name, soft, hard=None):
        res = getattr(resource, name, None)
        if res is None:
            return
        try:
            resource.setrlimit(res, (soft, soft if hard is None else hard))
            iso["rlimits"].append(name)
        except (ValueError, OSError):
            pass

    setlim("RLIMIT_CORE", 0)
    setlim("RLIMIT_CPU", lim["cpu_s"], lim["cpu_s"] + 1)
    setlim("RLIMIT_FSIZE", lim["file_size_mb"] * 1024 * 1024)
    setlim("RLIMIT_NOFILE", lim["max_open_files"])
    try:
        iso["netns"] = os.readlink("/proc/self/ns/net") != payload["parent_netns"]
    except OSError:
        iso["netns"] = False
    iso["uid_dropped"] = False
    if payload["drop_to"] is not None and os.geteuid() == 0:
        uid, gid, mode = payload["drop_to"]
        try:
            import ctypes
            libc = ctypes.CDLL(None, use_errno=True)

            def prctl(*args):
                if libc.prctl(*args) != 0:
                    raise OSError(ctypes.get_errno(), "prctl%r failed" % (args,))

            setlim("RLIMIT_NPROC", lim["max_procs"])
            if mode == "read_caps":
                prctl(8, 1, 0, 0, 0)  # PR_SET_KEEPCAPS: keep permitted caps across setuid
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            if mode == "read_caps":
                # Keep only CAP_DAC_READ_SEARCH (read any file, e.g. an interpreter under /root);
                # every write permission check is the unprivileged user's.
                class Hdr(ctypes.Structure):
                    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

                class Data(ctypes.Structure):
                    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                                ("inheritable", ctypes.c_uint32)]

                bit = 1 << 2  # CAP_DAC_READ_SEARCH
                data = (Data * 2)((bit, bit, 0), (0, 0, 0))
                if libc.capset(ctypes.byref(Hdr(0x20080522, 0)), data) != 0:  # _LINUX_CAPABILITY_VERSION_3
                    raise OSError(ctypes.get_errno(), "capset failed")
                prctl(8, 0, 0, 0, 0)
                iso["capabilities"] = ["CAP_DAC_READ_SEARCH"]
            prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS: no setuid / file-capability gains on exec
            iso["uid_dropped"] = True
        except (OSError, AttributeError, ImportError) as e:
            iso["uid_drop_error"] = str(e)
        libc = prctl = None
        for _name in [m for m in sys.modules if m == "ctypes" or m.startswith("ctypes.")]:
            del sys.modules[_name]
    setlim("RLIMIT_AS", lim["memory_mb"] * 1024 * 1024)

    # ---- interpreter guard -------------------------------------------------------------
    import socket as _real_socket
    import types
    stub = types.ModuleType("socket", "network access is disabled in the alignlab sandbox")

    def _blocked(*a, **k):
        raise PermissionError("network access is disabled in the alignlab sandbox")

    for _name, _val in vars(_real_socket).items():
        if isinstance(_val, int) and not isinstance(_val, bool) or _name in (
                "error", "timeout", "herror", "gaierror", "AddressFamily", "SocketKind"):
            setattr(stub, _name, _val)
    for _name in ("socket", "socketpair", "create_connection", "create_server", "fromfd",
                  "getaddrinfo", "gethostbyname", "gethostbyname_ex", "gethostbyaddr",
                  "getfqdn", "gethostname", "SocketType", "send_fds", "recv_fds"):
        setattr(stub, _name, _blocked)
    stub.has_ipv6 = False
    sys.modules["socket"] = stub
    for _name in ("_socket", "_ssl", "ssl", "_posixsubprocess", "_ctypes", "ctypes", "_multiprocessing",
                  "_posixshmem", "_dbm", "_gdbm", "readline"):
        sys.modules[_name] = None
    del _real_socket

    root = os.path.realpath(os.getcwd())
    W = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC
    realpath, readlink, fspath, fsdecode = os.path.realpath, os.readlink, os.fspath, os.fsdecode
    join, isabs = os.path.join, os.path.isabs

    class SandboxViolation(PermissionError):
        pass

    class FrameAccessViolation(SandboxViolation, ValueError):
        # A ValueError too: namedtuple, typing and logging call sys._getframe inside
        # `except (AttributeError, ValueError)` and fall back gracefully.
        pass

    def resolve(p, dir_fd=None):
        if isinstance(p, int):
            return realpath(readlink("/proc/self/fd/%d" % p))
        p = fsdecode(fspath(p))
        if dir_fd is not None and not isabs(p):
            p = join(readlink("/proc/self/fd/%d" % dir_fd), p)
        return realpath(p)

    def inside(p, dir_fd=None):
        try:
            rp = resolve(p, dir_fd)
        except Exception:
            return False
        return rp == root or rp.startswith(root + os.sep) or rp == os.devnull

    ALWAYS = {"os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
              "subprocess.Popen", "pty.spawn", "os.kill", "os.killpg", "signal.pthread_kill",
              "resource.setrlimit", "resource.prlimit", "gc.get_objects", "gc.get_referrers",
              "gc.get_referents", "os.chroot", "os.startfile", "webbrowser.open", "os.unshare",
              "os.setns", "socket.__new__", "socket.connect", "socket.bind", "socket.getaddrinfo",
              "socket.sendto", "socket.sendmsg", "socket.gethostbyname",
              "sqlite3.enable_load_extension", "sqlite3.load_extension"}
    # Frames lead to the harness's locals (the completion token): no frame access from user code.
    FRAME_EVENTS = {"sys._getframe", "sys._current_frames", "sys.settrace", "sys.setprofile"}
    FRAME_ATTRS = {"tb_frame", "gi_frame", "cr_frame", "ag_frame", "f_back"}
    # C modules that reach files, sockets or processes without passing the hooks above.
    BLOCKED_IMPORTS = {"_socket", "_ssl", "_posixsubprocess", "_ctypes", "_multiprocessing",
                       "_posixshmem", "_dbm", "_gdbm", "readline"}
    # event -> (indices of path arguments, index of dir_fd or None)
    PATHS = {"os.remove": ((0,), 1), "os.rmdir": ((0,), 1), "os.rename": ((0, 1), 2),
             "os.mkdir": ((0,), 2), "os.chmod": ((0,), 2), "os.chown": ((0,), 3),
             "os.link": ((0, 1), 2), "os.symlink": ((1,), 2), "os.truncate": ((0,), None),
             "os.utime": ((0,), 4), "shutil.rmtree": ((0,), 1), "shutil.copyfile": ((1,), None),
             "shutil.copytree": ((1,), None), "shutil.move": ((0, 1), None),
             "os.mkfifo": ((0,), 2), "os.mknod": ((0,), 3), "os.setxattr": ((0,), None),
             "os.removexattr": ((0,), None), "os.chflags": ((0,), None), "os.lchflags": ((0,), None),
             "sqlite3.connect": ((0,), None)}
    busy = [False]

    def hook(event, args):
        if busy[0]:
            return
        busy[0] = True
        try:
            if event in ALWAYS or event.startswith(("ctypes.", "syslog.")):
                raise SandboxViolation("sandbox: %s is not allowed" % event)
            if event in FRAME_EVENTS or (event == "object.__getattr__" and len(args) > 1
                                         and args[1] in FRAME_ATTRS):
                raise FrameAccessViolation("sandbox: frame access (%s) is not allowed" % event)
            if event == "import" and args and args[0] in BLOCKED_IMPORTS:
                raise SandboxViolation("sandbox: importing %s is not allowed" % args[0])
            if event == "open":
                path, mode, flags = (tuple(args) + (None, None, None))[:3]
                writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or \
                          (isinstance(flags, int) and flags & W)
                if writing and not inside(path):
                    raise SandboxViolation("sandbox: writing outside the working directory: %r" % (path,))
            elif event in PATHS:
                idxs, dfd_i = PATHS[event]
                dfd = args[dfd_i] if dfd_i is not None and dfd_i < len(args) else None
                dfd = dfd if isinstance(dfd, int) and dfd >= 0 else None
                for i in idxs:
                    if event == "sqlite3.connect" and args[i] in (":memory:", "", b":memory:", b""):
                        continue
                    if i < len(args) and args[i] is not None and not inside(args[i], dfd):
                        raise SandboxViolation("sandbox: %s outside the working directory: %r"
                                               % (event, args[i]))
        finally:
            busy[0] = False

    _orig_open = os.open

    def guarded_open(path, flags, mode=0o777, *, dir_fd=None):
        # The "open" audit event omits dir_fd; check it here.
        if dir_fd is not None and flags & W and not inside(path, dir_fd):
            raise SandboxViolation("sandbox: writing outside the working directory: %r" % (path,))
        return _orig_open(path, flags, mode, dir_fd=dir_fd)

    os.open = guarded_open
    try:
        import posix
        posix.open = guarded_open
    except ImportError:
        pass

    def compile_or_report(src, name, phase):
        try:
            return compile(src, name, "exec")
        except (SyntaxError, ValueError, MemoryError, RecursionError) as e:
            report({"phase": phase, "outcome": "exception", "type": type(e).__name__,
                    "message": str(e)[:500], "syntax": isinstance(e, SyntaxError)})
            os._exit(1)

    prog = compile_or_report(payload["program"], "<program>", "compile")
    tests = compile_or_report(payload["tests"] or "", "<tests>", "compile_tests")
    report({"phase": "ready", "isolation": iso})
    sys.addaudithook(hook)
    # A fresh __main__ for the program (pickle and friends look classes up there); the harness
    # keeps its own globals, so names the program defines cannot shadow the harness's.
    main_mod = types.ModuleType("__main__")
    main_mod.__builtins__ = builtins
    sys.modules["__main__"] = main_mod
    ns = main_mod.__dict__
    phase = "program"
    out, err = sys.stdout, sys.stderr
    try:
        _exec(prog, ns)
        phase = "tests"
        _exec(tests, ns)
    except BaseException as e:  # noqa: B036 -- SystemExit and KeyboardInterrupt are failures too
        try:
            msg = _str(e)[:500]
        except BaseException:
            msg = "<unprintable>"
        errno = _getattr(e, "errno", None)
        report({"phase": phase, "outcome": "exception", "type": _type(e).__name__, "message": msg,
                "violation": _isinstance(e, SandboxViolation),
                "errno": errno if _type(errno) is int else None})
        try:
            out.flush(); err.flush()
        except BaseException:
            pass
        _exit(1)
    try:
        out.flush(); err.flush()
    except BaseException:
        pass
    report({"phase": "done", "outcome": "passed", "token": token})
    _exit(0)
_m()
'''


# ---------------------------------------------------------------------------- the parent side

_NET_WRAPPER: list[str] | None = None
_NET_LOCK = threading.Lock()


def network_wrapper() -> list[str]:
    """The command prefix that puts the child in a fresh network namespace ([] when unavailable).

    Probed once per process: ``unshare --net`` as root, ``unshare --net --map-root-user`` otherwise.
    """
    global _NET_WRAPPER
    with _NET_LOCK:
        if _NET_WRAPPER is not None:
            return _NET_WRAPPER
        _NET_WRAPPER = []
        exe = shutil.which("unshare")
        if exe:
            cands = [[exe, "--net"]] if os.geteuid() == 0 else []
            cands.append([exe, "--net", "--map-root-user"])
            for cand in cands:
                try:
                    r = subprocess.run(cand + ["--", sys.executable, "-c", "pass"], capture_output=True,
                                       timeout=10, env={"PATH": "/usr/bin:/bin"})
                except (OSError, subprocess.SubprocessError):
                    continue
                if r.returncode == 0:
                    _NET_WRAPPER = cand + ["--"]
                    break
        return _NET_WRAPPER


_DROP_MODE: dict[str, str | None] = {}
DROP_PROBE = "import colorsys, fractions, decimal, json, email.parser, unicodedata"


def uid_drop_mode(python: str | None = None) -> str | None:
    """How a root parent can run the child as ``nobody``: "plain", "read_caps" or None.

    "plain" when the interpreter works after a plain switch to nobody; "read_caps" when it only
    works with CAP_DAC_READ_SEARCH kept (an interpreter under /root, for instance: it may read
    anything, write only where nobody may); None when neither works or alignlab is not root.
    Probed once per interpreter by running the real harness on a few imports.
    """
    python = python or sys.executable
    if os.geteuid() != 0:
        return None
    with _NET_LOCK:
        if python in _DROP_MODE:
            return _DROP_MODE[python]
    mode = None
    for cand in ("plain", "read_caps"):
        res = _run(DROP_PROBE, "", SandboxLimits(timeout_s=20, memory_mb=1024), python, True, cand)
        if res.status == "passed" and res.isolation.get("uid_dropped"):
            mode = cand
            break
    with _NET_LOCK:
        _DROP_MODE[python] = mode
    return mode


def _scrubbed_env(workdir: str) -> dict[str, str]:
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": workdir,
        "TMPDIR": workdir,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONHASHSEED": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONIOENCODING": "utf-8",
        "PYTHONUTF8": "1",
        # BLAS libraries reserve per-thread arenas at import; one thread keeps RLIMIT_AS meaningful.
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }


def _tail(buf: bytearray) -> str:
    return bytes(buf[-_TAIL * 4:]).decode("utf-8", "replace")[-_TAIL:]


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError, OSError):
        pass


def _classify(info: list[dict], token: str, returncode: int | None, timed_out: bool,
              output_over: bool, stderr: str) -> tuple[str, str | None]:
    """Map what the child reported and how it ended onto (status, exception text)."""
    final = next((m for m in reversed(info) if m.get("phase") != "ready"), None)
    if output_over:
        return "output_limit", "output exceeded the cap"
    if timed_out:
        return "timeout", "wall-clock limit reached"
    if final is not None and final.get("outcome") == "passed":
        if final.get("token") == token and returncode == 0:
            return "passed", None
        return "error", "forged or incomplete completion report"
    if final is not None and final.get("outcome") == "exception":
        etype, msg = final.get("type", "Exception"), final.get("message", "")
        text = f"{etype}: {msg}" if msg else etype
        if final.get("phase") == "compile" and final.get("syntax"):
            return "syntax_error", text
        if final.get("phase") == "compile_tests":
            return "error", "the tests do not compile: " + text
        if etype == "MemoryError" or etype.endswith("MemoryError"):
            return "memory", text
        if etype == "AssertionError":
            return "failed", text
        if final.get("errno") == 27:  # EFBIG: RLIMIT_FSIZE (Python ignores SIGXFSZ)
            return "output_limit", text
        if etype == "SystemExit":
            return "error", "the program exited before the tests finished (" + text + ")"
        return "error", text
    if returncode is not None and returncode < 0:
        sig = -returncode
        if sig in (signal.SIGXCPU, signal.SIGKILL):
            return "timeout", f"killed by signal {signal.Signals(sig).name} (CPU-time limit)"
        if sig == signal.SIGXFSZ:
            return "output_limit", "file-size limit exceeded"
        if "MemoryError" in stderr or "Cannot allocate memory" in stderr or "bad_alloc" in stderr:
            return "memory", f"killed by signal {signal.Signals(sig).name} after an allocation failure"
        return "error", f"killed by signal {signal.Signals(sig).name}"
    if "MemoryError" in stderr:
        return "memory", "MemoryError"
    if not any(m.get("phase") == "ready" for m in info):
        last = stderr.strip().splitlines()[-1:] or ["no output"]
        return "error", f"sandbox failure: the harness did not start (exit code {returncode}): {last[0][:300]}"
    return "error", f"the program exited (code {returncode}) before the tests finished"


def run_program(program: str, tests: str = "", *, limits: SandboxLimits | None = None,
                python: str | None = None, network_isolation: bool = True,
                drop_privileges: bool = True) -> SandboxResult:
    """Run ``program`` then ``tests`` (same namespace) in the sandbox; see the module docstring.

    ``python`` is the interpreter for the child (default ``$ALIGNLAB_SANDBOX_PYTHON``, else the
    current one); pointing it at an interpreter that ``nobody`` can read enables the uid drop
    when alignlab runs as root.

    Never raises (except KeyboardInterrupt in the caller); a failure of the machinery itself is
    reported as status ``error`` with the reason in ``exception``.
    """
    t0 = time.monotonic()
    try:
        python = python or os.environ.get("ALIGNLAB_SANDBOX_PYTHON") or sys.executable
        mode = uid_drop_mode(python) if drop_privileges else None
        return _run(program, tests, limits or SandboxLimits(), python, network_isolation, mode)
    except Exception as e:  # the evaluation run must survive anything
        return SandboxResult("error", False, time.monotonic() - t0,
                             exception=f"sandbox failure: {type(e).__name__}: {e}")


def _run(program: str, tests: str, limits: SandboxLimits, python: str,
         network_isolation: bool, drop_mode: str | None) -> SandboxResult:
    if not isinstance(program, str) or not isinstance(tests, str):
        return SandboxResult("error", False, 0.0, exception="program and tests must be strings")
    cpu_s = limits.cpu_s if limits.cpu_s is not None else max(1, int(limits.timeout_s + 0.999))
    token = secrets.token_hex(16)
    wrapper = network_wrapper() if network_isolation else []
    drop_to = (NOBODY_UID, NOBODY_GID, drop_mode) if (drop_mode and os.geteuid() == 0) else None
    try:
        parent_netns = os.readlink("/proc/self/ns/net")
    except OSError:
        parent_netns = ""
    payload = json.dumps({
        "token": token, "program": program, "tests": tests, "drop_to": drop_to,
        "parent_netns": parent_netns,
        "limits": {"cpu_s": cpu_s, "memory_mb": limits.memory_mb, "file_size_mb": limits.file_size_mb,
                   "max_open_files": limits.max_open_files, "max_procs": limits.max_procs},
    }).encode("utf-8")

    workdir = tempfile.mkdtemp(prefix="alignlab-sandbox-")
    try:
        if drop_to is not None:
            os.chown(workdir, NOBODY_UID, NOBODY_GID)
        os.chmod(workdir, 0o700)
        info_r, info_w = os.pipe()
        cmd = wrapper + [python, "-s", "-B", "-c", _BOOTSTRAP, str(info_w)]
        start = time.monotonic()
        try:
            proc = subprocess.Popen(
                cmd, cwd=workdir, env=_scrubbed_env(workdir), stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, pass_fds=(info_w,),
                start_new_session=True, close_fds=True)
        finally:
            os.close(info_w)
        try:
            return _supervise(proc, info_r, payload, token, limits, start,
                              {"network": "netns" if wrapper else "python-guard-only"})
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
        shutil.rmtree(workdir, ignore_errors=True)


def _feed(stdin, payload: bytes) -> None:
    try:
        stdin.write(payload)
        stdin.close()
    except (OSError, ValueError):
        pass


def _supervise(proc: subprocess.Popen, info_r: int, payload: bytes, token: str,
               limits: SandboxLimits, start: float, iso_parent: dict) -> SandboxResult:
    feeder = threading.Thread(target=_feed, args=(proc.stdin, payload), daemon=True)
    feeder.start()
    deadline = start + limits.timeout_s
    bufs = {"stdout": bytearray(), "stderr": bytearray(), "info": bytearray()}
    totals = dict.fromkeys(bufs, 0)
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ, "stdout")
    sel.register(proc.stderr, selectors.EVENT_READ, "stderr")
    info_file = os.fdopen(info_r, "rb", buffering=0)
    sel.register(info_file, selectors.EVENT_READ, "info")
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
                if name == "info":
                    if totals[name] > 1 << 20:
                        output_over = True
                elif totals[name] > limits.max_output_bytes:
                    output_over = True
                if len(bufs[name]) > 64 * 1024 and name != "info":
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
        info_file.close()
    try:
        returncode = proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        returncode = None
    elapsed = time.monotonic() - start
    info: list[dict] = []
    for line in bytes(bufs["info"]).decode("utf-8", "replace").splitlines():
        try:
            obj = json.loads(line)
            if isinstance(obj, dict):
                info.append(obj)
        except ValueError:
            continue
    iso = dict(iso_parent)
    ready = next((m for m in info if m.get("phase") == "ready"), None)
    if ready and isinstance(ready.get("isolation"), dict):
        child_iso = ready["isolation"]
        iso.update(uid_dropped=bool(child_iso.get("uid_dropped")), rlimits=child_iso.get("rlimits", []),
                   netns_verified=bool(child_iso.get("netns")))
        for key in ("capabilities", "uid_drop_error"):
            if key in child_iso:
                iso[key] = child_iso[key]
        if iso["network"] == "netns" and not iso["netns_verified"]:
            iso["network"] = "python-guard-only"
    stderr = _tail(bufs["stderr"])
    status, exc = _classify(info, token, returncode, timed_out, output_over, stderr)
    return SandboxResult(status, status == "passed", elapsed, returncode, exc,
                         _tail(bufs["stdout"]), stderr, iso)


def run_many(jobs: Sequence[tuple[str, str]], *, limits: SandboxLimits | None = None,
             workers: int | None = None, **kwargs) -> list[SandboxResult]:
    """``run_program`` over (program, tests) pairs with a thread pool; results in input order."""
    if not jobs:
        return []
    workers = workers or max(1, min(4, (os.cpu_count() or 2)))
    with ThreadPoolExecutor(max_workers=workers) as ex:
        return list(ex.map(lambda j: run_program(j[0], j[1], limits=limits, **kwargs), jobs))
