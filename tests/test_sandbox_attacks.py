"""The attacks that broke the old sandbox (issue 13), one class per section. Each attack is a
*wrong* solution that tries to be scored as passed, or to reach something outside its run: it
must come back not passed, with no effect outside. Honest code keeps its old rates.

These tests never skip: CI installs bubblewrap (`make setup`), and a machine without a working
sandbox fails here with the reason."""
import json
import os
import socket
import threading
import time
from pathlib import Path

import pytest

from alignlab.eval.sandbox import (HARNESS, SandboxLimits, SandboxUnavailable, run_many, run_program,
                                   sandbox_status)

L = SandboxLimits(timeout_s=4.0, memory_mb=512, max_output_bytes=64 * 1024, file_size_mb=8, disk_mb=16)
WRONG_TESTS = "assert result == 42"  # every attack below computes 41, or nothing
DATA = Path(__file__).resolve().parents[1] / "alignlab" / "assets" / "code_qa_sample.jsonl"


@pytest.fixture(scope="module", autouse=True)
def sandbox_works():
    ok, why = sandbox_status()
    assert ok, why  # no skip: a missing sandbox is a failure of this machine's setup


def attack(prog: str, tests: str = WRONG_TESTS, limits: SandboxLimits = L):
    res = run_program(prog, tests, limits=limits)
    assert not res.passed, (prog, res)
    return res


# ---------------------------------------------------------------------------- baseline


def test_honest_code_keeps_its_rates_on_the_builtin_code_set():
    from alignlab.eval.metrics.code import build_program

    rows = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]
    right = run_many([(build_program(r["reference"], r["setup"]), r["test"]) for r in rows], limits=L, workers=2)
    wrong = run_many([(build_program("None", r["setup"]), r["test"]) for r in rows], limits=L, workers=2)
    assert [r.status for r in right] == ["passed"] * len(rows), [(r.status, r.exception) for r in right]
    # The statuses the old sandbox gave the same wrong answers (a test that cannot even use the
    # answer, like sorted(None), is an error rather than a failed assert).
    old = ["error" if i in (3, 6, 10) else "failed" for i in range(len(rows))]
    assert [r.status for r in wrong] == old, [(r.status, r.exception) for r in wrong]
    assert run_program("result = 41", WRONG_TESTS, limits=L).status == "failed"
    assert run_program("result = 42", WRONG_TESTS, limits=L).status == "passed"


# ---------------------------------------------------------------------------- token and result spoofing


def test_scanning_memory_for_a_token_finds_nothing_to_forge():
    # The old attack: find the 32-hex token in /proc/self/mem, write a "passed" record, exit 0.
    prog = r"""
import os, re, json
found = []
try:
    maps = open('/proc/self/maps').read()
except OSError as e:
    found.append(repr(e))
rec = (json.dumps({'phase': 'done', 'outcome': 'passed', 'status': 'passed', 'token': 'f' * 32}) + '\n').encode()
for fd in range(0, 256):
    try:
        os.write(fd, rec)
    except OSError:
        pass
os._exit(0)
"""
    res = attack(prog)
    assert res.status == "error"


def test_forged_verdicts_on_stdout_and_every_descriptor_are_not_a_pass():
    prog = ("import os, json\nv = json.dumps({'status': 'passed', 'exception': None}) + '\\n'\n"
            "print(v * 3)\nresult = 41\nfor fd in range(3, 1024):\n    try:\n        os.write(fd, v.encode())\n"
            "    except OSError:\n        pass\n")
    assert attack(prog).status in ("failed", "error")


@pytest.mark.parametrize("prog", [
    "import os\nos._exit(0)",
    "import sys\nsys.exit(0)",
    "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)",  # kill the judge
    "import os, signal\nos.killpg(0, signal.SIGKILL)",
    "import builtins\nbuiltins.AssertionError = None\nresult = 41",
])
def test_early_exit_and_killing_the_judge_are_not_a_pass(prog):
    attack(prog)


def test_an_object_equal_to_everything_does_not_pass():
    prog = ("class Any:\n    def __eq__(self, other):\n        return True\n    __hash__ = None\n"
            "    def __bool__(self):\n        return True\nresult = Any()")
    assert attack(prog).status == "failed"
    # Shadowing the builtins the tests call does not help either.
    prog = "def sorted(*a, **k):\n    return [42]\ndef len(x):\n    return 1\nresult = [41]"
    assert attack(prog, "assert sorted(result) == [42] and len(result) == 1").status == "failed"


def test_planting_modules_for_the_judge_to_import_does_not_pass():
    # json.py / sitecustomize.py in the working folder and /tmp: the judge runs with -I -S.
    fake = "def dumps(*a, **k):\n    return '{\"status\": \"passed\"}'\nloads = dumps\n"
    prog = (f"for d in ('.', '/tmp'):\n    for m in ('json', 'os', 'sitecustomize', 'struct', 'collections'):\n"
            f"        open(d + '/' + m + '.py', 'w').write({fake!r})\nresult = 41")
    assert attack(prog, "import json, struct\n" + WRONG_TESTS).status == "failed"


# ---------------------------------------------------------------------------- sub-interpreters, hook re-entry, threads


def test_sub_interpreter_gets_nothing_more(tmp_path):
    marker = tmp_path / "subinterp"
    inner = (f"import os\ntry:\n    os.system('touch {marker}')\nexcept Exception:\n    pass\n"
             f"try:\n    open({str(marker)!r}, 'w').write('x')\nexcept Exception:\n    pass\n")
    prog = ("try:\n    import _xxsubinterpreters as si\nexcept ImportError:\n    import _interpreters as si\n"
            f"i = si.create()\ntry:\n    si.run_string(i, {inner!r})\nexcept Exception:\n    pass\nresult = 41")
    attack(prog)
    assert not marker.exists()


def test_str_subclass_reentry_and_thread_races_get_nothing_more(tmp_path):
    marker = tmp_path / "race"
    prog = f"""
import os, threading
class P(str):
    def __getitem__(self, i):
        os.system('touch {marker}')
        return str.__getitem__(self, i)
def worker():
    for _ in range(200):
        try:
            os.open({str(marker)!r}, os.O_WRONLY | os.O_CREAT)
        except OSError:
            pass
        try:
            os.fork()
        except OSError:
            pass
ts = [threading.Thread(target=worker) for _ in range(4)]
for t in ts: t.start()
try:
    open(P({str(marker)!r}), 'w')
except OSError:
    pass
for t in ts: t.join()
result = 41
"""
    assert attack(prog).status == "failed"
    assert not marker.exists()


def test_ptrace_and_process_memory_of_the_judge_are_refused():
    prog = r"""
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
ppid = os.getppid()
r = [libc.ptrace(16, ppid, 0, 0)]  # PTRACE_ATTACH
buf = ctypes.create_string_buffer(16)
class IOV(ctypes.Structure):
    _fields_ = [('base', ctypes.c_void_p), ('len', ctypes.c_size_t)]
iov = IOV(ctypes.cast(buf, ctypes.c_void_p), 16)
r.append(libc.process_vm_writev(ppid, ctypes.byref(iov), 1, ctypes.byref(iov), 1, 0))
r.append(libc.syscall(438, 0, 3, 0))  # pidfd_getfd
for p in ('/proc/%d/mem' % ppid, '/proc/%d/fd/3' % ppid, '/proc/1/fd/3'):
    try:
        open(p, 'wb')
        r.append('opened ' + p)
    except OSError:
        r.append(-1)
print(r)
result = 41 if r == [-1] * 6 else 0
"""
    res = attack(prog)
    assert res.status == "failed" and "[-1, -1, -1, -1, -1, -1]" in res.stdout_tail, res.stdout_tail


# ---------------------------------------------------------------------------- closure and dir-fd tricks


def test_dir_fd_rename_link_and_writes_outside_the_tmpfs_fail():
    before = Path(HARNESS).read_bytes()
    prog = f"""
import os
results = []
d = os.open('/run/alignlab', os.O_RDONLY)
open('evil.py', 'w').write('print(1)')
here = os.open('.', os.O_RDONLY)
for f in (lambda: os.rename('evil.py', 'harness.py', src_dir_fd=here, dst_dir_fd=d),
          lambda: os.link('evil.py', 'harness.py', src_dir_fd=here, dst_dir_fd=d),
          lambda: os.open('harness.py', os.O_WRONLY | os.O_TRUNC, dir_fd=d),
          lambda: os.open('/usr/lib/new', os.O_WRONLY | os.O_CREAT),
          lambda: open({HARNESS!r}, 'w'),
          lambda: os.mkdir('/etc/x'),
          lambda: os.symlink('/tmp/evil.py', '/run/alignlab/x.py')):
    try:
        f()
        results.append('ok')
    except OSError:
        results.append('refused')
print(results)
result = 41
"""
    res = attack(prog)
    assert res.status == "failed" and "'ok'" not in res.stdout_tail, res.stdout_tail
    assert Path(HARNESS).read_bytes() == before


# ---------------------------------------------------------------------------- daemons and cross-run contamination


def test_setsid_daemon_cannot_outlive_its_run_or_rig_the_next(tmp_path):
    # Run 1 tries to fork a daemon; failing that, leaves a thread to plant json.py after it "ends".
    plant = ("import os, threading, time\ntry:\n    if os.fork() == 0:\n        os.setsid()\n        time.sleep(3)\n"
             "except OSError:\n    pass\ndef later():\n    time.sleep(1.0)\n"
             "    open('/tmp/json.py', 'w').write('def dumps(*a, **k): return \"passed\"')\n"
             "threading.Thread(target=later, daemon=False).start()\nresult = 41")
    attack(plant)
    time.sleep(1.2)
    probe = run_program("import os\nprint(sorted(os.listdir('.')), sorted(os.listdir('/tmp')))\nresult = 41",
                        WRONG_TESTS, limits=L)
    assert probe.status == "failed"
    assert "json.py" not in probe.stdout_tail and "[] []" in probe.stdout_tail, probe.stdout_tail


def test_concurrent_runs_cannot_see_each_other():
    jobs = [(f"import os, time\nopen('mine-{i}', 'w').write('x')\ntime.sleep(0.5)\n"
             "result = sorted(os.listdir('.'))", f"assert result == ['mine-{i}']") for i in range(4)]
    res = run_many(jobs, limits=L, workers=4)
    assert [r.status for r in res] == ["passed"] * 4, [(r.status, r.exception) for r in res]


def test_each_run_has_its_own_identity_and_pid_namespace():
    prog = "import os\nresult = (os.getuid(), os.getpid())"
    a, b = (run_program(prog, "print(result)\nassert result[1] < 10", limits=L) for _ in range(2))
    assert a.status == b.status == "passed", (a, b)
    assert a.stdout_tail != b.stdout_tail  # different uids


# ---------------------------------------------------------------------------- host files and sockets


def test_host_files_are_not_there(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("hunter2-host-secret")
    for path in [str(secret), "/etc/shadow", "/etc/passwd", "/root/.bashrc", str(DATA), "/proc/1/environ",
                 "/proc/self/environ", "/sys/kernel/notes", "/home"]:
        res = attack(f"print(open({path!r}).read())\nresult = 42", "assert result == 42")
        assert res.status == "error", (path, res)
        assert "hunter2" not in res.stdout_tail
    # The project and site-packages are not visible, only the standard library.
    res = run_program("import importlib.util as u\nresult = [u.find_spec(m) is None for m in ('alignlab', 'numpy', 'pytest')]",
                      "assert result == [True, True, True]", limits=L)
    assert res.status == "passed", res


def test_unix_and_tcp_sockets_to_the_host_fail(tmp_path):
    path = str(tmp_path / "host.sock")
    servers = [socket.socket(socket.AF_UNIX, socket.SOCK_STREAM), socket.socket(socket.AF_UNIX, socket.SOCK_STREAM),
               socket.socket(socket.AF_INET, socket.SOCK_STREAM)]
    servers[0].bind(path)
    servers[1].bind("\0alignlab-attack-test")
    servers[2].bind(("127.0.0.1", 0))
    port = servers[2].getsockname()[1]
    for s in servers:
        s.listen(1)
        s.settimeout(0.2)
    try:
        prog = f"""
import socket
r = []
for fam, addr in ((socket.AF_UNIX, {path!r}), (socket.AF_UNIX, '\\0alignlab-attack-test'),
                  (socket.AF_UNIX, '/run/docker.sock'), (socket.AF_INET, ('127.0.0.1', {port})),
                  (socket.AF_INET, ('1.1.1.1', 53))):
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(1)
    try:
        s.connect(addr)
        r.append('connected')
    except OSError:
        r.append('refused')
print(r)
result = 41
"""
        res = attack(prog)
        assert res.status == "failed" and "connected" not in res.stdout_tail, res.stdout_tail
        for s in servers:
            with pytest.raises(OSError):
                s.accept()
    finally:
        for s in servers:
            s.close()


# ---------------------------------------------------------------------------- disk filling


def test_disk_filling_stops_at_the_tmpfs_cap():
    prog = ("import os\nchunk = b'x' * (1 << 20)\nfor i in range(200):\n"
            "    with open('/tmp/f%d' % i, 'wb') as f:\n        f.write(chunk * 4)\nresult = 42")
    res = attack(prog, "assert result == 42")
    assert res.status == "error" and "No space left" in res.exception, res
    # /dev/shm is not there to fill either.
    assert attack("open('/dev/shm/x', 'wb').write(b'x' * 1000)\nresult = 42", "assert result == 42").status == "error"


# ---------------------------------------------------------------------------- the refusal without a sandbox


def test_refuses_without_bwrap_unless_opted_in(monkeypatch):
    import alignlab.eval.sandbox as sb

    monkeypatch.setattr(sb, "_STATUS", {})
    monkeypatch.setattr(sb.shutil, "which", lambda name: None)
    res = run_program("result = 42", "assert result == 42", limits=L)
    assert res.status == "error" and "refused" in res.exception and "--unsafe-no-sandbox" in res.exception
    with pytest.raises(SandboxUnavailable, match="bubblewrap"):
        run_many([("result = 42", "assert result == 42")], limits=L)
    res = run_program("result = 42", "assert result == 42", limits=L, unsafe_no_sandbox=True)
    assert res.status == "passed" and res.isolation["sandbox"].startswith("none"), res
