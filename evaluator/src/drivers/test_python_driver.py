"""Tests for the jsheets Python driver.

Run with either of
    /usr/bin/python3.11 /work/main/evaluator/src/drivers/test_python_driver.py
    cd /work/main && python3.11 -m unittest evaluator/src/drivers/test_python_driver.py

The interpreter under test is /usr/bin/python3.11 (override with
JSHEETS_TEST_PYTHON).  Each test starts it exactly as the runtime does,
``python3.11 -I -c BOOTSTRAP``, with the input JSON on fd 3 and the event
pipe on fd 4.
"""

import base64
import fcntl
import json
import re
import os
import runpy
import selectors
import subprocess
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
PYTHON = os.environ.get("JSHEETS_TEST_PYTHON", "/usr/bin/python3.11")
with open(os.path.join(HERE, "python_driver.py"), encoding="utf-8") as _f:
    DRIVER_SOURCE = _f.read()
BOOTSTRAP = runpy.run_path(os.path.join(HERE, "python_bootstrap.py"))["BOOTSTRAP"]


class Result:
    def __init__(self, events, raw_events, stdout, stderr, returncode, stdout_at):
        self.events = events            # parsed event objects, in order
        self.raw_events = raw_events    # the raw lines (bytes)
        self.stdout = stdout
        self.stderr = stderr
        self.returncode = returncode
        self.stdout_at = stdout_at      # stdout received before each event

    def of(self, cid, kind=None):
        return [e for e in self.events
                if e.get("id") == cid and (kind is None or e["event"] == kind)]

    def one(self, cid, kind):
        found = self.of(cid, kind)
        assert len(found) == 1, (cid, kind, self.events, self.stderr)
        return found[0]

    def kinds(self):
        return [(e["event"], e.get("id")) for e in self.events]


def _child_fds(input_fd, events_fd):
    # Runs in the child between fork and exec: put the pipe ends on 3 and 4.
    # (pass_fds keeps descriptor numbers, it cannot renumber them, so the
    # renumbering happens here; the originals are O_CLOEXEC and vanish at exec.)
    a = fcntl.fcntl(input_fd, fcntl.F_DUPFD, 10)
    b = fcntl.fcntl(events_fd, fcntl.F_DUPFD, 10)
    os.dup2(a, 3)
    os.dup2(b, 4)
    os.close(a)
    os.close(b)


def run_driver(components, stdin=b"", timeout=60, payload=None, after_ready=None,
               **options):
    """Run the driver on [(id, code), ...]; options go into the input JSON.

    `payload`, when given, is what fd 3 gets instead (components and options unused);
    `after_ready` is written to fd 3 once the driver said "ready", as the supervisor
    hands a waiting sandbox its request.
    """
    if payload is None:
        doc = {"driver": DRIVER_SOURCE,
               "components": [{"id": cid, "code": code} for cid, code in components]}
        doc.update(options)
        payload = json.dumps(doc).encode("utf-8")

    in_r, in_w = os.pipe()
    ev_r, ev_w = os.pipe()
    try:
        proc = subprocess.Popen(
            [PYTHON, "-I", "-c", BOOTSTRAP],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            close_fds=False,
            preexec_fn=lambda: _child_fds(in_r, ev_w),
            env={"PATH": "/usr/bin:/bin", "LC_ALL": "C", "PYTHONUNBUFFERED": "1"},
        )
    finally:
        os.close(in_r)
        os.close(ev_w)

    ready = threading.Event()

    def feed(fd_or_file, data):
        try:
            if fd_or_file == in_w and after_ready is not None:
                with open(in_w, "wb", buffering=0) as f:
                    f.write(data)
                    if ready.wait(timeout):
                        f.write(after_ready)
                return
            if isinstance(fd_or_file, int):
                with open(fd_or_file, "wb") as f:
                    f.write(data)
            else:
                with fd_or_file:
                    fd_or_file.write(data)
        except (BrokenPipeError, OSError):
            pass

    writers = [threading.Thread(target=feed, args=(in_w, payload), daemon=True),
               threading.Thread(target=feed, args=(proc.stdin, stdin), daemon=True)]
    for w in writers:
        w.start()

    out, err, ev = bytearray(), bytearray(), bytearray()
    sel = selectors.DefaultSelector()
    streams = {proc.stdout.fileno(): out, proc.stderr.fileno(): err, ev_r: ev}
    for fd in streams:
        os.set_blocking(fd, False)
        sel.register(fd, selectors.EVENT_READ)
    lines, stdout_at = [], []
    deadline = time.monotonic() + timeout

    def drain(fd):
        while True:
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                return True
            if not chunk:
                return False
            streams[fd].extend(chunk)

    open_fds = set(streams)
    try:
        while open_fds:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                proc.kill()
                raise AssertionError("driver timed out; stderr: %r" % bytes(err))
            for key, _ in sel.select(remaining):
                fd = key.fd
                alive = drain(fd)
                if fd == ev_r:
                    # The events just read first, then stdout/stderr, whose bytes go
                    # before those events: whatever was written to them before an
                    # event was (the driver's flushes, a forked child's writes) is in
                    # those pipes by the time the event was read. Draining them before
                    # reading the channel would not do: bytes and an event written in
                    # between would be taken in the wrong order.
                    for other in (proc.stdout.fileno(), proc.stderr.fileno()):
                        if other in open_fds and not drain(other):
                            sel.unregister(other)
                            open_fds.discard(other)
                    while b"\n" in ev:
                        line, _, rest = bytes(ev).partition(b"\n")
                        ev[:] = rest
                        parsed = json.loads(line.decode("utf-8"))
                        if parsed.get("event") == "output":
                            # Python-level output travels on the event channel.
                            target = out if parsed["stream"] == "stdout" else err
                            target.extend(base64.b64decode(parsed["data"]))
                            continue
                        if parsed.get("event") == "ready":
                            ready.set()
                        lines.append(line)
                        stdout_at.append(bytes(out))
                if not alive and fd in open_fds:
                    sel.unregister(fd)
                    open_fds.discard(fd)
    finally:
        sel.close()
        os.close(ev_r)
        proc.stdout.close()
        proc.stderr.close()
    returncode = proc.wait(timeout=timeout)
    for w in writers:
        w.join(timeout)
    assert not ev, "partial event line: %r" % bytes(ev)
    events = [json.loads(line.decode("utf-8")) for line in lines]
    return Result(events, lines, bytes(out), bytes(err), returncode, stdout_at)


class DriverTest(unittest.TestCase):
    maxDiff = None

    def assertDone(self, result):
        self.assertEqual(result.events[-1], {"event": "done"}, result.stderr)
        self.assertEqual(result.returncode, 0, result.stderr)

    # --- basics -------------------------------------------------------------

    def test_print_output(self):
        r = run_driver([("c1", "print('hello')\nprint('wörld', 42)")])
        self.assertEqual(r.stdout, "hello\nwörld 42\n".encode("utf-8"))
        self.assertEqual(r.kinds(), [("start", "c1"), ("end", "c1"), ("done", None)])
        self.assertTrue(r.one("c1", "end")["ok"])
        self.assertDone(r)

    def test_output_is_flushed_before_each_event(self):
        r = run_driver([("c1", "import sys\nsys.stdout.write('no newline')"),
                        ("c2", "print('x', end='')\n1 + 1")])
        end1 = r.events.index(r.one("c1", "end"))
        self.assertIn(b"no newline", r.stdout_at[end1])
        value2 = r.events.index(r.one("c2", "value"))
        self.assertEqual(r.stdout_at[value2], b"no newlinex")

    def test_trailing_expression_value(self):
        r = run_driver([
            ("c1", "x = 6\nx * 7"),
            ("c2", "None"),
            ("c3", "print('side effect')"),
            ("c4", "x = 1"),
            ("c5", "'text'"),
            ("c6", "_ + '!'"),  # builtins._ holds the last displayed value
        ])
        self.assertEqual(r.one("c1", "value")["repr"], "42")
        self.assertFalse(r.one("c1", "value")["truncated"])
        for cid in ("c2", "c3", "c4"):
            self.assertEqual(r.of(cid, "value"), [])
            self.assertTrue(r.one(cid, "end")["ok"])
        self.assertEqual(r.one("c5", "value")["repr"], "'text'")
        self.assertEqual(r.one("c6", "value")["repr"], "'text!'")
        # the value event sits between start and end
        self.assertEqual([k for k, i in r.kinds() if i == "c1"], ["start", "value", "end"])
        self.assertDone(r)

    def test_state_shared_across_components(self):
        r = run_driver([
            ("a", "import math\ncounter = 1\ndef bump(n):\n    global counter\n    counter += n"),
            ("b", "bump(41)"),
            ("c", "counter, math.floor(2.5)"),
        ])
        self.assertEqual(r.one("c", "value")["repr"], "(42, 2)")
        self.assertDone(r)

    def test_class_defined_in_one_component_used_in_next(self):
        r = run_driver([
            ("c1", "class Point:\n"
                   "    def __init__(self, x, y):\n"
                   "        self.x, self.y = x, y\n"
                   "    def __repr__(self):\n"
                   "        return f'Point({self.x}, {self.y})'\n"),
            ("c2", "p = Point(1, 2)\np"),
            ("c3", "import pickle\npickle.loads(pickle.dumps(p)).y, isinstance(p, Point), __name__"),
        ])
        self.assertEqual(r.one("c2", "value")["repr"], "Point(1, 2)")
        self.assertEqual(r.one("c3", "value")["repr"], "(2, True, '__main__')")
        self.assertDone(r)

    def test_stdin(self):
        r = run_driver([("c1", "first = input()\nfirst"),
                        ("c2", "import sys\nrest = sys.stdin.read()\nrest")],
                       stdin="héllo\nworld\nmore\n".encode("utf-8"))
        self.assertEqual(r.one("c1", "value")["repr"], "'héllo'")
        self.assertEqual(r.one("c2", "value")["repr"], repr("world\nmore\n"))
        self.assertDone(r)

    # --- syntax errors ----------------------------------------------------------

    def test_syntax_error_in_second_component(self):
        code = "x = 1\ny = 2 +* 3\nz = 3\n"
        r = run_driver([("c1", "a = 1\na"), ("c2", code), ("c3", "a + 1")])
        err = r.one("c2", "syntax_error")
        self.assertEqual(err["type"], "SyntaxError")
        self.assertEqual(err["message"], "invalid syntax")
        self.assertEqual((err["line"], err["column"], err["end_line"], err["end_column"]),
                         (2, 8, 2, 9))
        self.assertEqual((err["start"], err["end"]), (13, 14))
        self.assertEqual(code[err["start"]:err["end"]], "*")
        self.assertFalse(r.one("c2", "end")["ok"])
        self.assertEqual(r.of("c2", "value"), [])
        # nothing of c2 ran, the next component did
        self.assertEqual(r.one("c3", "value")["repr"], "2")
        self.assertDone(r)

    def test_syntax_error_kinds_and_offsets(self):
        comps = [
            ("colon", "total = 0\nfor i in range(3)\n    total += i\n"),
            ("indent", "a = 1\n  b = 2\n"),
            # compiler-stage error: Python reports UTF-8 byte columns here,
            # the driver converts them to characters.
            ("utf8", "é = 1; return é"),
            ("crlf", "x = 1\r\ny = (é +\r\n"),
            ("eof", "if True:"),
            ("nul", "x = 1\ny = '\0'\n"),
            ("fstring", "x = 1\ny = f'{x x}'\n"),
        ]
        r = run_driver(comps)
        code = dict(comps)

        def info(cid):
            e = r.one(cid, "syntax_error")
            self.assertLessEqual(0, e["start"])
            self.assertLessEqual(e["start"], e["end"])
            self.assertLessEqual(e["end"], len(code[cid]))
            return e

        e = info("colon")
        self.assertEqual((e["message"], e["line"], e["column"]), ("expected ':'", 2, 18))
        self.assertEqual(e["start"], code["colon"].index("\n    "))

        e = info("indent")
        self.assertEqual((e["type"], e["line"]), ("IndentationError", 2))

        e = info("utf8")
        self.assertEqual((e["message"], e["line"], e["column"], e["end_column"]),
                         ("'return' outside function", 1, 8, 16))
        self.assertEqual(code["utf8"][e["start"]:e["end"]], "return é")

        e = info("crlf")
        self.assertEqual((e["line"], e["column"]), (2, 5))
        self.assertEqual(code["crlf"][e["start"]], "(")

        e = info("eof")
        self.assertEqual(e["type"], "IndentationError")

        e = info("nul")
        self.assertEqual(code["nul"][e["start"]:e["end"]], "\0")
        self.assertEqual((e["line"], e["column"]), (2, 6))

        e = info("fstring")
        self.assertEqual(e["line"], 2)
        self.assertEqual(code["fstring"][e["start"]:e["end"]], "y = f'{x x}'")
        self.assertDone(r)

    # --- exceptions --------------------------------------------------------------

    def test_exception_traceback_has_only_user_frames(self):
        r = run_driver([
            ("c1", "def inner(d):\n    return 1 / d\n\ndef outer():\n    return inner(0)\n"),
            ("c2", "x = 1\nouter()\nprint('not reached')"),
        ])
        exc = r.one("c2", "exception")
        self.assertEqual(exc["type"], "ZeroDivisionError")
        self.assertEqual(exc["message"], "division by zero")
        self.assertEqual(exc["line"], 2)
        tb = exc["traceback"]
        self.assertTrue(tb.startswith("Traceback (most recent call last):\n"), tb)
        self.assertIn('File "<c2>", line 2, in <module>\n    outer()', tb)
        self.assertIn('File "<c1>", line 5, in outer\n    return inner(0)', tb)
        self.assertIn('File "<c1>", line 2, in inner\n    return 1 / d', tb)
        self.assertTrue(tb.endswith("ZeroDivisionError: division by zero\n"), tb)
        self.assertEqual(tb.count('File "'), 3, tb)
        self.assertNotIn("jsheets", tb)
        self.assertNotIn("python_driver", tb)
        self.assertNotIn(b"not reached", r.stdout)
        self.assertFalse(r.one("c2", "end")["ok"])
        self.assertDone(r)  # exit status 0 although a component raised

    def test_chained_exception_and_custom_type(self):
        r = run_driver([
            ("c1", "import json\n"
                   "class MyError(Exception):\n    pass\n"
                   "try:\n"
                   "    json.loads('{')\n"
                   "except ValueError as e:\n"
                   "    raise MyError('bad input') from e\n"),
            ("c2", "import json\njson.loads('[')"),
        ])
        exc = r.one("c1", "exception")
        self.assertEqual((exc["type"], exc["message"], exc["line"]), ("MyError", "bad input", 7))
        tb = exc["traceback"]
        self.assertIn("json.decoder.JSONDecodeError", tb)
        self.assertIn("direct cause", tb)
        self.assertIn('File "<c1>", line 5', tb)
        self.assertIn('File "<c1>", line 7', tb)
        self.assertNotIn("json/decoder.py", tb)   # library frames hidden by default
        self.assertNotIn("jsheets", tb)
        exc = r.one("c2", "exception")
        self.assertEqual(exc["type"], "json.decoder.JSONDecodeError")
        self.assertEqual(exc["line"], 2)

    def test_traceback_frames_all_keeps_library_frames(self):
        r = run_driver([("c1", "import json\njson.loads('[')")], traceback_frames="all")
        tb = r.one("c1", "exception")["traceback"]
        self.assertIn('File "<c1>", line 2', tb)
        self.assertIn("decoder.py", tb)
        self.assertNotIn("jsheets", tb)

    def test_later_components_run_after_exception(self):
        r = run_driver([
            ("c1", "value = 10"),
            ("c2", "undefined_name + 1"),
            ("c3", "raise KeyboardInterrupt"),
            ("c4", "value + 1"),
        ])
        exc = r.one("c2", "exception")
        self.assertEqual((exc["type"], exc["line"]), ("NameError", 1))
        self.assertEqual(r.one("c3", "exception")["type"], "KeyboardInterrupt")
        self.assertEqual(r.one("c4", "value")["repr"], "11")
        self.assertTrue(r.one("c4", "end")["ok"])
        self.assertDone(r)

    def test_repr_failure_is_an_exception(self):
        r = run_driver([
            ("c1", "class Bad:\n    def __repr__(self):\n        raise RuntimeError('nope')\n\nBad()"),
            ("c2", "10 ** 5000"),
            ("c3", "'still running'"),
        ])
        exc = r.one("c1", "exception")
        self.assertEqual((exc["type"], exc["message"], exc["line"]), ("RuntimeError", "nope", 3))
        self.assertEqual(r.of("c1", "value"), [])
        self.assertIn('File "<c1>", line 3, in __repr__', exc["traceback"])
        exc = r.one("c2", "exception")
        self.assertEqual((exc["type"], exc["line"]), ("ValueError", 1))
        self.assertEqual(r.one("c3", "value")["repr"], "'still running'")

    def test_system_exit_stops_evaluation(self):
        r = run_driver([
            ("c1", "print('before')"),
            ("c2", "import sys\nprint('exiting')\nsys.exit(3)\nprint('after')"),
            ("c3", "print('never')"),
        ])
        self.assertEqual(r.returncode, 3)
        self.assertEqual(r.stdout, b"before\nexiting\n")
        self.assertEqual(r.one("c2", "exit")["code"], 3)
        self.assertFalse(r.one("c2", "end")["ok"])
        self.assertEqual(r.of("c3"), [])
        self.assertNotIn({"event": "done"}, r.events)
        self.assertEqual(r.events[-1], {"event": "end", "id": "c2", "ok": False})

    def test_system_exit_variants(self):
        r = run_driver([("c1", "raise SystemExit")])
        self.assertEqual((r.one("c1", "exit")["code"], r.returncode), (0, 0))
        self.assertTrue(r.one("c1", "end")["ok"])
        r = run_driver([("c1", "import sys\nsys.exit('fatal problem')")])
        self.assertEqual((r.one("c1", "exit")["code"], r.returncode), (1, 1))
        self.assertIn(b"fatal problem", r.stderr)

    # --- values --------------------------------------------------------------------

    def test_large_repr_truncated(self):
        r = run_driver([
            ("list", "list(range(10 ** 6))"),
            ("str", "'x' * (10 ** 8)"),
            ("custom", "class Big:\n    def __repr__(self):\n        return 'B' * 50000\nBig()"),
            ("small", "[1, 2, 3]"),
        ], max_value_chars=1000)
        marker = "... [truncated]"
        v = r.one("list", "value")
        self.assertTrue(v["truncated"])
        self.assertEqual(v["repr"], repr(list(range(1000)))[:1000] + marker)
        v = r.one("str", "value")
        self.assertTrue(v["truncated"])
        self.assertEqual(v["repr"], ("'" + "x" * 999) + marker)
        v = r.one("custom", "value")
        self.assertEqual(v["repr"], "B" * 1000 + marker)
        v = r.one("small", "value")
        self.assertEqual((v["repr"], v["truncated"]), ("[1, 2, 3]", False))
        self.assertDone(r)

    def test_incremental_repr_matches_builtin_repr(self):
        setup = ("import collections\n"
                 "a = [1, 'two', b'three', 4.5, None, True, (1,), (), [], {}, set(), frozenset(),\n"
                 "     {3, 1}, frozenset({2}), {'k': [1, {'n': (2, 3)}]}, bytearray(b'xy'),\n"
                 "     collections.OrderedDict(a=1), 'quote\\'s', \"dq\\\"\", '\\u00e9\\n']\n"
                 "a.append(a)\n"
                 "d = {'self': None}\nd['self'] = d\n"
                 "t = ([],)\nt[0].append(t)\n"
                 "values = [a, d, t, (a, d), {1: a}]\n")
        comps = [("setup", setup)]
        for i in range(5):
            comps.append(("v%d" % i, "values[%d]" % i))
            comps.append(("r%d" % i, "repr(values[%d])" % i))
        r = run_driver(comps)
        for i in range(5):
            shown = r.one("v%d" % i, "value")["repr"]
            expected = eval(r.one("r%d" % i, "value")["repr"])
            self.assertEqual(shown, expected)

    # --- isolation ---------------------------------------------------------------

    def test_namespace_and_descriptors_are_clean(self):
        r = run_driver([
            ("c1", "sorted(globals())"),
            ("c2", "import os\n"
                   "def is_open(fd):\n"
                   "    try:\n        os.fstat(fd)\n        return True\n"
                   "    except OSError:\n        return False\n"
                   "is_open(3), is_open(4)"),
            ("c3", "import sys\nsys.argv, '__jsheets_input__' in vars(sys.modules['__main__'])"),
        ])
        self.assertEqual(
            r.one("c1", "value")["repr"],
            repr(sorted(["__builtins__", "__doc__", "__loader__", "__name__",
                         "__package__", "__spec__"])))
        self.assertEqual(r.one("c2", "value")["repr"], "(False, False)")
        self.assertIn("False", r.one("c3", "value")["repr"])

    def test_replacing_stdout_does_not_break_events(self):
        r = run_driver([
            ("c1", "import io, sys\nsys.stdout = io.StringIO()\nprint('captured')"),
            ("c2", "print('also captured')\nsys.stdout.getvalue()"),
            ("c3", "sys.stdout = sys.__stdout__\nprint('visible')"),
        ])
        self.assertEqual(r.one("c2", "value")["repr"], repr("captured\nalso captured\n"))
        self.assertEqual(r.stdout, b"visible\n")
        self.assertDone(r)

    def test_unencodable_text_in_events(self):
        r = run_driver([("c1", "raise ValueError('\\ud800 lone surrogate')"), ("c2", "'\\ud800'")])
        for line in r.raw_events:
            line.decode("utf-8")  # strict
            self.assertNotIn(b"\\ud800\"", line)
        self.assertEqual(r.one("c1", "exception")["message"], "\\ud800 lone surrogate")
        self.assertEqual(r.one("c2", "value")["repr"], "'\\ud800'")

    def test_forked_child_does_not_emit_events(self):
        r = run_driver([("c1", "import os\npid = os.fork()\nif pid:\n    os.waitpid(pid, 0)\npid > 0"),
                        ("c2", "'after'")])
        self.assertEqual(r.one("c1", "value")["repr"], "True")
        self.assertEqual(len(r.of("c1", "end")), 1)
        self.assertEqual(r.one("c2", "value")["repr"], "'after'")
        self.assertDone(r)

    # --- prelude / input -------------------------------------------------------------

    def test_prelude_runs_privately_first(self):
        r = run_driver([("c1", "'secret' in globals(), PRELUDE_RAN")],
                       prelude="import builtins\nsecret = 1\nbuiltins.PRELUDE_RAN = True\n")
        self.assertEqual(r.one("c1", "value")["repr"], "(False, True)")
        self.assertDone(r)

    def test_prelude_error_is_internal(self):
        r = run_driver([("c1", "print('never')")], prelude="1 / 0")
        self.assertEqual(r.returncode, 70)
        self.assertEqual([e["event"] for e in r.events], ["internal"])
        self.assertIn("ZeroDivisionError", r.events[0]["message"])
        self.assertEqual(r.stdout, b"")

    def test_bad_input_is_internal(self):
        r = run_driver([("c1", "1")], max_value_chars="lots")
        self.assertEqual(r.returncode, 70)
        self.assertEqual([e["event"] for e in r.events], ["internal"])

    # --- linecache, line ends, text ----------------------------------------------------

    def test_component_sources_reach_linecache(self):
        # The driver does not import linecache itself; the sources must be in it
        # whenever user code (traceback, inspect, warnings) reads it.
        r = run_driver([
            ("c1", "def f(x):\n    return 1 / x\n\ndef g():\n    return 42\n"),
            ("c2", "import traceback\ntry:\n    f(0)\nexcept ZeroDivisionError:\n"
                   "    text = traceback.format_exc()\ntext"),
            ("c3", "import inspect\ninspect.getsource(g)"),
            ("c4", "import warnings\nwarnings.warn('careful')"),
            ("c5", "import linecache\nlinecache.getline('<c1>', 2)"),
            ("c6", "linecache.clearcache()"),
            ("c7", "f(0)"),
        ])
        # c2 imports linecache (through traceback) for the first time
        tb = eval(r.one("c2", "value")["repr"])
        self.assertIn('File "<c2>", line 3, in <module>\n    f(0)\n', tb)
        self.assertIn('File "<c1>", line 2, in f\n    return 1 / x\n', tb)
        self.assertEqual(r.one("c3", "value")["repr"], repr("def g():\n    return 42\n"))
        self.assertIn(b"<c4>:2: UserWarning: careful\n  warnings.warn('careful')\n", r.stderr)
        self.assertEqual(r.one("c5", "value")["repr"], repr("    return 1 / x\n"))
        # cleared again by c6: the driver registers the sources before formatting
        self.assertIn('File "<c1>", line 2, in f\n    return 1 / x\n',
                      r.one("c7", "exception")["traceback"])
        self.assertDone(r)

    def test_cr_line_ends(self):
        r = run_driver([("c1", "a = 1\rdef h():\r    return 1/0\r"), ("c2", "h()"),
                        ("c3", "x = 1\r\ry = 2\rz = (\r")])
        self.assertIn('File "<c1>", line 3, in h\n    return 1/0\n',
                      r.one("c2", "exception")["traceback"])
        e = r.one("c3", "syntax_error")
        self.assertEqual((e["line"], e["column"], e["start"], e["end"]), (4, 5, 17, 18))
        self.assertDone(r)

    def test_split_lines_matches_tokenizer_line_ends(self):
        # _split_lines (cold section "lines") replaces a regex; compare on many inputs.
        import random
        import re
        namespace = {}
        exec(_cold_section("lines"), namespace)
        split_lines = namespace["_split_lines"]

        def reference(code):
            lines, pos = [], 0
            for match in re.finditer(r"\r\n|\r|\n", code):
                lines.append(code[pos:match.end()])
                pos = match.end()
            if pos < len(code):
                lines.append(code[pos:])
            return lines

        rng = random.Random(7)
        samples = ["", "\n", "\r", "\r\n", "\n\r", "\r\r\n", "a", "a\r\nb\rc\nd", "\u2028\x0c\x85"]
        samples += ["".join(rng.choice("ab\r\n\u2028") for _ in range(rng.randrange(12)))
                    for _ in range(3000)]
        for code in samples:
            self.assertEqual(split_lines(code), reference(code), repr(code))

    def test_future_flags_reach_trailing_expression(self):
        r = run_driver([("c1", "from __future__ import annotations\nx = 1\n"
                               "(lambda: 0).__code__.co_flags & 0x1000000")])
        self.assertEqual(r.one("c1", "value")["repr"], str(0x1000000))

    def test_non_ascii_text_in_events(self):
        r = run_driver([("c1", "'\U0001F600 é'"),
                        ("c2", "class S(str):\n    pass\n"
                               "class E(Exception):\n    def __str__(self):\n        return S('sub')\n"
                               "raise E()")])
        self.assertEqual(r.one("c1", "value")["repr"], "'\U0001F600 é'")
        self.assertIn("'\U0001F600 é'".encode("utf-8"), r.raw_events[1])  # UTF-8, not \u escapes
        self.assertEqual(r.one("c2", "exception")["message"], "sub")

    def test_large_and_forked_output(self):
        r = run_driver([
            ("c1", "import sys\nsys.stdout.write('x' * 200000)\nNone"),
            ("c2", "import os\npid = os.fork()\n"
                   "if pid == 0:\n    print('child')\n    os._exit(0)\n"
                   "os.waitpid(pid, 0)\nprint('parent')"),
        ])
        # The order the driver gives (see "Output" in its docstring): the child writes
        # to stdout itself, before the parent's next event (its print after waitpid),
        # so it comes before it; the parent's output written before the fork may still
        # be on the event channel, unread, when the child writes, so the child's line
        # may land between two of those output events. Everything arrives, once.
        self.assertEqual(r.stdout.replace(b"child\n", b"", 1), b"x" * 200000 + b"parent\n")
        self.assertLess(r.stdout.index(b"child\n"), r.stdout.index(b"parent\n"))
        self.assertDone(r)

    def test_start_up_imports_stay_lean(self):
        # Start-up cost: a plain run must not import these (see the driver docstring).
        r = run_driver([("c1", "import sys\n"
                               "[m for m in ('re', 'json', 'linecache', 'traceback', 'ast', "
                               "'tokenize', 'base64', 'types', '__future__') if m in sys.modules]")])
        self.assertEqual(r.one("c1", "value")["repr"], "[]")


def _rule(reference, allow=True):
    return [reference.split("."), allow]


# Like the shipped python-default list, smaller.
DEFAULT_RULES = [
    _rule("math"), _rule("json"), _rule("random"), _rule("collections"), _rule("time"),
    _rule("builtins"), _rule("builtins.open", False), _rule("builtins.eval", False),
    _rule("builtins.exec", False), _rule("builtins.compile", False),
    _rule("builtins.__import__", False), _rule("os", False), _rule("sys", False),
    _rule("sys.stdout"), _rule("importlib", False), _rule("subprocess", False),
    _rule("socket", False), _rule("ctypes", False), _rule("gc", False), _rule("inspect", False),
]


def access_list(*extra_rules, rules=DEFAULT_RULES):
    return {"list": "python-default", "rules": list(rules) + list(extra_rules)}


class AccessListTest(unittest.TestCase):
    """The "access" input member: the snippet builtins, the import wrapper and
    the audit hook (see "Access lists" in the driver docstring)."""

    maxDiff = None

    def assertDenied(self, r, cid, reference, ended=True):
        """`cid` caused exactly one violation, of `reference`; if `ended`, it
        ended the component, which then has no "exception" event."""
        found = r.of(cid, "violation")
        self.assertEqual([v["reference"] for v in found], [reference], (r.events, r.stderr))
        self.assertEqual(found[0], {
            "event": "violation", "id": cid, "reference": reference,
            "message": "`%s` is not allowed by the access list python-default" % reference})
        if ended:
            self.assertEqual(r.of(cid, "exception"), [], r.events)
            self.assertEqual([k for k, i in r.kinds() if i == cid], ["start", "violation", "end"])
            self.assertFalse(r.one(cid, "end")["ok"])

    def assertNoViolations(self, r):
        self.assertEqual([e for e in r.events if e["event"] == "violation"], [])

    def test_a_module_allowed_in_part_imports_as_that_part(self):
        r = run_driver([("c1", "import sys\nsys.stdout.write('ok\\n')\n"
                               "(hasattr(sys, 'no_such_member'), 'modules' in dir(sys), repr(sys))")],
                       access=access_list())
        self.assertEqual(r.of("c1", "violation"), [], r.events)
        self.assertEqual(r.stdout, b"ok\n")
        self.assertEqual(r.one("c1", "value")["repr"], repr((False, False, "<module 'sys'>")))

    def test_denied_members_of_a_partial_module_are_denied(self):
        # `!sys` + `sys.stdout`: the other members of sys exist but are denied;
        # reaching one as an attribute is a violation naming it, not an
        # AttributeError nobody can explain.
        cases = [
            ("attribute", "import sys\nsys.modules", "sys.modules"),
            ("getattr", "import sys\ngetattr(sys, 'modules')", "sys.modules"),
            ("private", "import sys\nsys._getframe()", "sys._getframe"),
            ("hasattr", "import sys\nhasattr(sys, 'path')", "sys.path"),
            ("dunder", "import sys\nsys.__stdout__", "<attribute __stdout__>"),
            ("dynamic_dunder", "import sys\ngetattr(sys, '__stdout__')", "sys.__stdout__"),
        ]
        r = run_driver([(cid, code) for cid, code, _ in cases] + [
            ("caught", "import sys\ntry:\n    sys.modules\n"
                       "except PermissionError as e:\n    caught = type(e).__name__, str(e)\n"
                       "caught"),
            ("missing", "import sys\nsys.no_such_member"),
            ("metadata", "import sys\ngetattr(sys, '__file__', 'none')"),
        ], access=access_list())
        for cid, _, reference in cases:
            self.assertDenied(r, cid, reference)
        self.assertDenied(r, "caught", "sys.modules", ended=False)
        self.assertEqual(r.one("caught", "value")["repr"], repr((
            "AccessDeniedError", "`sys.modules` is not allowed by the access list python-default")))
        self.assertEqual(r.of("missing", "violation"), [])
        missing = r.one("missing", "exception")
        self.assertEqual((missing["type"], missing["message"]),
                         ("AttributeError", "module 'sys' has no attribute 'no_such_member'"))
        self.assertEqual(r.of("metadata", "violation"), [])
        self.assertEqual(r.one("metadata", "value")["repr"], "'none'")
        self.assertDone(r)

    def test_builtins_reached_as_attributes_are_checked(self):
        # __builtins__ is a module, as in __main__; a denied builtin read from it
        # (attribute or item) is a violation naming it.
        cases = [
            ("attribute", "__builtins__.open", "builtins.open"),
            ("getattr", "getattr(__builtins__, 'eval')", "builtins.eval"),
            ("item", "__builtins__['exec']", "builtins.exec"),
            ("dict", "vars(__builtins__)['compile']('1', 'x', 'eval')", "builtins.__dict__"),
            # dunders of a module are not the snippet's to read
            ("import", "getattr(__builtins__, '__import__')('os')", "builtins.__import__"),
            ("import_attribute", "__builtins__.__import__('socket')",
             "<attribute __import__>"),
            ("import_module", "import builtins\nbuiltins.__dict__", "builtins.__dict__"),
        ]
        r = run_driver([(cid, code) for cid, code, _ in cases] + [
            ("allowed", "(__builtins__.len('abc'), getattr(__builtins__, 'max')(1, 2),"
                        " __builtins__['min'](1, 2), __builtins__['__import__']('math').floor(2.5),"
                        " hasattr(__builtins__, 'nope'), repr(__builtins__))"),
            ("missing", "__builtins__.nope"),
            ("missing_item", "__builtins__['nope']"),
        ], access=access_list())
        for cid, _, reference in cases:
            self.assertDenied(r, cid, reference)
        self.assertEqual(r.one("allowed", "value")["repr"],
                         repr((3, 2, 1, 2, False, "<module 'builtins' (built-in)>")))
        for cid, kind in (("missing", "AttributeError"), ("missing_item", "KeyError")):
            self.assertEqual(r.of(cid, "violation"), [])
            self.assertEqual(r.one(cid, "exception")["type"], kind)
        self.assertEqual(r.one("missing", "exception")["message"],
                         "module 'builtins' has no attribute 'nope'")
        self.assertDone(r)

    def test_denied_imports(self):
        cases = [
            ("import", "import os", "os"),
            ("import_submodule", "import os.path", "os"),
            ("from", "from os import system", "os.system"),
            ("dunder", "__import__('os')", "os"),
            ("dunder_fromlist", "__import__('os', fromlist=['system'])", "os.system"),
            ("importlib", "import importlib\nimportlib.import_module('os')", "importlib"),
            ("loaded_at_start", "import posix", "posix"),
            ("star", "from os import *", "os.*"),
            ("relative", "from . import x", "<relative import>"),
        ]
        r = run_driver([(cid, code) for cid, code, _ in cases] + [("after", "'still runs'")],
                       access=access_list())
        for cid, _, reference in cases:
            self.assertDenied(r, cid, reference)
        self.assertEqual(r.one("after", "value")["repr"], "'still runs'")
        self.assertDone(r)

    def test_import_forms_that_are_allowed(self):
        r = run_driver([
            ("from_allowed", "from sys import stdout\nstdout.write('via sys.stdout\\n')"),
            ("os_path", "from os import path\npath.join('a', 'b')"),
            ("star", "from math import *\nfloor(2.5)"),
            ("star_below_deny", "from sys import *"),
        ], access=access_list(_rule("os.path")))
        self.assertEqual(r.stdout, b"via sys.stdout\n")
        self.assertEqual(r.one("os_path", "value")["repr"], "'a/b'")
        self.assertEqual(r.one("star", "value")["repr"], "2")
        self.assertDenied(r, "star_below_deny", "sys.*")
        self.assertEqual(len([e for e in r.events if e["event"] == "violation"]), 1)

    def test_denied_import_is_an_import_error(self):
        r = run_driver([("c1", "try:\n    import os\n"
                               "except ImportError as e:\n"
                               "    caught = type(e).__name__, e.name, str(e)\n"
                               "caught")], access=access_list())
        self.assertDenied(r, "c1", "os", ended=False)
        self.assertEqual(r.one("c1", "value")["repr"], repr((
            "AccessDeniedImportError", "os",
            "`os` is not allowed by the access list python-default")))
        self.assertTrue(r.one("c1", "end")["ok"])

    def test_denied_builtins_and_dynamic_code(self):
        cases = [
            ("builtins_dict", "__builtins__['eval']('1 + 1')", "builtins.eval"),
            ("eval", "eval(\"__import__('os')\")", "builtins.eval"),
            ("exec", "exec('import os')", "builtins.exec"),
            ("compile", "compile('1', 'x', 'eval')", "builtins.compile"),
            ("open", "open('/etc/hostname')", "builtins.open"),
            # The real builtins module is print.__self__: not the snippet's to reach.
            ("real_open", "print.__self__.open('/etc/hostname')", "<attribute __self__>"),
            ("real_import", "getattr(print, '__self__')", "<attribute __self__>"),
            # import builtins gives the snippet's own
            ("import_builtins", "import builtins\nbuiltins.eval('1')", "builtins.eval"),
            ("from_builtins", "from builtins import exec", "builtins.exec"),
            ("enum_bltns", "import enum\nenum.bltns.open('/etc/hostname')", "builtins.open"),
            ("function", "type(lambda: 0)((lambda: 1).__code__, {})", "<attribute __code__>"),
        ]
        r = run_driver([(cid, code) for cid, code, _ in cases], access=access_list(_rule("enum")))
        for cid, _, reference in cases:
            self.assertDenied(r, cid, reference)
        self.assertNotIn(b"pwned", r.stdout)
        self.assertDone(r)

    def test_denied_operation_is_a_permission_error(self):
        r = run_driver([("c1", "try:\n    open('/etc/hostname')\n"
                               "except OSError as e:\n"
                               "    caught = type(e).__name__, isinstance(e, PermissionError)\n"
                               "caught")], access=access_list())
        self.assertDenied(r, "c1", "builtins.open", ended=False)
        self.assertEqual(r.one("c1", "value")["repr"], "('AccessDeniedError', True)")

    def test_violation_reported_once_per_component_and_when_caught(self):
        r = run_driver([
            ("c1", "print('before', end='')\n"
                   "for _ in range(3):\n"
                   "    try:\n        import os\n    except ImportError:\n        pass\n"
                   "'survived'"),
            ("c2", "import os"),
            ("c3", "'next runs'"),
        ], access=access_list())
        self.assertDenied(r, "c1", "os", ended=False)
        self.assertEqual(r.one("c1", "value")["repr"], "'survived'")
        self.assertTrue(r.one("c1", "end")["ok"])
        # output written before the violation reaches the host before it
        self.assertEqual(r.stdout_at[r.events.index(r.one("c1", "violation"))], b"before")
        self.assertDenied(r, "c2", "os")
        self.assertEqual(r.one("c3", "value")["repr"], "'next runs'")
        self.assertDone(r)

    def test_allowed_modules_work(self):
        r = run_driver([
            ("math", "import math\nmath.sqrt(4)"),
            ("json", "import json\njson.dumps({'a': [1]})"),
            ("counter", "from collections import Counter\nCounter('abca').most_common(1)"),
            ("sleep", "import time\ntime.sleep(0)\n'slept'"),
            ("random", "import random\nrandom.Random(1).random() < 1"),
            ("namedtuple", "from collections import namedtuple\nnamedtuple('P', 'x y')(1, 2)"),
            ("display", "6 * 7"),
            ("underscore", "_ + 1"),
            ("input", "input()"),
        ], stdin=b"typed\n", access=access_list())
        self.assertNoViolations(r)
        for cid, expected in [("math", "2.0"), ("json", repr('{"a": [1]}')),
                              ("counter", "[('a', 2)]"), ("sleep", "'slept'"), ("random", "True"),
                              ("namedtuple", "P(x=1, y=2)"), ("display", "42"),
                              ("underscore", "43"), ("input", "'typed'")]:
            self.assertEqual(r.one(cid, "value")["repr"], expected, r.events)
        self.assertDone(r)

    def test_library_imports_are_not_checked(self):
        import tempfile
        with tempfile.TemporaryDirectory() as tmp:
            with open(os.path.join(tmp, "helper_lib.py"), "w") as f:
                f.write("import tempfile as _tempfile\n"
                        "import denied_dep\n"
                        "VALUE = denied_dep.VALUE\n"
                        "def lazy():\n"
                        "    import shutil\n"
                        "    return shutil.__name__\n")
            with open(os.path.join(tmp, "denied_dep.py"), "w") as f:
                f.write("VALUE = 42\n")
            r = run_driver([
                ("json", "import json\njson.loads('[1]')"),  # json imports re for itself
                ("re", "import re"),
                ("lib", "import helper_lib\nhelper_lib.VALUE, helper_lib.lazy()"),
                ("dep", "import denied_dep"),
                ("tempfile", "import tempfile"),
            ], prelude="import sys\nsys.path.insert(0, %r)\n" % tmp,
               access=access_list(_rule("helper_lib")))
        self.assertEqual(r.one("json", "value")["repr"], "[1]")
        self.assertDenied(r, "re", "re")
        self.assertEqual(r.one("lib", "value")["repr"], "(42, 'shutil')")
        self.assertDenied(r, "dep", "denied_dep")
        self.assertDenied(r, "tempfile", "tempfile")
        self.assertDone(r)

    def test_denied_module_reached_as_attribute_is_denied(self):
        # Modules are given as new modules of their allowed public members: a
        # private member, or a denied module, is denied however it is read.
        r = run_driver([
            ("system", "import random\nrandom._os.system('echo pwned')"),
            ("write", "import random\nrandom._os.write(1, b'pwned')"),
            ("getattr", "import random\ngetattr(random, '_o' + 's').write(1, b'pwned')"),
            ("public", "import traceback\ntraceback.linecache"),
            ("nested", "import typing\ntyping.contextlib.os.system('echo pwned')"),
            ("partial", "import traceback\ntraceback.sys.modules"),
            ("owner", "import functools\nfunctools.RLock"),
        ], access=access_list(_rule("traceback"), _rule("typing"), _rule("contextlib"),
                              _rule("functools"), _rule("_thread", False)))
        self.assertDenied(r, "system", "random._os")
        self.assertDenied(r, "write", "random._os")
        self.assertDenied(r, "getattr", "random._os")
        self.assertDenied(r, "public", "linecache")
        self.assertDenied(r, "nested", "os")
        self.assertDenied(r, "partial", "sys.modules")
        self.assertDenied(r, "owner", "_thread.RLock")
        self.assertNotIn(b"pwned", r.stdout)

    def test_rebound_builtins_stay_checked(self):
        r = run_driver([
            # Functions (here a comprehension) made after rebinding __builtins__
            # get those builtins, without the attribute accessor (a NameError),
            # and still run in the snippet's namespace.
            ("rebind", "import random\n__builtins__ = {'len': len}\n"
                       "[random._os for _ in [1]]"),
            ("reset", "open('/etc/hostname')"),  # the snippet builtins are back
            ("real_builtins", "import enum\n__builtins__ = enum.bltns\n"
                              "[open('/etc/hostname') for _ in [1]]"),
        ], access=access_list(_rule("enum")))
        self.assertEqual(r.one("rebind", "exception")["type"], "NameError")
        self.assertEqual(r.of("rebind", "violation"), [])
        self.assertDenied(r, "reset", "builtins.open")
        self.assertDenied(r, "real_builtins", "builtins.open")
        self.assertNotIn(b"pwned", r.stdout)

    def test_frames_are_denied(self):
        r = run_driver([
            ("traceback", "try:\n    1 / 0\nexcept ZeroDivisionError as e:\n"
                          "    e.__traceback__.tb_frame"),
            ("generator", "def g():\n    yield 1\ng().gi_frame"),
            ("code", "def f():\n    pass\nf.__code__ = (lambda: 1).__code__"),
            ("not_frames", "try:\n    1 / 0\nexcept ZeroDivisionError as e:\n"
                           "    t = e.__traceback__\n"
                           "(t.tb_lineno, (lambda: 1).__name__)"),
        ], access=access_list())
        self.assertDenied(r, "traceback", "<attribute tb_frame>")
        self.assertDenied(r, "generator", "<attribute gi_frame>")
        self.assertDenied(r, "code", "<attribute __code__>")
        self.assertEqual(r.one("not_frames", "value")["repr"], "(2, '<lambda>')")

    def test_import_wrapper_state_is_out_of_reach(self):
        # __import__ is a method bound to its state: neither its __self__ nor
        # its __func__ is the snippet's to read (were it, the import it made with
        # forged state would still be checked as the snippet's).
        r = run_driver([("static", "state = __import__.__self__"),
                        ("dynamic", "getattr(__import__, '__func__')")],
                       access=access_list())
        self.assertDenied(r, "static", "<attribute __self__>")
        self.assertDenied(r, "dynamic", "<attribute __func__>")

    def test_thread_started_by_snippet_is_checked(self):
        # A thread that runs a C function has no Python frame at all.  (The
        # prelude hands the snippet the real os.system and _thread._count, which
        # counts threads once they run, as builtins.)
        r = run_driver([("c1", "import _thread, time\n"
                               "_thread.start_new_thread(SYSTEM, ('echo pwned',))\n"
                               "deadline = time.monotonic() + 1\n"
                               "while not COUNT() and time.monotonic() < deadline:\n"
                               "    time.sleep(0.01)\n"
                               "while COUNT():\n"
                               "    time.sleep(0.01)\n"
                               "'waited'")],
                       prelude="import builtins, os, _thread\nbuiltins.SYSTEM = os.system\n"
                               "builtins.COUNT = _thread._count\n",
                       access=access_list(_rule("_thread")))
        self.assertDenied(r, "c1", "os.system", ended=False)
        self.assertEqual(r.one("c1", "value")["repr"], "'waited'")
        self.assertNotIn(b"pwned", r.stdout)

    def test_c_code_importing_for_the_snippet_is_checked(self):
        # time.strptime imports _strptime through the snippet's __import__.
        code = "import time\ntime.strptime('2024', '%Y').tm_year"
        r = run_driver([("c1", code)], access=access_list())
        self.assertDenied(r, "c1", "_strptime")
        r = run_driver([("c1", code)], access=access_list(_rule("_strptime")))
        self.assertEqual(r.one("c1", "value")["repr"], "2024")
        self.assertNoViolations(r)

    def test_prelude_runs_unchecked_before_the_list_applies(self):
        r = run_driver([("c1", "PRELUDE_PID > 0"), ("c2", "import os")],
                       prelude="import os, builtins\nbuiltins.PRELUDE_PID = os.getpid()\n",
                       access=access_list())
        self.assertEqual(r.one("c1", "value")["repr"], "True")
        self.assertDenied(r, "c2", "os")

    def test_absent_access_changes_nothing(self):
        for options in ({}, {"access": None}):
            r = run_driver([("c1", "import os\nos.path.join('a', 'b')"),
                            ("c2", "__builtins__ is __import__('builtins')")], **options)
            self.assertEqual(r.one("c1", "value")["repr"], "'a/b'")
            self.assertEqual(r.one("c2", "value")["repr"], "True")
            self.assertNoViolations(r)
            self.assertEqual(r.stderr, b"")

    def test_malformed_access_is_internal(self):
        bad = [
            "python-default",
            [],
            {"list": "l"},
            {"list": "l", "rules": [], "extra": 1},
            {"list": "", "rules": []},
            {"list": 1, "rules": []},
            {"list": "l", "rules": {}},
            {"list": "l", "rules": [["os", True]]},
            {"list": "l", "rules": [[["os"], 1]]},
            {"list": "l", "rules": [[["os"]]]},
            {"list": "l", "rules": [[["os"], True, 1]]},
            {"list": "l", "rules": [[[], True]]},
            {"list": "l", "rules": [[[""], True]]},
            {"list": "l", "rules": [[["os.path"], True]]},
            {"list": "l", "rules": [[[1], True]]},
        ]
        for access in bad:
            r = run_driver([("c1", "print('never')")], access=access)
            self.assertEqual(r.returncode, 70, access)
            self.assertEqual([e["event"] for e in r.events], ["internal"], access)
            self.assertIn("access", r.events[0]["message"])
            self.assertEqual(r.stdout, b"")

    def test_rule_order_and_specificity(self):
        rules = [_rule("builtins"), _rule("json"), _rule("json.decoder", False),
                 _rule("json.decoder.JSONDecodeError"), _rule("collections", False),
                 _rule("collections")]  # later wins at equal segments
        r = run_driver([
            ("decoder", "from json import decoder"),
            ("error", "from json.decoder import JSONDecodeError\nJSONDecodeError.__name__"),
            ("other", "from json.decoder import JSONDecoder"),
            ("later", "import collections\n'ok'"),
            ("uncovered", "import math"),
        ], access={"list": "python-default", "rules": rules})
        self.assertDenied(r, "decoder", "json.decoder")
        self.assertEqual(r.one("error", "value")["repr"], "'JSONDecodeError'")
        self.assertDenied(r, "other", "json.decoder.JSONDecoder")
        self.assertEqual(r.one("later", "value")["repr"], "'ok'")
        self.assertDenied(r, "uncovered", "math")

    def test_denied_builtins_are_stubs(self):
        # The real builtins module, reached as a module's member (enum.bltns),
        # is the snippet's __builtins__ too.
        r = run_driver([("c1", "import enum\n"
                               "open.__name__, callable(open), enum.bltns is __builtins__"),
                        ("c2", "len('abc')")],
                       access=access_list(_rule("enum")))
        self.assertEqual(r.one("c1", "value")["repr"], "('open', True, True)")
        self.assertEqual(r.one("c2", "value")["repr"], "3")
        self.assertNoViolations(r)

    def test_start_up_imports_stay_lean_with_access(self):
        r = run_driver([("c1", "import sys\n"
                               "[m for m in ('re', 'json', 'linecache', 'traceback', 'ast', "
                               "'tokenize', 'base64', 'types', '__future__', 'threading') "
                               "if m in sys.modules]")],
                       access=access_list(_rule("sys")))
        self.assertEqual(r.one("c1", "value")["repr"], "[]")

    def test_checking_functions_use_no_global_names(self):
        # They run with globals that hold nothing (see _private in the driver):
        # a global name would fail at run time, or be the snippet's to bind.
        import dis
        section = compile(_cold_section("access"), "<access>", "exec")
        # Every _access_* function but these two, which are driver code.
        driver_code = {"_access_begin", "_access_transform_maker"}
        names = {const.co_name for const in section.co_consts
                 if hasattr(const, "co_name") and const.co_name.startswith("_access_")
                 and const.co_name not in driver_code}
        self.assertLessEqual({"_access_allowed", "_access_import", "_access_stub_maker",
                              "_access_walker", "_access_reporter", "_access_hook",
                              "_access_attr_check", "_access_attr_get", "_access_getattr",
                              "_access_module", "_access_module_getattr", "_access_format",
                              "_access_update_wrapper", "_access_dataclass"}, names)
        found = set()

        def check(code):
            for ins in dis.get_instructions(code):
                self.assertNotIn(ins.opname, ("LOAD_GLOBAL", "LOAD_NAME", "STORE_GLOBAL",
                                              "DELETE_GLOBAL", "STORE_NAME", "DELETE_NAME"),
                                 (code.co_name, ins.argval))
            for const in code.co_consts:
                if hasattr(const, "co_code"):
                    check(const)

        for const in section.co_consts:
            if hasattr(const, "co_name") and const.co_name in names:
                found.add(const.co_name)
                check(const)
        self.assertEqual(found, names)

    assertDone = DriverTest.assertDone


# The prelude (trusted, unchecked) hands the snippet real denied callables as
# builtins, to show that they are refused whoever calls them.
PLANT = ("import builtins, os, pickle, socket\n"
         "builtins.SYSTEM = os.system\nbuiltins.REAL_OPEN = open\n"
         "builtins.SOCKET = socket.socket\nbuiltins.UNPICKLE = pickle.loads\n")


class AttributeRuleTest(unittest.TestCase):
    """The attribute rule (see "Attributes" in the driver docstring): static
    names checked before the code runs, dynamic ones when used, modules given
    as their allowed public members, and what allowed library code may do for
    the snippet."""

    maxDiff = None
    assertDenied = AccessListTest.assertDenied
    assertNoViolations = AccessListTest.assertNoViolations
    assertDone = DriverTest.assertDone

    def assertAllDenied(self, r, cases, ended=True):
        for cid, _, reference in cases:
            with self.subTest(cid):
                self.assertDenied(r, cid, reference, ended=ended)

    def run_cases(self, cases, *extra_rules, **options):
        return run_driver([(cid, code) for cid, code, _ in cases],
                          access=access_list(*extra_rules), **options)

    def test_private_members_of_modules_are_denied_however_read(self):
        # The review's random._os, and every route to it.
        cases = [
            ("attribute", "import random\nrandom._os", "random._os"),
            ("system", "import random\nrandom._os.system('echo pwned')", "random._os"),
            ("write", "import random\nrandom._os.write(1, b'pwned')", "random._os"),
            ("from", "from random import _os", "random._os"),
            ("getattr", "import random\ngetattr(random, '_o' + 's')", "random._os"),
            ("getattr_default", "import random\ngetattr(random, '_os', None)", "random._os"),
            ("hasattr", "import random\nhasattr(random, '_os')", "random._os"),
            ("vars", "import random\nvars(random)['_os']", "random.__dict__"),
            ("dict", "import random\nrandom.__dict__['_os']", "random.__dict__"),
            ("attrgetter", "import operator, random\noperator.attrgetter('_os')(random)",
             "random._os"),
            ("from_operator", "from operator import attrgetter\nimport random\n"
                              "attrgetter('_inst')(random)", "random._inst"),
            ("methodcaller", "import operator, random\n"
                             "operator.methodcaller('_urandom', 4)(random)", "random._urandom"),
            ("partial", "import functools, random\nfunctools.partial(getattr, random)('_os')",
             "random._os"),
            ("reduce", "import functools, random\nfunctools.reduce(getattr, ['_os'], random)",
             "random._os"),
            ("map", "import random\nlist(map(getattr, [random], ['_os']))", "random._os"),
            ("sorted_key", "import random\nsorted([random], key=lambda m: m._os)",
             "random._os"),
            ("format", "import random\n'{0._os}'.format(random)", "<attribute _os>"),
            ("format_map", "import random\n'{m._os}'.format_map({'m': random})",
             "<attribute _os>"),
            ("setattr", "import random\nsetattr(random, '_inst', None)", "random._inst"),
            ("store", "import random\nrandom._inst = None", "random._inst"),
            ("delete", "import json\ndel json._default_encoder", "json._default_encoder"),
            ("sys", "import sys\nsys._getframe()", "sys._getframe"),
        ]
        r = self.run_cases(cases, _rule("operator"), _rule("functools"))
        self.assertAllDenied(r, cases)
        self.assertNotIn(b"pwned", r.stdout)
        self.assertDone(r)

    def test_internals_are_rejected_before_the_code_runs(self):
        # Function globals, frames, code, cells, the class graph, pickling
        # protocols: no object's; the component does not start (nothing printed).
        cases = [
            ("globals", "import random\nrandom.choice.__globals__['_os']",
             "<attribute __globals__>"),
            ("driver_globals", "import sys\nsys.stdout.buffer.raw.write.__globals__",
             "<attribute __globals__>"),
            ("builtins", "import random\nrandom.choice.__builtins__", "<attribute __builtins__>"),
            ("code", "(lambda: 1).__code__", "<attribute __code__>"),
            ("co", "def f():\n    pass\nf.co_consts", "<attribute co_consts>"),
            ("closure", "def f():\n    x = 1\n    return lambda: x\nf().__closure__",
             "<attribute __closure__>"),
            ("cell", "c = None\nc.cell_contents", "<attribute cell_contents>"),
            ("defaults", "def f(a=1):\n    pass\nf.__defaults__", "<attribute __defaults__>"),
            ("generator", "def g():\n    yield 1\nx = g()\nnext(x)\nx.gi_frame",
             "<attribute gi_frame>"),
            ("gi_code", "def g():\n    yield 1\ng().gi_code", "<attribute gi_code>"),
            ("coroutine", "async def c():\n    pass\nc().cr_frame", "<attribute cr_frame>"),
            ("async_gen", "async def a():\n    yield 1\na().ag_frame", "<attribute ag_frame>"),
            ("traceback", "try:\n    1 / 0\nexcept ZeroDivisionError as e:\n"
                          "    e.__traceback__.tb_frame", "<attribute tb_frame>"),
            ("f_back", "f = None\nf.f_back", "<attribute f_back>"),
            ("f_locals", "f = None\nf.f_locals", "<attribute f_locals>"),
            ("subclasses", "object.__subclasses__()", "<attribute __subclasses__>"),
            ("base", "().__class__.__base__", "<attribute __base__>"),
            ("bases", "int.__bases__", "<attribute __bases__>"),
            ("mro_attribute", "int.__mro__", "<attribute __mro__>"),
            ("mro", "type(1).mro()", "<attribute mro>"),
            ("reduce", "(1).__reduce__()", "<attribute __reduce__>"),
            ("reduce_ex", "(1).__reduce_ex__(2)", "<attribute __reduce_ex__>"),
            ("getstate", "import random\nrandom.__getstate__()", "<attribute __getstate__>"),
            ("self", "print.__self__", "<attribute __self__>"),
            ("func", "class C:\n    def m(self):\n        pass\nC().m.__func__",
             "<attribute __func__>"),
            ("wrapped", "import functools\nfunctools.lru_cache(len).__wrapped__",
             "<attribute __wrapped__>"),
            ("spec", "import json\njson.__spec__.loader", "<attribute __spec__>"),
            ("loader", "import json\njson.__loader__", "<attribute __loader__>"),
            ("class_store", "class C:\n    pass\nC().__class__ = int", "<attribute __class__>"),
            ("code_store", "def f():\n    pass\nf.__code__ = None", "<attribute __code__>"),
            ("in_function", "def f(x):\n    return x.__globals__", "<attribute __globals__>"),
            ("in_fstring", "f'{print.__self__}'", "<attribute __self__>"),
            ("match_keyword", "match print:\n    case object(__self__=b):\n        pass",
             "<attribute __self__>"),
            ("match_positional", "match 1:\n    case int(x):\n        pass",
             "<positional class pattern>"),
        ]
        r = run_driver([(cid, "print('ran')\n" + code) for cid, code, _ in cases],
                       access=access_list(_rule("functools")))
        self.assertAllDenied(r, cases)
        self.assertEqual(r.stdout, b"")
        # every name in a component is reported, in source order
        r = run_driver([("two", "a = 1\na.__globals__, a.__code__, a.__globals__")],
                       access=access_list())
        self.assertEqual([v["reference"] for v in r.of("two", "violation")],
                         ["<attribute __globals__>", "<attribute __code__>"])
        self.assertDone(r)

    def test_dynamic_names_follow_the_same_rule(self):
        cases = [
            ("getattr", "import random\ngetattr(random.choice, '__glob' + 'als__')",
             "<attribute __globals__>"),
            ("frame", "def g():\n    yield 1\nx = g()\ngetattr(x, 'gi_' + 'frame')",
             "<attribute gi_frame>"),
            ("subclasses", "getattr(object, '__subcl' + 'asses__')()", "<attribute __subclasses__>"),
            ("attrgetter_dotted", "import operator, random\n"
                                  "operator.attrgetter('choice.__globals__')(random)",
             "<attribute __globals__>"),
            ("methodcaller", "import operator\noperator.methodcaller('__reduce_ex__', 2)(1)",
             "<attribute __reduce_ex__>"),
            ("setattr", "def f():\n    pass\nsetattr(f, '__code__', None)", "<attribute __code__>"),
            ("vars_class", "vars(int)", "<attribute __dict__>"),
            ("str_subclass", "class S(str):\n    pass\ngetattr(print, S('__self__'))",
             "<attribute __self__>"),
            ("format", "'{0.__globals__}'.format(print)", "<attribute __globals__>"),
            ("format_unbound", "str.format('{0.__self__}', print)", "<attribute __self__>"),
            ("format_nested", "'{0:{1.__self__}}'.format(1, print)", "<attribute __self__>"),
            ("format_getattr", "getattr('{0.__self__}', 'format')(print)",
             "<attribute __self__>"),
            ("format_library", "import operator\n"
                               "operator.methodcaller('format', print)('{0.__self__}')",
             "<attribute __self__>"),
            ("accessor", "__builtins__['jsheets.attribute'][print, '__self__']",
             "<attribute __self__>"),
            # (__getattribute__ & co: a bound one of the snippet's own objects only)
            ("getattribute", "import random\nobject.__getattribute__(random, '_os')",
             "<attribute __getattribute__>"),
            ("getattribute_bound", "(1).__getattribute__('real')", "<attribute __getattribute__>"),
        ]
        r = self.run_cases(cases, _rule("operator"))
        self.assertAllDenied(r, cases)
        r = run_driver([("allowed", "import operator\nclass P:\n    def __init__(self):\n"
                                    "        self.a, self._b = 1, 2\np = P()\n"
                                    "(getattr(p, 'a'), getattr(p, '_b'), hasattr(p, '_c'), "
                                    "operator.attrgetter('a', '_b')(p), "
                                    "operator.methodcaller('upper')('x'), sorted(vars(p)), "
                                    "'{0.a} {1}'.format(p, 3), getattr(1, 'real'))")],
                       access=access_list(_rule("operator")))
        self.assertNoViolations(r)
        self.assertEqual(r.one("allowed", "value")["repr"],
                         repr((1, 2, False, (1, 2), "X", ["_b", "a"], "1 3", 1)))

    def test_modules_are_given_as_their_allowed_public_members(self):
        cases = [
            # a denied module as a public member of an allowed one
            ("public", "import traceback\ntraceback.linecache", "linecache"),
            ("nested", "import typing\ntyping.contextlib.os.write(1, b'pwned')", "os"),
            # a module denied but for members, as a member: those members only
            ("partial", "import traceback\ntraceback.sys.modules", "sys.modules"),
            # a function or class of a module the list denies, under another name
            ("owner", "import functools\nfunctools.RLock", "_thread.RLock"),
            # the real builtins module, as a member: the snippet's own
            ("builtins", "import enum\nenum.bltns.open('/etc/hostname')", "builtins.open"),
            ("module_dunder", "import traceback\ngetattr(traceback, '__builtins__')",
             "traceback.__builtins__"),
        ]
        r = self.run_cases(cases, _rule("traceback"), _rule("typing"), _rule("contextlib"),
                           _rule("functools"), _rule("_thread", False), _rule("enum"))
        self.assertAllDenied(r, cases)
        r = run_driver([
            ("same", "import json, json as j, traceback\n"
                     "(json is j, json.decoder is j.decoder, traceback.sys.stdout is not None, "
                     "'linecache' in dir(traceback), 'format_exc' in dir(traceback), "
                     "type(json).__name__, json.__name__, repr(json.loads('[1]')))"),
            # assignments change the snippet's module, not the library's
            ("assign", "import json\njson.dumps = None\nimport json as again\n"
                       "json.JSONEncoder().encode([1])"),
            ("star", "from math import *\nfloor(pi)"),
            ("path", "from os import path\npath.join('a', 'b')"),
        ], access=access_list(_rule("traceback"), _rule("os.path")))
        self.assertNoViolations(r)
        self.assertEqual(r.one("same", "value")["repr"], repr(
            (True, True, True, False, True, "module", "json", "[1]")))
        self.assertEqual(r.one("assign", "value")["repr"], "'[1]'")
        self.assertEqual(r.one("star", "value")["repr"], "3")
        self.assertEqual(r.one("path", "value")["repr"], "'a/b'")

    def test_denied_callables_are_denied_whoever_calls_them(self):
        # Allowed library code (contextlib, here) that calls what it is given:
        # processes, sockets and descriptors are denied all the same.
        cases = [
            ("map", "list(map(SYSTEM, ['echo pwned']))", "os.system"),
            ("starmap", "import itertools\nlist(itertools.starmap(SYSTEM, [('echo pwned',)]))",
             "os.system"),
            ("partial", "import functools\nfunctools.partial(SYSTEM, 'echo pwned')()",
             "os.system"),
            ("sorted", "sorted(['echo pwned'], key=SYSTEM)", "os.system"),
            ("library", "import contextlib\nwith contextlib.ExitStack() as stack:\n"
                        "    stack.callback(SYSTEM, 'echo pwned')", "os.system"),
            ("library_socket", "import contextlib\nwith contextlib.ExitStack() as stack:\n"
                               "    stack.callback(SOCKET)", "socket.__new__"),
            ("library_fd", "import contextlib\nwith contextlib.ExitStack() as stack:\n"
                           "    stack.callback(REAL_OPEN, 7, 'w')", "<descriptor 7>"),
            # unpickling (pandas.read_pickle, numpy.load) would give any global
            ("library_pickle", "import contextlib\nwith contextlib.ExitStack() as stack:\n"
                               "    stack.callback(UNPICKLE, b'cos\\nwrite\\n.')",
             "pickle.find_class"),
            ("stub", "import contextlib\nwith contextlib.ExitStack() as stack:\n"
                     "    stack.callback(open, '/etc/hostname')", "builtins.open"),
            ("stub_map", "list(map(eval, ['1']))", "builtins.eval"),
            # builtins that read their caller's frame, called by library code
            ("globals", "import contextlib\nwith contextlib.ExitStack() as stack:\n"
                        "    stack.callback(globals)", None),
        ]
        r = run_driver([(cid, code) for cid, code, _ in cases], prelude=PLANT,
                       access=access_list(_rule("itertools"), _rule("functools"),
                                          _rule("contextlib"), _rule("pickle", False)))
        self.assertAllDenied(r, [c for c in cases if c[2]])
        self.assertEqual(r.one("globals", "exception")["type"], "TypeError")
        self.assertNotIn(b"pwned", r.stdout)
        self.assertDone(r)

    def test_the_event_channel_is_out_of_reach(self):
        cases = [
            ("open_fd", "open(7, 'w')", "builtins.open"),
            ("fileio", "import io\nio.FileIO(7, 'w')", "io.FileIO"),
            ("stdin_class", "import sys\ntype(sys.stdin.buffer.raw)(7, 'w')", "<descriptor 7>"),
            ("stdin_reinit", "import sys\nsys.stdin.buffer.raw.__init__(7, 'w')",
             "<descriptor 7>"),
            ("socket", "import socket\nsocket.socket(fileno=7)", "socket"),
            ("mmap", "import mmap", "mmap"),
            ("private", "import sys\nsys.stdout.buffer.raw._name", "<attribute _name>"),
            ("subclass", "import sys\nclass F(type(sys.stdout.buffer.raw)):\n    pass\n"
                         "F('stdout')._name = 'x'", "<attribute _name>"),
        ]
        r = self.run_cases(cases, _rule("io", False), _rule("io.StringIO"), _rule("sys.stdin"),
                           _rule("socket", False), _rule("mmap", False))
        self.assertAllDenied(r, cases)
        r = run_driver([
            ("store", "import sys\nsys.stdout.buffer.raw.fileno = lambda: 7"),
            ("forge", "import sys\ntype(sys.stdout.buffer.raw)('stdout\",\"x\":\"')"),
            ("made", "import sys\ntype(sys.stdout.buffer.raw)('stdout').write(b'via made\\n')"),
            ("print", "import sys\nprint('to stderr', file=sys.stderr)\n"
                      "print('to stdout', file=sys.stdout)\n"
                      "(sys.stdout.fileno(), sys.stderr.fileno())"),
            # the event descriptor, as the prelude saw it: high, not 3, 4 or 5
            ("descriptor", "[fd for fd in FDS if fd > 3]"),
        ], prelude="import builtins, os\nbuiltins.FDS = sorted(map(int, os.listdir('/proc/self/fd')))\n",
           access=access_list(_rule("sys.stderr")))
        self.assertEqual(r.one("store", "exception")["type"], "AttributeError")
        self.assertEqual(r.one("forge", "exception")["type"], "KeyError")
        self.assertEqual(r.stdout, b"via made\nto stdout\n")
        self.assertEqual(r.stderr, b"to stderr\n")
        self.assertEqual(r.one("print", "value")["repr"], "(1, 2)")
        # (Descriptors the test process leaves open may be listed too.)
        high = eval(r.one("descriptor", "value")["repr"])
        self.assertNotIn(4, high)
        self.assertNotIn(5, high)
        self.assertTrue([fd for fd in high if fd >= 16], high)
        self.assertNoViolations(r)
        self.assertDone(r)

    def test_snippet_classes_keep_their_private_attributes(self):
        code = """
import abc, dataclasses, enum, typing
from collections import namedtuple
class P:
    count = 0
    def __init__(self, x):
        self._x = x
        self.__secret = x * 2
        P.count += 1
        self._log = []
        self._log += ['init']
    def __repr__(self):
        return f"P({self._x}, {self.__secret})"
    def __eq__(self, other):
        return isinstance(other, P) and self._x == other._x
    def __hash__(self):
        return hash(self._x)
    @property
    def x(self):
        return self._x
    @x.setter
    def x(self, value):
        self._x = value
    def _helper(self):
        return 'helped'
class Q(P):
    __slots__ = ()
    def __init__(self, x):
        super().__init__(x)
        self.__dict__['_extra'] = True
    def __setattr__(self, name, value):
        super().__setattr__(name, value)
    def run(self):
        return self._helper(), super()._helper(), vars(self)['_extra']
@dataclasses.dataclass(frozen=True, order=True)
class D:
    a: int
    _b: int = 0
@dataclasses.dataclass(slots=True)
class S:
    n: int
    def bump(self):
        self.n += 1
        return self.n
class Base(abc.ABC):
    def __init__(self):
        self._v = 1
    @abc.abstractmethod
    def get(self): ...
class Impl(Base):
    def get(self):
        return self._v
T = typing.TypeVar('T')
class Box(typing.Generic[T]):
    def __init__(self, v):
        self._v = v
class Color(enum.Enum):
    RED = 1
Pt = namedtuple('Pt', 'x y')
q = Q(3)
q.x = 4
del q._log
class Outer:
    def __init__(self):
        self.__v = 'outer'
    def get(self):
        return [self.__v for _ in 'a'][0], (lambda: self.__v)()
(P(1), P(1) == P(1), len({P(1), P(1)}), q, q.run(), hasattr(q, '_log'), P.count,
 getattr(P(2), '_P__secret'), D(1) < D(2), D(1, 2)._b, S(1).bump(), Impl().get(),
 Box(5)._v, Color.RED.value, Pt(1, 2)._asdict(), Pt(1, 2)._replace(x=3), Outer().get())
"""
        r = run_driver([("c1", code)], access=access_list(_rule("abc"), _rule("dataclasses"),
                                                           _rule("enum"), _rule("typing")))
        self.assertNoViolations(r)
        self.assertEqual(r.one("c1", "value")["repr"], repr((
            "P(1, 2)", True, 1, "P(4, 6)", ("helped", "helped", True), False, 6, 4, True, 2,
            2, 1, 5, 1, {"x": 1, "y": 2}, "Pt(x=3, y=2)", ("outer", "outer"))).replace(
                "'P(1, 2)'", "P(1, 2)").replace("'P(4, 6)'", "P(4, 6)").replace(
                "'Pt(x=3, y=2)'", "Pt(x=3, y=2)"))
        # Protocol dunders and metadata of its own objects may be assigned too.
        r = run_driver([("assign", "class C:\n    pass\nC.__repr__ = lambda self: 'patched'\n"
                                   "def f():\n    pass\nf.__name__ = f.__qualname__ = 'g'\n"
                                   "f.__doc__ = 'doc'\n(repr(C()), f.__name__, f.__doc__)")],
                       access=access_list())
        self.assertNoViolations(r)
        self.assertEqual(r.one("assign", "value")["repr"], "('patched', 'g', 'doc')")
        # What is not the snippet's own: subclasses of library classes (whose
        # methods would read what the snippet wrote), classes made by type(),
        # super() of another class, a class statement claiming another module.
        cases = [
            ("library_base", "import random\nclass R(random.Random):\n"
                             "    def __init__(self):\n        self._n = 1\nR()",
             "<attribute _n>"),
            ("library_private", "import random\nrandom.Random()._randbelow(3)",
             "<attribute _randbelow>"),
            ("type_made", "C = type('C', (), {'_x': 1})\nC._x", "<attribute _x>"),
            ("super_subclass", "import random\nclass S(super):\n    pass\n"
                               "S(random.Random, random.Random())._randbelow",
             "<attribute _randbelow>"),
            ("unbound_setattr", "class C:\n    pass\nobject.__setattr__(C(), 'a', 1)",
             "<attribute __setattr__>"),
            ("class_setattr", "class C:\n    pass\nC.__setattr__(1, 'a', 1)",
             "<attribute __setattr__>"),
            ("module_claim", "class C:\n    __module__ = 'os'", "<attribute __module__>"),
            ("builtin_private", "(1)._x", "<attribute _x>"),
            ("library_dunder_store", "import json\njson.JSONEncoder.__repr__ = None",
             "<attribute __repr__>"),
            ("module_store", "class C:\n    pass\nsetattr(C, '__module__', 'os')",
             "<attribute __module__>"),
        ]
        r = self.run_cases(cases)
        self.assertAllDenied(r, cases)

    def test_library_gadgets_are_closed(self):
        cases = [
            # functools.update_wrapper writes the wrapper's attributes: the
            # snippet's own wrapper only, and reads what the rule allows
            ("update_driver", "import functools, sys\nclass H:\n    pass\n"
                              "functools.update_wrapper(sys.stdout.buffer.raw, H())",
             "<attribute __dict__>"),
            ("update_assigned", "import functools, random\nclass H:\n    pass\n"
                                "functools.update_wrapper(H(), random.choice, "
                                "assigned=('__globals__',))", "<attribute __globals__>"),
            ("wraps_assigned", "import functools\ndef f():\n    pass\n"
                               "functools.wraps(print, assigned=('__self__',))(f)",
             "<attribute __self__>"),
            # dataclasses write field names into code, run with the globals of
            # the class's module
            ("dataclass_names", "import dataclasses\nC = type('C', (), {'__module__': "
                                "'__main__', '__annotations__': {'a=1) #': int}})\n"
                                "dataclasses.dataclass(C)", "<dataclass field name>"),
            ("dataclass_module", "import dataclasses\nC = type('C', (), {'__module__': 'os', "
                                 "'__annotations__': {'a': int}})\ndataclasses.dataclass(C)",
             "<attribute __module__>"),
            # library code that compiles text the snippet chose
            ("forward_ref", "import typing\ntyping.ForwardRef('f.__globals__')",
             "<attribute __globals__>"),
            ("forward_ref_dict", "import typing\ntyping.List['m.__dict__']",
             "<attribute __dict__>"),
        ]
        r = self.run_cases(cases, _rule("functools"), _rule("dataclasses"), _rule("typing"))
        self.assertAllDenied(r, cases)
        r = run_driver([("fine", "import functools, dataclasses, typing\n"
                                 "def deco(f):\n    @functools.wraps(f)\n"
                                 "    def w(*a):\n        return f(*a) * 2\n    return w\n"
                                 "@deco\ndef twice(x):\n    'doc'\n    return x\n"
                                 "@functools.lru_cache\ndef sq(x):\n    return x * x\n"
                                 "C = dataclasses.make_dataclass('C', ['a'])\n"
                                 "(twice(21), twice.__name__, twice.__doc__, sq(4), C(1), "
                                 "typing.List['int'], typing.Optional[int])")],
                       access=access_list(_rule("functools"), _rule("dataclasses"),
                                          _rule("typing")))
        self.assertNoViolations(r)
        self.assertEqual(r.one("fine", "value")["repr"],
                         "(42, 'twice', 'doc', 16, C(a=1), typing.List[ForwardRef('int')], "
                         "typing.Optional[int])")

    def test_dynamic_code_is_checked_where_the_list_allows_it(self):
        rules = [_rule("builtins"), _rule("random")]
        cases = [
            ("exec", "exec('import random\\nx = random._os')", "random._os"),
            ("eval", "eval('print.__self__')", "<attribute __self__>"),
            ("compile", "compile('a.__globals__', 'x', 'eval')", "<attribute __globals__>"),
            ("exec_code", "exec(compile('import random\\nrandom._os', 'x', 'exec'))",
             "random._os"),
        ]
        r = run_driver([(cid, code) for cid, code, _ in cases] + [
            ("fine", "exec('y = 6')\ng = {}\nexec('z = 7', g)\n"
                     "def f():\n    return eval('y * z', {'y': 2}, {'z': 3})\n"
                     "(y, g['z'], eval('y + 1'), f(), eval(compile('y * 7', 'x', 'eval')))"),
        ], access={"list": "python-default", "rules": rules})
        self.assertAllDenied(r, cases)
        self.assertEqual(r.one("fine", "value")["repr"], "(6, 7, 7, 6, 42)")

    def test_tracebacks_of_checked_code(self):
        r = run_driver([("c1", "class C:\n    def __init__(self):\n        self._a = 1\n"
                               "    def get(self):\n        return self._missing\n"
                               "C().get()")],
                       access=access_list())
        exc = r.one("c1", "exception")
        self.assertEqual((exc["type"], exc["message"], exc["line"]),
                         ("AttributeError", "'C' object has no attribute '_missing'", 5))
        self.assertEqual(exc["traceback"],
                         'Traceback (most recent call last):\n'
                         '  File "<c1>", line 6, in <module>\n'
                         '    C().get()\n'
                         '  File "<c1>", line 5, in get\n'
                         '    return self._missing\n'
                         '           ^^^^^^^^^^^^^\n'
                         "AttributeError: 'C' object has no attribute '_missing'\n")


def _cold_section(name):
    """The source of the driver's cold section NAME (line numbers kept)."""
    start = DRIVER_SOURCE.index("\n#@cold %s\n" % name) + 1
    end = DRIVER_SOURCE.find("\n#@cold ", start)
    return "\n" * DRIVER_SOURCE.count("\n", 0, start) + DRIVER_SOURCE[start:end if end > 0 else None]


def _protocol_examples(tag):
    """The bodies of PROTOCOL.md's code blocks tagged `json TAG`, in order."""
    with open(os.path.join(HERE, "PROTOCOL.md"), encoding="utf-8") as f:
        text = f.read()
    blocks = re.findall(r"^```json (\S+)\n(.*?)^```$", text, re.S | re.M)
    return [json.loads(body) for kind, body in blocks if kind == tag]


class ProtocolDocumentTest(unittest.TestCase):
    """PROTOCOL.md, the one specification of the driver protocol, against this driver."""

    def test_every_input_example_runs(self):
        inputs = _protocol_examples("python-input")
        deferred = _protocol_examples("python-input-deferred")
        self.assertEqual(len(inputs), 2)
        self.assertEqual(len(deferred), 1)
        for doc in inputs:
            doc["driver"] = DRIVER_SOURCE
            payload = json.dumps(doc).encode("utf-8")
            if doc.get("deferred"):
                rest = json.dumps(deferred[0]).encode("utf-8")
                ids = [c["id"] for c in deferred[0]["components"]]
                r = run_driver([], payload=payload + b"\n", after_ready=rest)
            else:
                ids = [c["id"] for c in doc["components"]]
                r = run_driver([], payload=payload)
            self.assertEqual(r.returncode, 0, r.stderr)
            lifecycle = [k for k, _ in r.kinds() if k in ("ready", "start", "end", "done")]
            expected = ["ready"] if doc.get("deferred") else []
            expected += ["start", "end"] * len(ids) + ["done"]
            self.assertEqual(lifecycle, expected, r.events)
            self.assertEqual([e["id"] for e in r.events if e["event"] == "start"], ids)

    def test_every_event_the_driver_writes_is_specified(self):
        specified = {e["event"] for e in _protocol_examples("event")}
        written = set(re.findall(r'"event":\s*"(\w+)"', DRIVER_SOURCE))
        self.assertTrue(written, "no events found in the driver source")
        self.assertLessEqual(written, specified)


if __name__ == "__main__":
    unittest.main()
