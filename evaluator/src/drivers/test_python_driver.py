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


def run_driver(components, stdin=b"", timeout=60, **options):
    """Run the driver on [(id, code), ...]; options go into the input JSON."""
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

    def feed(fd_or_file, data):
        try:
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
                if fd == ev_r:
                    # Drain stdout/stderr first: anything the driver flushed
                    # before writing an event is already in those pipes.
                    for other in (proc.stdout.fileno(), proc.stderr.fileno()):
                        if other in open_fds and not drain(other):
                            sel.unregister(other)
                            open_fds.discard(other)
                alive = drain(fd)
                if fd == ev_r:
                    while b"\n" in ev:
                        line, _, rest = bytes(ev).partition(b"\n")
                        ev[:] = rest
                        parsed = json.loads(line.decode("utf-8"))
                        if parsed.get("event") == "output":
                            # Python-level output travels on the event channel.
                            target = out if parsed["stream"] == "stdout" else err
                            target.extend(base64.b64decode(parsed["data"]))
                            continue
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
        self.assertEqual(r.stdout, b"x" * 200000 + b"child\nparent\n")
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
            ("dunder", "import sys\nsys.__stdout__", "sys.__stdout__"),
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
            ("dict", "vars(__builtins__)['compile']('1', 'x', 'eval')", "builtins.compile"),
            # __import__ is the import wrapper there too: what it imports is checked
            ("import", "getattr(__builtins__, '__import__')('os')", "os"),
            ("import_attribute", "__builtins__.__import__('socket')", "socket"),
        ]
        r = run_driver([(cid, code) for cid, code, _ in cases] + [
            ("allowed", "(__builtins__.len('abc'), getattr(__builtins__, 'max')(1, 2),"
                        " __builtins__['min'](1, 2), __builtins__.__import__('math').floor(2.5),"
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
            # The real builtins module is print.__self__: its functions raise
            # audit events, and those are checked.
            ("real_open", "print.__self__.open('/etc/hostname')", "builtins.open"),
            ("real_exec", "print.__self__.exec((lambda: None).__code__)", "builtins.exec"),
            # a string is compiled first
            ("real_eval", "print.__self__.eval('1')", "builtins.compile"),
            ("real_import", "print.__self__.__import__('os').system('echo pwned')", "os.system"),
            ("function", "type(lambda: 0)((lambda: 1).__code__, {})", "types.FunctionType"),
        ]
        r = run_driver([(cid, code) for cid, code, _ in cases], access=access_list())
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

    def test_denied_module_reached_as_attribute_is_caught_where_used(self):
        r = run_driver([
            # os.system raises its audit event from snippet code
            ("system", "import random\nrandom._os.system('echo pwned')"),
            # os.popen is Python code in a denied module the snippet called:
            # what it does is checked (it opens the pipe before it spawns)
            ("popen", "import random\nrandom._os.popen('echo pwned').read()"),
            ("listdir", "import random\nrandom._os.listdir('/')"),
        ], access=access_list())
        self.assertDenied(r, "system", "os.system")
        self.assertDenied(r, "popen", "builtins.open")
        self.assertDenied(r, "listdir", "os.listdir")
        self.assertNotIn(b"pwned", r.stdout)

    def test_rebound_builtins_stay_checked(self):
        r = run_driver([
            # Functions (here a comprehension) made after rebinding __builtins__
            # get the real builtins, but run in the snippet's namespace.
            ("rebind", "__builtins__ = print.__self__\n"
                       "[__import__('os').system('echo pwned') for _ in [1]]"),
            ("reset", "open('/etc/hostname')"),  # the snippet builtins are back
            ("real_eval", "f = print.__self__.eval\n"
                          "f('1')"),
        ], access=access_list())
        self.assertDenied(r, "rebind", "os.system")
        self.assertDenied(r, "reset", "builtins.open")
        self.assertDenied(r, "real_eval", "builtins.compile")
        self.assertNotIn(b"pwned", r.stdout)

    def test_frames_are_denied(self):
        r = run_driver([
            ("traceback", "try:\n    1 / 0\nexcept ZeroDivisionError as e:\n"
                          "    e.__traceback__.tb_frame"),
            ("generator", "def g():\n    yield 1\ng().gi_frame"),
            ("code", "def f():\n    pass\nf.__code__ = (lambda: 1).__code__"),
            ("not_frames", "try:\n    1 / 0\nexcept ZeroDivisionError as e:\n"
                           "    t = e.__traceback__\n"
                           "(t.tb_lineno, (lambda: 1).__code__.co_name)"),
        ], access=access_list())
        self.assertDenied(r, "traceback", "sys._getframe")
        self.assertDenied(r, "generator", "sys._getframe")
        self.assertDenied(r, "code", "types.FunctionType")
        self.assertEqual(r.one("not_frames", "value")["repr"], "(2, '<lambda>')")

    def test_import_wrapper_with_forged_state_is_checked(self):
        # __import__ is a method bound to its state; called again with other
        # state (a checker that lets everything through), the import it makes
        # is checked as the snippet's.
        r = run_driver([("c1", "state = __import__.__self__\n"
                               "forged = (lambda *args: None,) + state[1:]\n"
                               "__import__.__func__(forged, 'ctypes')")],
                       access=access_list())
        self.assertDenied(r, "c1", "ctypes")

    def test_thread_started_by_snippet_is_checked(self):
        # A thread that runs a C function has no Python frame at all.
        r = run_driver([("c1", "import _thread, time\n"
                               "system = print.__self__.__import__('os').system\n"
                               "_thread.start_new_thread(system, ('echo pwned',))\n"
                               # _count() counts threads once they run
                               "deadline = time.monotonic() + 1\n"
                               "while not _thread._count() and time.monotonic() < deadline:\n"
                               "    time.sleep(0.01)\n"
                               "while _thread._count():\n"
                               "    time.sleep(0.01)\n"
                               "'waited'")],
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
        r = run_driver([("c1", "open.__name__, callable(open), open is not print.__self__.open"),
                        ("c2", "len('abc')")],
                       access=access_list())
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
        names = {"_access_allowed", "_access_import", "_access_stub_maker",
                 "_access_walker", "_access_reporter", "_access_hook"}
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


def _cold_section(name):
    """The source of the driver's cold section NAME (line numbers kept)."""
    start = DRIVER_SOURCE.index("\n#@cold %s\n" % name) + 1
    end = DRIVER_SOURCE.find("\n#@cold ", start)
    return "\n" * DRIVER_SOURCE.count("\n", 0, start) + DRIVER_SOURCE[start:end if end > 0 else None]


if __name__ == "__main__":
    unittest.main()
