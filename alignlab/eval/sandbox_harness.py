"""The judge that runs inside the sandbox. Started as ``python -I -S -B sandbox_harness.py FD``
(standard library only, nothing from the working folder on ``sys.path``); reads
``{program, tests, limits}`` as JSON on stdin and writes exactly one verdict line to fd ``FD``.

Two processes, so that no code under test ever runs in the process that decides:

* the **judge** (this process, trusted) compiles the program and the tests, forks the
  **candidate**, and then runs the tests itself;
* the **candidate** (the forked child) closes the verdict fd, takes its limits (rlimits) and a
  seccomp filter (no new processes, no exec, no ptrace or cross-process memory, no namespaces or
  mounts, no kernel keyring, bpf, io_uring or userfaultfd), then runs the program in a fresh
  ``__main__`` and serves requests about its namespace over two pipes.

The judge sees the candidate's names only as plain data (numbers, strings, bytes, containers,
dates, Decimal, Fraction, Counter, deque ...), decoded by a strict decoder that builds nothing
else. Any other object (a function, a class, an instance) is a handle: calling it, reading an
attribute or an item, ``len``, ``iter``, ``bool`` and ``str`` are requests to the candidate, and
the answers are plain data again. A handle never decides a comparison against the test's own
values (``handle == [1, 2]`` is False), so an object whose ``__eq__`` is always true does not
pass; two handles compare in the candidate. Names of builtins always mean the builtins in the
tests (a program that defines ``sorted`` cannot answer for the test's ``sorted``).

The verdict channel is fd ``FD``, open in the judge only; the candidate cannot reach the judge's
memory or descriptors (no /proc in the sandbox, ptrace, process_vm_* and pidfd_getfd refused by
seccomp, the judge is not dumpable). There is no secret anywhere: forging a "passed" line needs
that descriptor, which the candidate never holds.
"""
from __future__ import annotations

import builtins
import collections
import datetime
import decimal
import fractions
import json
import os
import struct
import sys
import types

MAX_MSG = 16 * 1024 * 1024  # bytes of one message between candidate and judge
MAX_DEPTH = 60


# ---------------------------------------------------------------------------- plain-data codec


class NotData(Exception):
    pass


def encode(x, ref, depth=0):
    """JSON-able form of ``x``; objects that are not plain data go through ``ref(x)``."""
    if depth > MAX_DEPTH:
        raise NotData("nested too deeply")
    t = type(x)
    if x is None or t is bool or t is str:
        return x
    if t is int:
        return x if x.bit_length() < 4000 else ["bigint", format(x, "x")]
    if t is float:
        return ["f", x.hex()]
    if t is complex:
        return ["c", x.real.hex(), x.imag.hex()]
    if t is bytes:
        return ["b", x.hex()]
    if t is bytearray:
        return ["ba", x.hex()]
    d = depth + 1
    if t is list:
        return ["l", [encode(v, ref, d) for v in x]]
    if t is tuple:
        return ["t", [encode(v, ref, d) for v in x]]
    if isinstance(x, tuple) and type(getattr(t, "_fields", None)) is tuple:  # a namedtuple
        return ["nt", str(t.__name__), [str(f) for f in t._fields], [encode(v, ref, d) for v in x]]
    if t is set or t is frozenset:
        return ["s" if t is set else "fs", [encode(v, ref, d) for v in x]]
    if t is dict or t is collections.defaultdict:
        return ["d", [[encode(k, ref, d), encode(v, ref, d)] for k, v in x.items()]]
    if t is collections.OrderedDict:
        return ["od", [[encode(k, ref, d), encode(v, ref, d)] for k, v in x.items()]]
    if t is collections.Counter:
        return ["ctr", [[encode(k, ref, d), encode(v, ref, d)] for k, v in x.items()]]
    if t is collections.deque:
        return ["dq", [encode(v, ref, d) for v in x], x.maxlen]
    if t is range:
        return ["r", x.start, x.stop, x.step]
    if t is datetime.datetime:
        return ["dt", x.isoformat()]
    if t is datetime.date:
        return ["date", x.isoformat()]
    if t is datetime.time:
        return ["time", x.isoformat()]
    if t is datetime.timedelta:
        return ["td", x.days, x.seconds, x.microseconds]
    if t is decimal.Decimal:
        return ["dec", str(x)]
    if t is fractions.Fraction:
        return ["frac", x.numerator, x.denominator]
    if t is types.ModuleType:
        return ["mod", str(getattr(x, "__name__", ""))]
    return ref(x)


_NAMEDTUPLES = {}


def _int(v):
    if type(v) is not int:
        raise NotData("expected an int")
    return v


def _str(v):
    if type(v) is not str:
        raise NotData("expected a string")
    return v


def decode(v, handle, depth=0):
    """The inverse of ``encode``; builds only the types above. ``handle(v)`` makes a handle."""
    if depth > MAX_DEPTH:
        raise NotData("nested too deeply")
    if v is None or type(v) in (bool, int, str):
        return v
    if type(v) is not list or not v or type(v[0]) is not str:
        raise NotData("malformed value")
    tag, d = v[0], depth + 1

    def items(i=1):
        if type(v[i]) is not list:
            raise NotData("malformed container")
        return [decode(e, handle, d) for e in v[i]]

    def pairs():
        if type(v[1]) is not list or any(type(p) is not list or len(p) != 2 for p in v[1]):
            raise NotData("malformed mapping")
        return [(decode(k, handle, d), decode(x, handle, d)) for k, x in v[1]]

    if tag == "bigint":
        return int(_str(v[1]), 16)
    if tag == "f":
        return float.fromhex(_str(v[1]))
    if tag == "c":
        return complex(float.fromhex(_str(v[1])), float.fromhex(_str(v[2])))
    if tag == "b":
        return bytes.fromhex(_str(v[1]))
    if tag == "ba":
        return bytearray.fromhex(_str(v[1]))
    if tag == "l":
        return items()
    if tag == "t":
        return tuple(items())
    if tag == "nt":  # rebuilt by collections.namedtuple, which accepts identifiers only
        if type(v[2]) is not list or not all(type(f) is str for f in v[2]):
            raise NotData("malformed namedtuple")
        key = (_str(v[1]), tuple(v[2]))
        if key not in _NAMEDTUPLES:
            _NAMEDTUPLES[key] = collections.namedtuple(*key)
        return _NAMEDTUPLES[key](*items(3))
    if tag == "s":
        return set(items())
    if tag == "fs":
        return frozenset(items())
    if tag == "d":
        return dict(pairs())
    if tag == "od":
        return collections.OrderedDict(pairs())
    if tag == "ctr":
        return collections.Counter(dict(pairs()))
    if tag == "dq":
        return collections.deque(items(), None if v[2] is None else _int(v[2]))
    if tag == "r":
        return range(_int(v[1]), _int(v[2]), _int(v[3]))
    if tag == "dt":
        return datetime.datetime.fromisoformat(_str(v[1]))
    if tag == "date":
        return datetime.date.fromisoformat(_str(v[1]))
    if tag == "time":
        return datetime.time.fromisoformat(_str(v[1]))
    if tag == "td":
        return datetime.timedelta(days=_int(v[1]), seconds=_int(v[2]), microseconds=_int(v[3]))
    if tag == "dec":
        return decimal.Decimal(_str(v[1]))
    if tag == "frac":
        return fractions.Fraction(_int(v[1]), _int(v[2]))
    if tag in ("mod", "ref"):
        return handle(v)
    raise NotData("unknown tag %r" % tag)


# ---------------------------------------------------------------------------- framing


def send(fd, obj):
    data = json.dumps(obj, separators=(",", ":")).encode("utf-8", "surrogatepass")
    if len(data) > MAX_MSG:
        raise NotData("message too large")
    data = struct.pack(">I", len(data)) + data
    while data:
        data = data[os.write(fd, data):]


def recv(fd):
    """One message, or None at end of stream. Raises NotData on a malformed or oversized one."""
    head = _read_exact(fd, 4)
    if head is None:
        return None
    (n,) = struct.unpack(">I", head)
    if n > MAX_MSG:
        raise NotData("message too large (%d bytes)" % n)
    body = _read_exact(fd, n)
    if body is None:
        raise NotData("truncated message")
    return json.loads(body.decode("utf-8", "surrogatepass"))


def _read_exact(fd, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


# ---------------------------------------------------------------------------- seccomp (candidate only)

_AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
# Refused with EPERM. clone is allowed only with CLONE_THREAD (threads, not processes); clone3
# answers ENOSYS so glibc falls back to clone.
_DENY = {
    "x86_64": dict(fork=57, vfork=58, execve=59, execveat=322, ptrace=101, process_vm_readv=310,
                   process_vm_writev=311, pidfd_getfd=438, pidfd_open=434, kcmp=312, bpf=321,
                   userfaultfd=323, perf_event_open=298, keyctl=250, add_key=248, request_key=249,
                   mount=165, umount2=166, pivot_root=155, unshare=272, setns=308, chroot=161,
                   io_uring_setup=425, io_uring_enter=426, io_uring_register=427, personality=135,
                   open_tree=428, move_mount=429, fsopen=430, fsmount=432, name_to_handle_at=303,
                   open_by_handle_at=304, syslog=103, quotactl=179),
    "aarch64": dict(execve=221, execveat=281, ptrace=117, process_vm_readv=270, process_vm_writev=271,
                    pidfd_getfd=438, pidfd_open=434, kcmp=272, bpf=280, userfaultfd=282,
                    perf_event_open=241, keyctl=219, add_key=217, request_key=218, mount=40,
                    umount2=39, pivot_root=41, unshare=97, setns=268, chroot=51, io_uring_setup=425,
                    io_uring_enter=426, io_uring_register=427, personality=92, open_tree=428,
                    move_mount=429, fsopen=430, fsmount=432, name_to_handle_at=264,
                    open_by_handle_at=265, syslog=116, quotactl=60),
}
_CLONE = {"x86_64": 56, "aarch64": 220}
_CLONE3 = 435
CLONE_THREAD = 0x10000


def seccomp_program(machine):
    """BPF (list of (code, jt, jf, k)) for the candidate, or None on an architecture we do not know."""
    if machine not in _AUDIT_ARCH:
        return None
    LD, JEQ, JGE, JSET, RET = 0x20, 0x15, 0x35, 0x45, 0x06  # BPF_LD|W|ABS, JMP|JEQ|K, JGE, JSET, RET|K
    KILL, ALLOW = 0x80000000, 0x7FFF0000
    EPERM, ENOSYS = 0x00050000 | 1, 0x00050000 | 38
    p = [(LD, 0, 0, 4), (JEQ, 1, 0, _AUDIT_ARCH[machine]), (RET, 0, 0, KILL), (LD, 0, 0, 0)]
    if machine == "x86_64":
        p += [(JGE, 0, 1, 0x40000000), (RET, 0, 0, KILL)]  # the x32 ABI would dodge the table
    for nr in sorted(_DENY[machine].values()):
        p += [(JEQ, 0, 1, nr), (RET, 0, 0, EPERM)]
    p += [(JEQ, 0, 1, _CLONE3), (RET, 0, 0, ENOSYS)]
    p += [(JEQ, 0, 3, _CLONE[machine]), (LD, 0, 0, 16),  # low word of args[0] (little endian)
          (JSET, 1, 0, CLONE_THREAD), (RET, 0, 0, EPERM)]
    p += [(RET, 0, 0, ALLOW)]
    return p


def _libc():
    import ctypes

    return ctypes, ctypes.CDLL(None, use_errno=True)


def install_seccomp():
    """No new privileges, then the filter. Returns True when the filter is in place."""
    prog = seccomp_program(os.uname().machine)
    ctypes, libc = _libc()
    if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
        raise OSError(ctypes.get_errno(), "PR_SET_NO_NEW_PRIVS failed")
    if prog is None:
        return False

    class Filter(ctypes.Structure):
        _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte),
                    ("k", ctypes.c_uint)]

    class Prog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(Filter))]

    arr = (Filter * len(prog))(*[Filter(*ins) for ins in prog])
    fprog = Prog(len(prog), ctypes.cast(arr, ctypes.POINTER(Filter)))
    if libc.prctl(22, 2, ctypes.byref(fprog), 0, 0) != 0:  # PR_SET_SECCOMP, SECCOMP_MODE_FILTER
        raise OSError(ctypes.get_errno(), "seccomp filter refused")
    return True


def set_limits(lim, iso=None):
    import resource

    def setlim(name, soft, hard=None):
        res = getattr(resource, name, None)
        if res is None:
            return
        try:
            resource.setrlimit(res, (soft, soft if hard is None else hard))
            if iso is not None:
                iso.append(name)
        except (ValueError, OSError):
            pass

    setlim("RLIMIT_CORE", 0)
    setlim("RLIMIT_CPU", lim["cpu_s"], lim["cpu_s"] + 1)
    setlim("RLIMIT_FSIZE", lim["file_size_mb"] * 1024 * 1024)
    setlim("RLIMIT_NOFILE", lim["max_open_files"])
    setlim("RLIMIT_AS", lim["memory_mb"] * 1024 * 1024)


# ---------------------------------------------------------------------------- the candidate


def describe(e):
    try:
        msg = str(e)[:500]
    except BaseException:
        msg = "<unprintable>"
    errno = getattr(e, "errno", None)
    return {"type": type(e).__name__, "message": msg, "errno": errno if type(errno) is int else None}


def candidate(req_fd, rep_fd, code, lim):
    """Runs in the forked child; never returns."""
    iso = {"rlimits": []}
    set_limits(lim, iso["rlimits"])
    try:
        iso["seccomp"] = install_seccomp()
    except OSError as e:
        iso["seccomp"] = False
        iso["seccomp_error"] = str(e)
    for name in [m for m in sys.modules if m == "ctypes" or m.startswith("ctypes.")]:
        del sys.modules[name]  # the program imports its own copy if it wants one
    table = {}

    def ref(x):
        table[id(x)] = x
        return ["ref", id(x), type(x).__qualname__[:100]]

    def enc(x):
        try:
            return encode(x, ref)
        except (NotData, RecursionError, ValueError, TypeError):
            return ref(x)

    def reply(obj):
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except BaseException:
            pass
        send(rep_fd, obj)

    def obj_of(v):
        if v[0] == "ref" and v[1] in table:
            return table[v[1]]
        if v[0] == "mod":
            return sys.modules.get(v[1])
        raise NotData("unknown handle")

    main_mod = types.ModuleType("__main__")
    main_mod.__builtins__ = builtins
    sys.modules["__main__"] = main_mod
    ns = main_mod.__dict__
    send(rep_fd, {"ready": iso})
    try:
        exec(code, ns)
    except BaseException as e:  # noqa: B036 -- SystemExit is a failure too
        reply({"exc": describe(e)})
        os._exit(1)
    names = {}
    for k, v in list(ns.items()):
        if isinstance(k, str) and not k.startswith("__"):
            names[k] = enc(v)
    reply({"ns": names})
    while True:
        try:
            req = recv(req_fd)
        except BaseException:
            os._exit(1)
        if req is None:
            os._exit(0)
        try:
            op, target = req["op"], obj_of(req["target"])
            args = [decode(a, obj_of) for a in req.get("args", [])]
            if op == "call":
                kwargs = {k: decode(v, obj_of) for k, v in req.get("kwargs", {}).items()}
                res = target(*args, **kwargs)
                # Arguments the function may have changed in place go back to the judge.
                after = [enc(a) if type(a) in (list, dict, set, bytearray) else None for a in args]
                reply({"ok": enc(res), "after": after})
                continue
            if op == "getattr":
                res = getattr(target, args[0])
            elif op == "getitem":
                res = target[args[0]]
            elif op == "len":
                res = len(target)
            elif op == "iter":
                res = list(target)
            elif op == "bool":
                res = bool(target)
            elif op == "str":
                res = str(target)
            elif op == "repr":
                res = repr(target)
            elif op == "contains":
                res = args[0] in target
            elif op == "eq":
                res = bool(target == args[0])
            else:
                raise NotData("unknown request")
            reply({"ok": enc(res)})
        except BaseException as e:  # noqa: B036
            try:
                reply({"exc": describe(e)})
            except BaseException:
                os._exit(1)


# ---------------------------------------------------------------------------- the judge


class CandidateGone(Exception):
    """The candidate process ended (or broke the protocol) while the tests needed it."""


class RemoteError(Exception):
    """An exception in the candidate whose type is not a builtin exception."""


_REMOTE_EXC = {n: c for n, c in vars(builtins).items()
               if isinstance(c, type) and issubclass(c, Exception)
               and n not in ("SystemExit", "KeyboardInterrupt", "GeneratorExit", "StopIteration",
                             "StopAsyncIteration")}
_NO_IMPORT = {"antigravity", "this", "idlelib", "turtle", "turtledemo", "tkinter", "webbrowser", "pdb"}


class Judge:
    def __init__(self, req_fd, rep_fd):
        self.req, self.rep = req_fd, rep_fd

    def handle(self, v):
        if v[0] == "mod":
            name = _str(v[1])
            if name in sys.modules:
                return sys.modules[name]
            top = name.partition(".")[0]
            if top in sys.stdlib_module_names and top not in _NO_IMPORT:
                import importlib

                try:
                    return importlib.import_module(name)
                except ImportError:
                    pass
            return Handle(self, v)
        if len(v) != 3 or type(v[1]) is not int:
            raise NotData("malformed handle")
        return Handle(self, v)

    def wire(self, x):
        def ref(o):
            if type(o) is Handle and o._judge is self:
                return list(o._v[:2])
            raise NotData("the sandbox passes only plain data to the program, not %s"
                          % type(o).__name__)
        return encode(x, ref)

    def ask(self, op, target, *args, **kwargs):
        msg = {"op": op, "target": target, "args": [self.wire(a) for a in args]}
        if kwargs:
            msg["kwargs"] = {k: self.wire(v) for k, v in kwargs.items()}
        try:
            send(self.req, msg)
            rep = recv(self.rep)
        except OSError:
            rep = None
        if rep is None:
            raise CandidateGone("the program's process ended during the tests")
        return self.answer(rep, args)

    def answer(self, rep, args=()):
        if not isinstance(rep, dict):
            raise NotData("malformed reply")
        if "exc" in rep:
            e = rep["exc"] if isinstance(rep["exc"], dict) else {}
            name, msg = str(e.get("type", "Exception")), str(e.get("message", ""))
            if name == "MemoryError":
                raise MemoryError(msg)
            cls = _REMOTE_EXC.get(name)
            raise cls(msg) if cls is not None else RemoteError("%s: %s" % (name, msg))
        res = decode(rep.get("ok"), self.handle)
        after = rep.get("after")
        if isinstance(after, list) and len(after) == len(args):
            for a, new in zip(args, after):
                if new is None or type(a) not in (list, dict, set, bytearray):
                    continue
                new = decode(new, self.handle)
                if type(new) is not type(a):
                    continue
                if type(a) in (list, bytearray):
                    a[:] = new
                else:
                    a.clear()
                    a.update(new)
        return res


class Handle:
    """A candidate object the judge cannot hold as data. Every question is a request."""

    __slots__ = ("_judge", "_v")

    def __init__(self, judge, v):
        object.__setattr__(self, "_judge", judge)
        object.__setattr__(self, "_v", v)

    def _ask(self, op, *args, **kwargs):
        return self._judge.ask(op, self._v[:2], *args, **kwargs)

    def __call__(self, *args, **kwargs):
        return self._ask("call", *args, **kwargs)

    def __getattr__(self, name):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return self._ask("getattr", name)

    def __setattr__(self, name, value):
        raise TypeError("the tests cannot change the program's objects from the judge")

    def __getitem__(self, key):
        return self._ask("getitem", key)

    def __len__(self):
        return self._ask("len")

    def __iter__(self):
        return iter(self._ask("iter"))

    def __bool__(self):
        return self._ask("bool") is True

    def __contains__(self, item):
        return self._ask("contains", item) is True

    def __str__(self):
        return str(self._ask("str"))

    def __repr__(self):
        return "<sandboxed %s>" % self._v[2] if len(self._v) > 2 else "<sandboxed object>"

    def __eq__(self, other):
        # Only two of the program's own objects compare in the program; against the test's
        # values a handle is never equal (its __eq__ is the program's to choose).
        if type(other) is Handle and other._judge is self._judge:
            return self._ask("eq", other) is True
        return False

    def __ne__(self, other):
        return not self.__eq__(other)

    __hash__ = object.__hash__


def verdict(fd, status, exception=None, **extra):
    line = json.dumps({"status": status, "exception": exception, **extra}) + "\n"
    os.write(fd, line.encode("utf-8", "replace"))
    os._exit(0)


def main():
    verdict_fd = int(sys.argv[1])
    payload = json.loads(sys.stdin.buffer.read().decode("utf-8"))
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    lim = payload["limits"]
    try:
        prog = compile(payload["program"], "<program>", "exec")
    except (SyntaxError, ValueError, MemoryError, RecursionError) as e:
        verdict(verdict_fd, "syntax_error", "%s: %s" % (type(e).__name__, e))
    try:
        tests = compile(payload["tests"] or "", "<tests>", "exec")
    except (SyntaxError, ValueError, MemoryError, RecursionError) as e:
        verdict(verdict_fd, "error", "the tests do not compile: %s: %s" % (type(e).__name__, e))
    try:  # not dumpable: no other process of this uid may read or write the judge's memory
        ctypes, libc = _libc()
        libc.prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE
    except OSError:
        pass
    req_r, req_w = os.pipe()
    rep_r, rep_w = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        try:
            for fd in (verdict_fd, req_w, rep_r):
                os.close(fd)
            candidate(req_r, rep_w, prog, lim)
        finally:
            os._exit(70)
    os.close(req_r)
    os.close(rep_w)
    set_limits(lim)
    judge = Judge(req_w, rep_r)
    iso = {}

    def ended(phase):
        """Why the candidate stopped talking: its wait status, mapped onto a verdict."""
        try:
            _, st = os.waitpid(pid, 0)
        except ChildProcessError:
            st = 0
        if os.WIFSIGNALED(st):
            sig = os.WTERMSIG(st)
            if sig in (24, 9):  # SIGXCPU, SIGKILL: the CPU-time limit
                verdict(verdict_fd, "timeout", "killed by signal %d (CPU-time limit)" % sig, isolation=iso)
            if sig == 25:  # SIGXFSZ
                verdict(verdict_fd, "output_limit", "file-size limit exceeded", isolation=iso)
            verdict(verdict_fd, "error", "the program was killed by signal %d" % sig, isolation=iso)
        verdict(verdict_fd, "error", "the program exited (code %d) before %s" % (os.WEXITSTATUS(st), phase),
                isolation=iso)

    def exception_verdict(e, phase):
        etype, msg = e.get("type", "Exception"), e.get("message", "")
        text = "%s: %s" % (etype, msg) if msg else etype
        if etype == "MemoryError":
            verdict(verdict_fd, "memory", text, isolation=iso)
        if e.get("errno") == 27:  # EFBIG: RLIMIT_FSIZE
            verdict(verdict_fd, "output_limit", text, isolation=iso)
        if etype == "SystemExit":
            verdict(verdict_fd, "error", "the program exited before the tests finished (%s)" % text, isolation=iso)
        if etype == "AssertionError" and phase == "tests":
            verdict(verdict_fd, "failed", text, isolation=iso)
        verdict(verdict_fd, "error", text, isolation=iso)

    try:
        ready = recv(rep_r)
        if not isinstance(ready, dict) or not isinstance(ready.get("ready"), dict):
            ended("it started") if ready is None else verdict(verdict_fd, "error", "protocol error")
        iso = {k: ready["ready"][k] for k in ("rlimits", "seccomp", "seccomp_error") if k in ready["ready"]}
        first = recv(rep_r)
    except (NotData, ValueError, RecursionError, OSError) as e:
        verdict(verdict_fd, "error", "protocol error from the program's process: %s" % e, isolation=iso)
    if first is None:
        ended("the tests ran")
    if not isinstance(first, dict) or not isinstance(first.get("ns", first.get("exc")), dict):
        verdict(verdict_fd, "error", "protocol error from the program's process", isolation=iso)
    if "exc" in first:
        exception_verdict(first["exc"], "program")
    env = {"__name__": "__main__", "__builtins__": builtins}
    try:
        for k, v in first["ns"].items():
            if k not in env and not hasattr(builtins, k):
                env[k] = decode(v, judge.handle)
    except (NotData, ValueError, TypeError, RecursionError, OverflowError, decimal.InvalidOperation) as e:
        verdict(verdict_fd, "error", "the program's names are not readable: %s" % e, isolation=iso)
    try:
        exec(tests, env)
    except CandidateGone:
        ended("the tests finished")
    except BaseException as e:  # noqa: B036
        exception_verdict(describe(e), "tests")
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:
        pass
    verdict(verdict_fd, "passed", None, isolation=iso)


if __name__ == "__main__":
    main()
