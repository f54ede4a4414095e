"""Sandbox: ordinary outcomes, how the judge sees the program's names, and escape attempts that must
come back as a failed sample (never passed, never an exception in the evaluation run, no effect
outside). The attacks of issue 13 are in test_sandbox_attacks.py."""
import os
import socket
import uuid
import threading
import time

import pytest

from alignlab.eval.sandbox import STATUSES, SandboxLimits, SandboxResult, run_many, run_program

FAST = SandboxLimits(timeout_s=3.0, memory_mb=512, max_output_bytes=16 * 1024, file_size_mb=4)
SHORT = SandboxLimits(timeout_s=1.0, cpu_s=1, memory_mb=512)


def check(res: SandboxResult, status: str | None = None) -> None:
    assert isinstance(res, SandboxResult)
    assert res.status in STATUSES
    assert res.passed is (res.status == "passed")
    if status is not None:
        assert res.status == status, (res.status, res.exception, res.stderr_tail)


# ---------------------------------------------------------------------------- ordinary outcomes


def test_passing_program():
    res = run_program("def f(x):\n    return 2 * x\n", "assert f(2) == 4", limits=FAST)
    check(res, "passed")
    assert res.returncode == 0 and res.elapsed_s < 3


def test_failing_test_is_failed():
    res = run_program("def f(x):\n    return 3 * x\n", "assert f(2) == 4, 'wrong'", limits=FAST)
    check(res, "failed")
    assert "AssertionError" in res.exception and "wrong" in res.exception


def test_syntax_error():
    check(run_program("def f(:\n  pass", "assert True", limits=FAST), "syntax_error")


def test_runtime_error():
    res = run_program("x = 1 / 0", "", limits=FAST)
    check(res, "error")
    assert "ZeroDivisionError" in res.exception


def test_stdout_captured_and_unicode():
    res = run_program("s = 'héllo 世界 🙂'\nprint(s)", "assert len(s) == 10", limits=FAST)
    check(res, "passed")
    assert "héllo 世界 🙂" in res.stdout_tail


def test_empty_program_and_tests():
    check(run_program("", "", limits=FAST), "passed")


def test_tests_that_do_not_compile_are_an_error():
    res = run_program("x = 1", "assert x ==", limits=FAST)
    check(res, "error")
    assert "tests do not compile" in res.exception


def test_can_write_inside_its_own_folder():
    name = f"out-{uuid.uuid4().hex}.txt"
    prog = f"open({name!r}, 'w').write('ok')\nimport os\nprint(os.getcwd())"
    res = run_program(prog, f"assert open({name!r}).read() == 'ok'", limits=FAST)
    check(res, "passed")
    assert res.stdout_tail.strip() == "/tmp"  # a private tmpfs, not the host's /tmp
    assert not os.path.exists(os.path.join("/tmp", name))


def test_stdlib_usable():
    prog = ("import collections, json, re, logging, typing, sqlite3, decimal, zlib, hashlib, ctypes\n"
            "P = collections.namedtuple('P', 'a b')\nT = typing.TypeVar('T')\nlogging.warning('hi')\n"
            "db = sqlite3.connect(':memory:')\nv = db.execute('select 4 + 6').fetchone()[0]\n"
            "h = hashlib.sha256(zlib.compress(b'x')).hexdigest()[:4]")
    res = run_program(prog, "assert P(1, 2).b == 2 and v == 10 and len(h) == 4", limits=FAST)
    check(res, "passed")
    assert "hi" in res.stderr_tail


def test_environment_is_scrubbed(monkeypatch):
    monkeypatch.setenv("ALIGNLAB_TEST_SECRET", "s3cret-token")
    res = run_program("import os\nprint(sorted(os.environ))\nprint(os.environ.get('ALIGNLAB_TEST_SECRET'))",
                      "", limits=FAST)
    check(res, "passed")
    assert "s3cret-token" not in res.stdout_tail


def test_isolation_is_reported():
    res = run_program("pass", "", limits=FAST)
    assert res.isolation["sandbox"] == "bwrap" and res.isolation["seccomp"] is True
    assert {"user", "pid", "net", "mount"} <= set(res.isolation["namespaces"])
    assert "RLIMIT_CPU" in res.isolation["rlimits"] and "RLIMIT_AS" in res.isolation["rlimits"]


def test_unprivileged_identity_and_read_only_system():
    prog = ("import os\nprint(os.getuid() >= 10000, os.getgid() >= 10000, "
            "[os.access(p, os.W_OK) for p in ('/usr/lib', '/', '/dev', '/tmp')])")
    res = run_program(prog, "", limits=FAST)
    check(res, "passed")
    assert res.stdout_tail.split("\n")[0] == "True True [False, False, False, True]", res.stdout_tail


def test_run_many_keeps_order():
    jobs = [(f"x = {i}", f"assert x == {i}") for i in range(4)] + [("x = 0", "assert x == 1")]
    res = run_many(jobs, limits=FAST, workers=2)
    assert [r.status for r in res] == ["passed"] * 4 + ["failed"]


def test_never_raises_on_bad_input_or_broken_interpreter(tmp_path):
    check(run_program(None, "", limits=FAST), "error")  # type: ignore[arg-type]
    res = run_program("pass", "", limits=FAST, python=str(tmp_path / "no-such-python"))
    check(res, "error")
    assert "sandbox" in res.exception


# ---------------------------------------------------------------------------- escape attempts


def test_infinite_loop_times_out():
    t0 = time.monotonic()
    res = run_program("while True:\n    pass", "", limits=SHORT)
    check(res, "timeout")
    assert time.monotonic() - t0 < 6


def test_sleeping_forever_times_out_on_wall_clock():
    res = run_program("import time\ntime.sleep(60)", "", limits=SHORT)
    check(res, "timeout")
    assert res.elapsed_s < 5


def test_ignoring_sigxcpu_does_not_help():
    prog = "import signal\nsignal.signal(signal.SIGXCPU, signal.SIG_IGN)\nwhile True:\n    pass"
    check(run_program(prog, "", limits=SHORT), "timeout")


def test_allocating_10_gb_is_memory():
    check(run_program("x = bytearray(10 * 1024 ** 3)", "", limits=FAST), "memory")
    check(run_program("x = [0] * (10 ** 10)", "", limits=FAST), "memory")


def test_huge_stdout_is_output_limit():
    res = run_program("while True:\n    print('x' * 1000)", "", limits=FAST)
    check(res, "output_limit")
    assert len(res.stdout_tail) <= 2000


def test_huge_stderr_is_output_limit():
    check(run_program("import sys\nwhile True:\n    sys.stderr.write('y' * 1000)", "", limits=FAST), "output_limit")


def test_huge_file_is_output_limit():
    check(run_program("open('big', 'wb').write(b'x' * (8 * 1024 * 1024))", "", limits=FAST), "output_limit")


def test_socket_connect_to_localhost_fails():
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.2)
    port = server.getsockname()[1]
    accepted = []

    def accept():
        try:
            conn, _ = server.accept()
            accepted.append(conn)
        except OSError:
            pass

    try:
        prog = (f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=1)\n"
                "s.sendall(b'exfiltrated')")
        res = run_program(prog, "", limits=FAST)
        check(res, "error")  # a fresh network namespace: the host's loopback is not there
        # The raw C module reaches nothing either.
        raw = (f"import sys\nsys.modules.pop('_socket', None)\nimport _socket\n"
               f"s = _socket.socket()\ns.connect(('127.0.0.1', {port}))")
        check(run_program(raw, "", limits=FAST), "error")
        accept()
        assert accepted == []
    finally:
        for c in accepted:
            c.close()
        server.close()


def test_writing_outside_its_folder_fails(tmp_path):
    target = tmp_path / "escaped.txt"
    for prog in [
        f"open({str(target)!r}, 'w').write('x')",
        f"import os\nfd = os.open({str(target)!r}, os.O_WRONLY | os.O_CREAT)\nos.write(fd, b'x')",
        f"import os\nd = os.open({str(tmp_path)!r}, os.O_RDONLY)\n"
        f"fd = os.open('escaped.txt', os.O_WRONLY | os.O_CREAT, dir_fd=d)",
        f"import os\nos.symlink({str(target)!r}, 'link')\nopen('link', 'w').write('x')",
        f"import pathlib\npathlib.Path({str(target)!r}).write_text('x')",
        f"import shutil\nopen('a', 'w').write('x')\nshutil.copyfile('a', {str(target)!r})",
        f"import os\nos.chdir({str(tmp_path)!r})\nopen('escaped.txt', 'w').write('x')",
    ]:
        res = run_program(prog, "", limits=FAST)
        check(res)
        assert not res.passed, prog
        assert not target.exists(), prog


def test_sqlite_outside_fails(tmp_path):
    target = tmp_path / "escaped.db"
    check(run_program(f"import sqlite3\nsqlite3.connect({str(target)!r}).execute('create table t(x)')", "",
                      limits=FAST), "error")
    assert not target.exists()


def test_deleting_files_outside_fails(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "inner.txt").write_text("keep me too")
    for prog in [
        f"import os\nos.remove({str(victim)!r})",
        f"import os\nos.rename({str(victim)!r}, 'stolen.txt')",
        f"import shutil\nshutil.rmtree({str(folder)!r})",
        f"import os\nos.chmod({str(victim)!r}, 0o000)",
        f"import pathlib\npathlib.Path({str(victim)!r}).unlink()",
    ]:
        res = run_program(prog, "", limits=FAST)
        check(res, "error")
    assert victim.read_text() == "keep me"
    assert (folder / "inner.txt").read_text() == "keep me too"
    assert os.stat(victim).st_mode & 0o777 != 0


def test_process_creation_fails(tmp_path):
    marker = tmp_path / "spawned"
    res = run_program(f"import os\nrc = os.system('touch {marker}')", "assert rc == 0", limits=FAST)
    check(res, "failed")  # os.system reports the refused fork as -1
    for prog in [
        f"import subprocess\nsubprocess.run(['touch', {str(marker)!r}])",
        f"import os\nos.execv('/usr/bin/touch', ['touch', {str(marker)!r}])",
        f"import os\nos.posix_spawn('/usr/bin/touch', ['touch', {str(marker)!r}], {{}})",
        f"import os\nos.popen('touch {marker}').read()",
        "import os\nfor _ in range(20):\n    os.fork()",
        "import multiprocessing\np = multiprocessing.Process(target=print)\np.start()",
        "import pty\npty.fork()",
    ]:
        res = run_program(prog, "", limits=FAST)
        check(res, "error")
    assert not marker.exists()


def test_thread_bomb_is_bounded():
    prog = ("import threading, time\nts = []\nfor _ in range(10000):\n"
            "    t = threading.Thread(target=time.sleep, args=(30,))\n    t.start()\n    ts.append(t)")
    res = run_program(prog, "", limits=FAST)
    check(res)
    assert not res.passed and res.elapsed_s < 6


def test_killing_the_parent_fails():
    res = run_program("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)", "", limits=FAST)
    check(res, "error")
    res = run_program("import os, signal\nos.killpg(0, signal.SIGKILL)", "", limits=FAST)
    check(res, "error")


def test_raising_limits_fails():
    check(run_program("import resource\nresource.setrlimit(resource.RLIMIT_AS, (-1, -1))", "", limits=FAST), "error")
    check(run_program("import resource\nresource.setrlimit(resource.RLIMIT_CPU, (-1, -1))", "", limits=FAST), "error")


@pytest.mark.parametrize("prog", [
    "import os\nos._exit(0)",                  # skip the tests with a clean exit code
    "import sys\nsys.exit(0)",
    "raise SystemExit(0)",
    "exit()",
    "import builtins\nbuiltins.exec = lambda *a, **k: None",  # neuter the harness's exec
    "import os\nos.close(1)\nos.close(2)",
])
def test_skipping_the_tests_is_not_a_pass(prog):
    res = run_program(prog, "assert False, 'tests ran'", limits=FAST)
    check(res)
    assert not res.passed


@pytest.mark.parametrize("prog", [
    "import sys\nf = sys._getframe(1)\nprint(f.f_locals)",
    "try:\n    1 / 0\nexcept Exception as e:\n    f = e.__traceback__.tb_frame.f_back",
    "import sys\nsys.settrace(lambda *a: None)",
    "import inspect\nprint(inspect.stack())",
    "import gc\nprint(len(gc.get_objects()))",
])
def test_frames_and_gc_reach_nothing_that_passes(prog):
    # Frames and gc are allowed now: the judge is another process and there is no secret to find.
    res = run_program(prog, "assert False", limits=FAST)
    check(res)
    assert not res.passed


def test_forged_completion_report_is_not_a_pass():
    # Writing a fake "passed" line to every open descriptor cannot forge the random token.
    prog = ("import os, json\nfor fd in range(3, 64):\n    try:\n"
            "        os.write(fd, (json.dumps({'phase': 'done', 'outcome': 'passed', 'token': 'x'}) + '\\n').encode())\n"
            "    except OSError:\n        pass\nos._exit(0)")
    res = run_program(prog, "assert False", limits=FAST)
    check(res)
    assert not res.passed


def test_concurrent_runs_are_isolated_from_each_other():
    # Each run has its own folder: a file written by one is invisible to the others.
    jobs = [("open('mine', 'w').write('%d')" % i, "assert open('mine').read() == '%d'" % i) for i in range(6)]
    out = []
    threads = [threading.Thread(target=lambda j=j: out.append(run_program(*j, limits=FAST))) for j in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.status for r in out] == ["passed"] * 6


def test_program_runs_as_main_and_cannot_shadow_builtins_in_the_tests():
    # Classes defined by the program live in a real __main__ (pickle finds them); names it defines
    # that are builtins (isinstance, Exception) do not replace the builtins the tests use.
    prog = ("import pickle, dataclasses\n@dataclasses.dataclass\nclass P:\n    x: int\n"
            "ok = pickle.loads(pickle.dumps(P(1))) == P(1)\n"
            "def isinstance(*a):\n    return True\nException = None\n")
    tests = "assert ok is True\nassert P(1) == P(1) and P(1) != P(2) and P(3).x == 3\nassert not isinstance(1, str)"
    check(run_program(prog, tests, limits=FAST), "passed")


# ---------------------------------------------------------------------------- the judge's view of the program


def test_values_cross_as_plain_data():
    prog = ("import collections, datetime, decimal, fractions, math\n"
            "v = [1, 2.5, -0.0, float('inf'), 1j, b'x', bytearray(b'y'), (1, (2,)), {3}, frozenset([4]),"
            " {'k': [None, True]}, {(1, 2): 'tuple key'}, collections.Counter('aab'), collections.deque([1], 3),"
            " collections.OrderedDict(a=1), datetime.datetime(2024, 3, 15, 1, 2, 3), datetime.date(2024, 1, 2),"
            " datetime.timedelta(days=2), decimal.Decimal('1.10'), fractions.Fraction(1, 3), range(3), 10 ** 5000,"
            " collections.namedtuple('P', 'a b')(1, 2)]\nnan = float('nan')")
    tests = ("import collections, datetime, decimal, fractions, math\n"
             "assert v == [1, 2.5, -0.0, float('inf'), 1j, b'x', bytearray(b'y'), (1, (2,)), {3}, frozenset([4]),"
             " {'k': [None, True]}, {(1, 2): 'tuple key'}, collections.Counter('aab'), collections.deque([1], 3),"
             " collections.OrderedDict(a=1), datetime.datetime(2024, 3, 15, 1, 2, 3), datetime.date(2024, 1, 2),"
             " datetime.timedelta(days=2), decimal.Decimal('1.10'), fractions.Fraction(1, 3), range(3), 10 ** 5000,"
             " (1, 2)]\nassert type(v[12]) is collections.Counter and v[12]['z'] == 0\nassert math.isnan(nan)")
    check(run_program(prog, tests, limits=FAST), "passed")


def test_functions_objects_and_exceptions_through_the_judge():
    prog = """
def add(a, b=1):
    return a + b
def sort_in_place(xs):
    xs.sort()
def boom(x):
    raise ValueError('bad %s' % x)
class Box:
    def __init__(self, n):
        self.n = n
        self.items = list(range(n))
    def double(self):
        return Box(2 * self.n)
    def __len__(self):
        return self.n
    def __iter__(self):
        return iter(self.items)
def gen(n):
    yield from range(n)
"""
    tests = """
assert add(2) == 3 and add(2, b=5) == 7 and add('a', 'b') == 'ab'
xs = [3, 1, 2]
sort_in_place(xs)
assert xs == [1, 2, 3]
try:
    boom(1)
except ValueError as e:
    assert 'bad 1' in str(e)
else:
    raise AssertionError('no exception')
b = Box(3)
assert len(b) == 3 and list(b) == [0, 1, 2] and b.n == 3 and b.double().n == 6 and 1 in b
assert list(gen(4)) == [0, 1, 2, 3] and sum(gen(4)) == 6
assert b != 3 and not (b == [0, 1, 2])
"""
    check(run_program(prog, tests, limits=FAST), "passed")
    check(run_program(prog, "assert add(2) == 4", limits=FAST), "failed")
    check(run_program("def f():\n    return bytearray(2 * 1024 ** 3)", "f()", limits=FAST), "memory")
