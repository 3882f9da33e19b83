"""jsheets Python driver (runs inside the sandbox, Python 3.11).

Started as ``/usr/bin/python3.11 -I -c BOOTSTRAP`` (see python_bootstrap.py).
The bootstrap reads one JSON document from fd 3 (until EOF) and exec()s the
"driver" member (this file; only its hot part, see "Start-up cost" below)
with the globals

    {"__name__": "__jsheets_driver__", "__builtins__": builtins,
     "__jsheets_input__": <the parsed JSON document>}

Input (fd 3, one JSON object on one line, the host closes its end after writing it;
with "deferred": true and no "components", the driver starts up, installs the
access hooks, and only then reads a second document {"components": [...]} from
fd 3 until EOF: a sandbox started ahead of its request):

    {"driver": "<this source>",
     "components": [{"id": "c1", "code": "..."}, ...],
     "max_value_chars": 10000,          # optional, default 10000
     "max_traceback_chars": 20000,      # optional, default 20000
     "traceback_frames": "user",        # optional: "user" (default) | "all"
     "prelude": "<python code>",        # optional
     "access": {"list": NAME,           # optional, see "Access lists"
                "rules": [[[SEGMENT, ...], ALLOW], ...]}}

Output (fd 4): JSON lines, one event per line, ASCII-safe UTF-8:

    {"event":"start","id":ID}
    {"event":"output","stream":"stdout"|"stderr","data":BASE64}
    {"event":"syntax_error","id":ID,"type":"SyntaxError","message":M,
     "line":L,"column":C,"end_line":EL,"end_column":EC,"start":S,"end":E}
    {"event":"value","id":ID,"repr":R,"truncated":BOOL}
    {"event":"exception","id":ID,"type":T,"message":M,"traceback":TB,"line":L}
    {"event":"violation","id":ID,"reference":R,"message":M}
    {"event":"exit","id":ID,"code":STATUS}
    {"event":"end","id":ID,"ok":BOOL}
    {"event":"done"}
    {"event":"internal","message":M}

Every "start" is followed by exactly one "end".  After "exit" + "end" the
process exits with STATUS and no "done" follows.  After "done" the process
exits 0.  "internal" means the driver itself failed (bad input, prelude
error, ...); the process then exits 70.  "output" events carry what Python
code writes to sys.stdout / sys.stderr, in order with the other events;
sys.stdout and sys.stderr are flushed before each other event is written.
"violation" (only with "access") is written when the access list stops
something, even if the snippet catches the exception; see "Access lists".

This protocol is not a trust boundary: user code runs in this same process
and can, with some effort, find the event descriptor.  The host must treat
the event stream as untrusted input.

Start-up cost
-------------
The driver starts once per evaluation, and compiling Python source is the
largest part of what it costs, so:

* The bootstrap compiles only the hot part: the source above the first line
  that starts with "#@cold".  Each "#@cold NAME" line opens a cold section,
  code for rarer paths (exceptions, syntax errors, containers as values,
  linecache, ...), which _need(NAME) compiles from the "driver" input member
  and runs in the driver's globals when it is first needed (a section
  _need()s the sections it uses at its top).  Hot code calls _need(NAME)
  before it uses a name from a section.  The file as a whole is still one
  valid module.  Keep code that does not run on every evaluation cold.
* The hot part imports nothing the interpreter has not loaded at start but
  two C modules: the bootstrap parses the input with _json (the C half of
  json; json itself would import re & co.), events are encoded with
  _json.encode_basestring, output with binascii.  Rare paths import
  traceback, json and __future__ when they need them.
* linecache (which imports tokenize and re) is not imported; the component
  sources go into its cache when somebody imports it (_LinecacheHook), at
  each component start once it is loaded, and before a traceback is
  formatted.

Access lists
------------
With "access" (absent or null: no checks, no hook, nothing of this runs; it
lives in cold section "access"), the list NAME's rules, in file order, decide
dotted references: of the rules whose segments are a prefix of the
reference's, the one with the most segments decides, at equal segments the
later one; a reference no rule covers is denied.  After the prelude (which
runs unchecked) and before the first component:

* The components' namespace gets its own builtins: a module (jsheets.
  CheckedBuiltins, as __main__'s __builtins__ is a module) whose dict, where
  names are looked up, is a copy of builtins' where each name n with
  `builtins.n` denied is a stub that raises (reading such a name as an
  attribute or item of __builtins__ raises too; an absent name is an
  AttributeError or KeyError), and
  __import__ is a wrapper that checks what an import binds: `import a.b.c`
  checks a, a.b and a.b.c; `from a.b import x` checks a.b.x (so rules
  `!os` + `os.path` allow `from os import path`, not `import os.path`);
  `from a.b import *` checks a.b.*, allowed when a.b is and no deny rule lies
  below it; a relative import is denied as `<relative import>` (a snippet is
  no package).  `import a` of a module denied whole but with allowed members
  (`!sys` + `sys.stdout`) gives a new module holding only those members,
  copied at import time; reading another member the real module has
  (sys.modules) raises the violation of `sys.modules` (module metadata that
  protocols probe, such as __file__, excepted), one it does not have is an
  AttributeError.  __builtins__ is reset at each component start.
  Library modules keep the real builtins, so what they import for themselves
  is not checked.  C code that imports for the snippet (time.strptime imports
  _strptime) goes through the snippet's __import__ and is checked: the list
  has to allow such helper modules.
* An audit hook (sys.addaudithook; it cannot be removed) checks the events
  snippet code causes.  Snippet code: a frame whose f_builtins is that dict or
  whose f_globals is the components' namespace (exec/eval with fresh globals,
  spoofed filenames and a rebound __builtins__ stay snippet code).  Events:
  import -> the module; open (also io.open_code, os.open) -> builtins.open;
  exec (also eval) -> builtins.exec; compile -> builtins.compile;
  function.__new__ -> types.FunctionType; code.__new__ -> types.CodeType;
  object.__getattr__/__setattr__/__delattr__ of frame-reaching attributes
  (tb_frame, gi_frame, cr_frame, ag_frame, f_back, f_globals, f_builtins,
  f_locals, f_code, gi_code, ...) -> sys._getframe, assignments to a
  function's __code__/__defaults__/__kwdefaults__ -> types.FunctionType;
  "cpython.*", sys.unraisablehook and sys.excepthook are not checked; any
  other event is its own name, up to a "/" (os.system, subprocess.Popen,
  socket.connect, ctypes.dlopen, sys._getframe, sys.settrace, time.sleep).
  Who caused an event: walking up from the frame that raised it, skipping
  importlib's frames, to the first snippet frame S.  The event is checked if
  it came from S itself (importlib frames between: the snippet imported with
  the real __import__, print.__self__.__import__, so the loader's file access
  is checked too), or from library code S called directly whose module
  (f_globals["__name__"]) the list denies (random._os.popen: "os"), unless
  that library was importing; imports done by library code are not checked
  (but the import wrapper's own, re-driven with forged state, are).  No
  snippet frame: the driver's own work in the main thread is not checked; in
  another thread (started by the snippet) the event is checked as snippet
  code's.
* A violation raises AccessDeniedImportError (an ImportError; for import
  events and the wrapper) or AccessDeniedError (a PermissionError), message
  "`REF` is not allowed by the access list NAME", and at once writes a
  "violation" event, once per (component, reference).  One that ends a
  component gets no "exception" event (the violation is the report); the
  component ends with ok false and the next ones run, as after an exception.

The hook finds the causing frame through a generator's own frame (its f_back
is the hook) instead of sys._getframe, whose own audit event would re-enter
it (several such generators, and several reporting ones, so that threads do
not wait for each other); its verdicts come from frozensets and a mapping
proxy bound into it, and the functions involved have globals with nothing in
them (see the section), so rebinding names, closure cells or the real
builtins does not change them; a hook frame that leaks through a traceback
shows only immutable state.  A snippet that closes those generators (reached
from such a frame) makes every checked event fail, the driver's own too: the
run dies.  What was reported and the current component are plain driver
state: a snippet that reaches the driver's globals can confuse the reports,
not the verdicts.

This is a policy, not a boundary (the OS sandbox is).  Known gaps: a denied
module reached as an attribute of an allowed one (random._os, json.decoder.re)
is usable where its use raises no audit event from snippet code or from a
function of a denied module the snippet calls (reading os.environ, calling a
built-in module that audits nothing, such as _posixsubprocess.fork_exec);
modules already loaded are reachable through the real builtins
(print.__self__.__import__ raises no import event for them); library code
that calls a snippet-supplied callable (copy's __reduce__ protocol, a
generated function) makes that call as library code, so a real builtin passed
that way is checked only as the library's; allowed libraries that hand out
frames (traceback.walk_stack) reach the driver's globals, and a module's
__name__ can be rebound to make its functions look like an allowed module's;
exec/eval with explicit real builtins escape where the list allows exec.
"""

import os
import sys

# --- Take over the protocol descriptors before anything opens a file. -------
# The bootstrap opened fd 3 with closefd=False, so it is still open here and
# dup(4) cannot land on it.  os.dup() returns a non-inheritable descriptor.
_INPUT = globals().pop("__jsheets_input__", None)
try:
    _EVENTS_FD = os.dup(4)
except OSError as _exc:
    try:
        os.write(2, b"jsheets driver: event descriptor 4 is not open\n")
    finally:
        os._exit(70)
# A sandbox started ahead of its request reads its components later, from fd 3.
_INPUT_FD = (os.dup(3) if isinstance(_INPUT, dict) and _INPUT.get("deferred") is True
             else None)
for _fd in (3, 4):
    try:
        os.close(_fd)
    except OSError:
        pass

import builtins
import io
from _json import encode_basestring as _encode_str  # what json.dumps(ensure_ascii=False) uses
from binascii import b2a_base64 as _b2a_base64

# Pin the builtins the driver uses, so user code that monkeypatches the
# builtins module (builtins.repr = ..., builtins.len = ...) cannot change the
# driver's behaviour.  Names defined below shadow these where they collide.
for _k, _v in vars(builtins).items():
    if _k[0] != "_":
        globals()[_k] = _v
_import = builtins.__import__  # rare paths import modules after user code ran

EX_SOFTWARE = 70
DRIVER_FILENAME = "<jsheets-driver>"  # must match python_bootstrap.py
PRELUDE_FILENAME = "<jsheets-prelude>"
TRUNCATION_MARKER = "... [truncated]"

_DRIVER_SOURCE = _INPUT.get("driver") if isinstance(_INPUT, dict) else None
_COLD_MARK = "\n#@cold "  # must match python_bootstrap.py
_os_write = os.write
_os_exit = os._exit
_ORIG_STDIO = (sys.stdout, sys.stderr)  # user code may rebind sys.stdout & co.
_state = {"forked": False}
_loaded = set()  # cold sections compiled so far


def _need(section):
    """Compile and run the cold section "#@cold SECTION" in these globals, once."""
    if section not in _loaded:
        source = _DRIVER_SOURCE
        start = source.index(_COLD_MARK + section + "\n") + 1
        end = source.find(_COLD_MARK, start)
        # Leading newlines keep the line numbers of this file.
        code = "\n" * source.count("\n", 0, start) + source[start:end if end > 0 else None]
        exec(compile(code, DRIVER_FILENAME, "exec", dont_inherit=True), globals())
        _loaded.add(section)


# --- Events ------------------------------------------------------------------

def _after_fork_in_child():
    # A forked child must never speak the protocol; if it ever returns into
    # the driver it exits silently at the next event (see _emit).
    _state["forked"] = True
    try:
        os.close(_EVENTS_FD)
    except OSError:
        pass


os.register_at_fork(after_in_child=_after_fork_in_child)


def _flush_stdio():
    seen = set()
    for stream in (sys.stdout, sys.stderr) + _ORIG_STDIO:
        if stream is not None and id(stream) not in seen:
            seen.add(id(stream))
            try:
                stream.flush()
            except BaseException:  # user-supplied stream objects may do anything
                pass


def _emit(event):
    _flush_stdio()
    if _state["forked"]:
        _os_exit(0)
    _write_event(event)


_JSON_CONSTANTS = {None: "null", True: "true", False: "false"}


def _encode_event(event):
    """The line json.dumps(event, ensure_ascii=False, separators=(",", ":"))
    writes, checking value types as json's C encoder does; None for value
    types other than None, bool, str and int."""
    parts = []
    for key, value in event.items():
        if value is None or value is True or value is False:
            text = _JSON_CONSTANTS[value]
        elif isinstance(value, str):
            text = _encode_str(value)
        elif isinstance(value, int):
            text = int.__repr__(value)
        else:
            return None
        parts.append(_encode_str(key) + ":" + text)
    return "{%s}\n" % ",".join(parts)


def _write_event(event):
    line = _encode_event(event)
    try:
        data = line.encode("utf-8")
    except (AttributeError, UnicodeEncodeError):  # unusual value types, lone surrogates
        _need("rare")
        data = _encode_event_slowly(event)
    _write_bytes(data)


def _write_bytes(data):
    view = memoryview(data)
    while view:
        try:
            written = _os_write(_EVENTS_FD, view)
        except OSError:
            _os_exit(EX_SOFTWARE)  # nobody is listening any more
        view = view[written:]


def _finish(status):
    _flush_stdio()
    _os_exit(status)


class _Internal(Exception):
    pass


# --- Running -------------------------------------------------------------------

_SOURCES = {}  # filename -> code, for linecache (cold section "lines")


class _LinecacheHook:
    """sys.meta_path entry that puts the component sources into linecache's
    cache when linecache is imported (the driver itself never imports it)."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        if name == "linecache":
            _need("lines")
            return _linecache_spec(path, target)


def _add_source(filename, code):
    _SOURCES[filename] = code
    if "linecache" in sys.modules:
        _need("lines")
        _register_sources()


# AST node classes, taken from a parse (importing ast costs milliseconds).
_tree = compile("_", DRIVER_FILENAME, "exec", 0x400, dont_inherit=True)  # ast.PyCF_ONLY_AST
_Expr = type(_tree.body[0])
_Module = type(_tree)
_Expression = type(compile("_", DRIVER_FILENAME, "eval", 0x400, dont_inherit=True))


def _compile_component(code, filename):
    """Return (exec_code or None, eval_code or None, line of the trailing expression)."""
    parsed = False
    try:
        tree = compile(code, filename, "exec", 0x400, dont_inherit=True)
        parsed = True
        body = tree.body
        last = body[-1] if body and isinstance(body[-1], _Expr) else None
        head = body[:-1] if last is not None else body
        exec_code = eval_code = None
        if head:
            exec_code = compile(_Module(body=head, type_ignores=[]), filename,
                                "exec", dont_inherit=True)
        if last is not None:
            flags = 0
            if exec_code is not None and exec_code.co_flags:
                _need("rare")
                flags = exec_code.co_flags & _future_mask()
            eval_code = compile(_Expression(body=last.value), filename, "eval",
                                flags, dont_inherit=True)
    except (SyntaxError, ValueError, OverflowError, MemoryError, RecursionError) as exc:
        # e.g. ValueError for NUL characters (3.11.2; later 3.11s raise
        # SyntaxError), RecursionError for absurdly nested code.  Compiling
        # the tree reports UTF-8 byte columns, the parser character columns.
        _need("syntax")
        raise _SyntaxProblem(_syntax_info(exc, code, parsed and isinstance(exc, SyntaxError)))
    return exec_code, eval_code, (last.lineno if last is not None else None)


_CONTAINERS = {bytearray, list, tuple, dict, set, frozenset}


def _bounded_repr(value, limit):
    """repr(value) cut to `limit` characters, as (text, truncated).

    Containers and bytearray go to _walk_repr (cold section "repr"), which
    never renders more than it needs; anything else is rendered by repr() and
    cut afterwards, exactly as _walk_repr would do it.
    """
    cls = type(value)
    if cls is str or cls is bytes:
        text = repr(value if len(value) <= limit else value[:limit + 1])
    elif cls in _CONTAINERS:
        _need("repr")
        return _walk_repr(value, limit)
    else:
        try:
            text = repr(value)
        except RecursionError:
            text = None
        if text is None:  # retried outside the except block, as _walk_repr does
            text = repr(value)
    if len(text) > limit:
        return text[:limit], True
    return text, False


def _parse_input(data):
    if not isinstance(data, dict):
        raise _Internal("input must be a JSON object")
    # Deferred: the components come after start-up (see _read_deferred).
    parsed = None if _INPUT_FD is not None else _parse_components(data)
    cfg = {"components": parsed,
           "traceback_frames": data.get("traceback_frames", "user"),
           "prelude": data.get("prelude")}
    if cfg["traceback_frames"] not in ("user", "all"):
        raise _Internal("'traceback_frames' must be 'user' or 'all'")
    if cfg["prelude"] is not None and not isinstance(cfg["prelude"], str):
        raise _Internal("'prelude' must be a string")
    access = cfg["access"] = data.get("access")
    if access is not None:
        _need("access")
        cfg["access"] = _parse_access(access)
    for key, default in (("max_value_chars", 10000), ("max_traceback_chars", 20000)):
        value = cfg[key] = data.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise _Internal("%r must be a positive integer" % key)
    return cfg


def _parse_components(data):
    components = data.get("components") if isinstance(data, dict) else None
    if not isinstance(components, list):
        raise _Internal("'components' must be a list")
    parsed = []
    for comp in components:
        if not (isinstance(comp, dict) and isinstance(comp.get("id"), str)
                and isinstance(comp.get("code"), str)):
            raise _Internal("each component needs string 'id' and 'code'")
        parsed.append((comp["id"], comp["code"]))
    return parsed


def _read_deferred():
    """The components of a sandbox started ahead of its request: a second JSON
    document on fd 3, after the first line, until EOF."""
    chunks = []
    while True:
        chunk = os.read(_INPUT_FD, 1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(_INPUT_FD)
    import _json
    scanner = _json.make_scanner(type("", (), dict(
        strict=True, object_hook=None, object_pairs_hook=None, parse_float=float,
        parse_int=int, parse_constant=float)))
    try:
        data = scanner(b"".join(chunks).decode().lstrip(" \t\n\r"), 0)[0]
    except (ValueError, StopIteration, UnicodeDecodeError) as exc:
        raise _Internal("unreadable deferred input: %s" % exc)
    return _parse_components(data)


class _EventStream(io.RawIOBase):
    """Raw writer behind sys.stdout / sys.stderr: Python-level output travels on the
    event channel, in order with the events, so the host attributes every byte to
    the component that wrote it. Output written to fd 1 and 2 directly (C code, child
    processes) still reaches the host on the real pipes."""

    def __init__(self, stream, fd):
        io.RawIOBase.__init__(self)
        self._fd = fd
        # The "output" event up to its data, as _encode_event would write it.
        self._head = b'{"event":"output","stream":"%s","data":"' % stream.encode()

    def writable(self):
        return True

    def fileno(self):
        return self._fd

    def isatty(self):
        return False

    def write(self, data):
        data = bytes(data)
        if _state["forked"]:
            # A forked child has no event channel: fall back to the raw descriptor.
            _need("rare")
            return _write_raw(self._fd, data)
        for start in range(0, len(data), 65536):
            _write_bytes(self._head + _b2a_base64(data[start:start + 65536], newline=False)
                         + b'"}\n')
        return len(data)


def _setup_stdio():
    stdin = getattr(sys, "stdin", None)
    if stdin is not None:
        try:
            stdin.reconfigure(encoding="utf-8", errors="surrogateescape")
        except BaseException:
            pass
    for name, fd, errors in (("stdout", 1, "surrogateescape"), ("stderr", 2, "backslashreplace")):
        stream = io.TextIOWrapper(io.BufferedWriter(_EventStream(name, fd)), encoding="utf-8",
                                  errors=errors, line_buffering=True, write_through=True)
        setattr(sys, name, stream)


def _run_component(cid, code, namespace, cfg):
    """Run one component; return an exit status if it raised SystemExit."""
    filename = "<%s>" % cid
    _emit({"event": "start", "id": cid})
    access = cfg["access"]
    if access is not None:
        _access_begin(cid, namespace)
    _add_source(filename, code)
    ok = True
    value_event = exit_status = expr_line = None
    in_repr = False
    try:
        exec_code, eval_code, expr_line = _compile_component(code, filename)
        if exec_code is not None:
            exec(exec_code, namespace)
        if eval_code is not None:
            value = eval(eval_code, namespace)
            if value is not None:
                in_repr = True
                builtins._ = None  # like sys.displayhook
                if access is not None:
                    _state["snippet_builtins"]["_"] = None
                text, truncated = _bounded_repr(value, cfg["max_value_chars"])
                builtins._ = value
                if access is not None:
                    _state["snippet_builtins"]["_"] = value
                if truncated:
                    text += TRUNCATION_MARKER
                value_event = {"event": "value", "id": cid, "repr": text,
                               "truncated": truncated}
            value = None
    except BaseException as exc:
        ok = False
        _need("rare")
        exit_status = _component_failed(cid, exc, filename, in_repr, expr_line, cfg)
    if exit_status is not None:
        _emit({"event": "exit", "id": cid, "code": exit_status})
        _emit({"event": "end", "id": cid, "ok": exit_status == 0})
        return exit_status
    if value_event is not None:
        _emit(value_event)
    _emit({"event": "end", "id": cid, "ok": ok})
    return None


def _main():
    data = _INPUT
    try:
        cfg = _parse_input(data)
    finally:
        if isinstance(data, dict):
            data.clear()  # the bootstrap still references it; drop the payload

    if "linecache" not in sys.modules:
        sys.meta_path.insert(0, _LinecacheHook)
    _setup_stdio()
    if cfg["prelude"] is not None:
        _need("rare")
        _run_prelude(cfg["prelude"])

    # A fresh module registered as __main__, so pickle, dataclasses, typing
    # and friends can resolve classes defined by components.
    main_module = type(sys)("__main__")
    main_module.__dict__["__builtins__"] = builtins
    if cfg["access"] is not None:
        _install_access(cfg["access"], main_module.__dict__)
    _state["previous_main"] = sys.modules.get("__main__")
    sys.modules["__main__"] = main_module
    if cfg["components"] is None:
        # Everything above ran before the request: say so, and wait for it.
        _write_event({"event": "ready"})
        cfg["components"] = _read_deferred()

    for cid, code in cfg["components"]:
        status = _run_component(cid, code, main_module.__dict__, cfg)
        if status is not None:
            _finish(status)
    _emit({"event": "done"})
    _finish(0)


try:
    _main()
except BaseException as _exc:
    _need("rare")
    _driver_failed(_exc)


# ==============================================================================
# Cold sections.  Never compiled at start-up (the bootstrap compiles only the
# source above the first "#@cold" line); _need() compiles one into the
# globals above the first time it is needed.
# ==============================================================================


#@cold lines
# Component sources in linecache: tracebacks, inspect, warnings, pdb show user
# lines from it, even if user code clears it.

_ENTRIES = {}  # filename -> (code, linecache entry)


def _split_lines(code):
    """Split at what Python's tokenizer counts as a line end: \\r\\n, \\r, \\n."""
    chunks = code.split("\n")
    last = len(chunks) - 1
    lines = []
    for i, chunk in enumerate(chunks):
        if "\r" in chunk:
            pieces = chunk.split("\r")
            lines.extend([p + "\r" for p in pieces[:-1]])
            chunk = pieces[-1]
            if not chunk and i < last:  # "\r\n"
                lines[-1] += "\n"
                continue
        if i < last:
            lines.append(chunk + "\n")
        elif chunk:
            lines.append(chunk)
    return lines


def _register_sources():
    module = sys.modules.get("linecache")
    if module is None:
        return
    try:
        cache = vars(module)["cache"]
        for filename, code in _SOURCES.items():
            known = _ENTRIES.get(filename)
            if known is None or known[0] is not code:
                lines = _split_lines(code)
                if lines and not lines[-1].endswith(("\n", "\r")):
                    lines[-1] += "\n"
                # mtime None: linecache.checkcache() never evicts the entry.
                known = _ENTRIES[filename] = (code, (len(code), None, lines, filename))
            cache[filename] = known[1]
    except Exception:  # sys.modules["linecache"] is not the real thing
        pass


def _linecache_spec(path, target):
    """find_spec for linecache, for _LinecacheHook: the spec the other finders
    give, with a loader that registers the sources once linecache has run."""
    meta_path = sys.meta_path
    if _LinecacheHook in meta_path:
        meta_path.remove(_LinecacheHook)  # its job ends with this import
    for finder in meta_path:
        find_spec = getattr(finder, "find_spec", None)
        spec = find_spec("linecache", path, target) if find_spec is not None else None
        if spec is not None:
            break
    else:
        return None
    loader = spec.loader
    if loader is None or isinstance(loader, type):
        return spec

    def exec_module(module):
        del loader.exec_module  # back to the loader's own method
        loader.exec_module(module)
        _register_sources()

    try:
        loader.exec_module = exec_module
    except (AttributeError, TypeError):
        pass
    return spec


#@cold rare
# Driver failures, SystemExit, the prelude and other rare paths; what the
# other sections share.

class _SyntaxProblem(Exception):
    pass  # args[0]: the "syntax_error" event's fields


def _internal(message):
    try:
        _emit({"event": "internal", "message": _truncate(message, 20000)})
    finally:
        _finish(EX_SOFTWARE)


def _driver_failed(exc):
    if isinstance(exc, _Internal):
        _internal(str(exc))
    _internal("driver error: %s: %s" % (_type_name(type(exc)), _safe_str(exc)))


def _clean(value):
    # Lone surrogates cannot be encoded as UTF-8 and are rejected by strict
    # JSON parsers when escaped; spell them out as visible text instead.
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            value = value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value


def _encode_event_slowly(event):
    event = {k: _clean(v) for k, v in event.items()}
    line = _encode_event(event)
    if line is None:  # value types _encode_event does not know
        json = _import("json")
        line = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode(event) + "\n"
    return line.encode("utf-8")


def _write_raw(fd, data):
    view = memoryview(data)
    while view:
        view = view[_os_write(fd, view):]
    return len(data)


def _future_mask():
    mask = _state.get("future_mask")
    if mask is None:
        future = _import("__future__")
        mask = 0
        for name in future.all_feature_names:
            mask |= getattr(future, name).compiler_flag
        _state["future_mask"] = mask
    return mask


def _truncate(text, limit):
    if len(text) <= limit:
        return text
    return text[:limit] + TRUNCATION_MARKER


def _safe_str(obj):
    try:
        return str(obj)
    except BaseException:
        return "<exception str() failed>"


def _type_name(cls):
    try:
        qualname = cls.__qualname__
        module = cls.__module__
    except BaseException:
        return "<unknown>"
    if not isinstance(qualname, str):
        return "<unknown>"
    if not isinstance(module, str) or module in ("builtins", "__main__"):
        return qualname
    return module + "." + qualname


def _component_failed(cid, exc, filename, in_repr, expr_line, cfg):
    """Handle `exc` from running a component (called in the except block): emit
    its "syntax_error" or "exception" event, or return the exit status for a
    SystemExit (the caller emits "exit" and "end")."""
    if isinstance(exc, _SyntaxProblem):
        event = {"event": "syntax_error", "id": cid}
        event.update(exc.args[0])
        _emit(event)
    elif isinstance(exc, SystemExit):
        return _exit_status(exc.code)
    elif cfg["access"] is not None and isinstance(exc, _ACCESS_ERRORS):
        pass  # its "violation" event was written when it was raised
    else:
        _need("traceback")
        line = _innermost_line(exc, filename)
        if line is None and in_repr:
            line = expr_line
        _emit({
            "event": "exception",
            "id": cid,
            "type": _type_name(type(exc)),
            "message": _truncate(_safe_str(exc), cfg["max_value_chars"]),
            "traceback": _format_traceback(exc, _keep_frame(cfg), cfg["max_traceback_chars"]),
            "line": line,
        })
    return None


def _exit_status(code):
    """Mirror CPython's handling of SystemExit.code."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    try:
        sys.stderr.write(_safe_str(code) + "\n")
    except BaseException:
        pass
    return 1


def _run_prelude(source):
    namespace = {"__name__": "__jsheets_prelude__", "__builtins__": builtins}
    try:
        exec(compile(source, PRELUDE_FILENAME, "exec", dont_inherit=True), namespace)
    except BaseException as exc:
        traceback = _import("traceback")
        detail = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        _internal("prelude failed: " + detail)


#@cold syntax
# Locating syntax errors.

_need("rare")
_need("lines")


def _positive_int(value):
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return None


def _strip_newlines(text):
    return text.replace("\r", "").replace("\n", "")


def _syntax_info(exc, code, byte_columns):
    """Describe a SyntaxError; S/E are character offsets into `code`."""
    starts = [0]
    pos = 0
    for text in _split_lines(code):
        pos += len(text)
        if text.endswith(("\n", "\r")):
            starts.append(pos)
    n = len(code)

    def line_bounds(lineno):
        begin = starts[lineno - 1]
        stop = starts[lineno] if lineno < len(starts) else n
        content_end = begin + len(_strip_newlines(code[begin:stop]))
        return begin, content_end

    def to_chars(lineno, col):
        # Compiler/symtable errors report UTF-8 byte columns (from the AST);
        # parser errors already report character columns.
        if not byte_columns or lineno is None or col is None or lineno > len(starts):
            return col
        begin, end = line_bounds(lineno)
        prefix = code[begin:end].encode("utf-8", "surrogatepass")[:col - 1]
        return len(prefix.decode("utf-8", "ignore")) + 1

    def offset(lineno, col):
        if lineno > len(starts):
            return n
        begin, end = line_bounds(lineno)
        return min(begin + (col or 1) - 1, end)

    line = _positive_int(getattr(exc, "lineno", None))
    column = _positive_int(getattr(exc, "offset", None))
    end_line = _positive_int(getattr(exc, "end_lineno", None))
    end_column = _positive_int(getattr(exc, "end_offset", None))
    column = to_chars(line, column)
    end_column = to_chars(end_line, end_column)

    if line is None and "\0" in code:
        # "source code string cannot contain null bytes" carries no location.
        pos = code.index("\0")
        line = max(i for i, s in enumerate(starts) if s <= pos) + 1
        column = pos - starts[line - 1] + 1
        end_line, end_column = line, column + 1

    if line is None:
        start = end = 0
    else:
        start = offset(line, column)
        end = None
        text = getattr(exc, "text", None)
        if isinstance(text, str) and line <= len(starts):
            begin, stop = line_bounds(line)
            if _strip_newlines(text) != code[begin:stop]:
                # Python reported a position in some other text (3.11 does
                # this for errors inside f-string replacement fields): mark
                # the whole line.
                start, end = begin, stop
        if end is None and end_line is not None and end_column is not None:
            end = offset(end_line, end_column)
        if end is None or end <= start:
            end = min(start + 1, n)
    return {
        "type": _type_name(type(exc)),
        "message": _safe_str(getattr(exc, "msg", None) or exc),
        "line": line,
        "column": column,
        "end_line": end_line,
        "end_column": end_column,
        "start": start,
        "end": max(start, end),
    }


#@cold traceback
# Tracebacks of exceptions from user code.

_need("rare")
_need("lines")


def _truncate_middle(text, limit):
    if len(text) <= limit:
        return text
    head = limit * 2 // 3
    tail = limit - head
    omitted = len(text) - head - tail
    return "%s\n... [%d characters truncated] ...\n%s" % (
        text[:head], omitted, text[len(text) - tail:])


def _keep_frame(cfg):
    """Which traceback frames to show, by filename."""
    if cfg["traceback_frames"] == "user":
        return {"<%s>" % cid for cid, _ in cfg["components"]}.__contains__
    hidden = {DRIVER_FILENAME, PRELUDE_FILENAME}
    return lambda filename: filename not in hidden


def _format_traceback(exc, keep_frame, limit):
    try:
        traceback = _import("traceback")
        _register_sources()
        root = traceback.TracebackException(type(exc), exc, exc.__traceback__,
                                            lookup_lines=False, compact=True)
        todo = [root]
        seen = set()
        while todo:
            te = todo.pop()
            if te is None or id(te) in seen:
                continue
            seen.add(id(te))
            te.stack = traceback.StackSummary.from_list(
                [f for f in te.stack if keep_frame(f.filename)])
            todo.append(te.__cause__)
            todo.append(te.__context__)
            todo.extend(getattr(te, "exceptions", None) or ())
        text = "".join(root.format())
    except BaseException:
        text = "%s: %s\n" % (_type_name(type(exc)), _safe_str(exc))
    return _truncate_middle(text, limit)


def _innermost_line(exc, filename):
    line = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == filename:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


#@cold repr
# Bounded repr of containers (_bounded_repr handles everything else).

class _Full(Exception):
    pass


_RECURSION_REPR = {
    list: "[...]", tuple: "(...)", dict: "{...}",
    set: "set(...)", frozenset: "frozenset(...)",
}


def _walk_repr(value, limit):
    """repr(value) cut to `limit` characters, as (text, truncated).

    Plain list/tuple/dict/set/frozenset and str/bytes/bytearray are rendered
    incrementally, so a huge container or string is never fully rendered.
    Anything else goes through repr() and is cut afterwards.
    """
    parts = []
    size = [0]
    active = set()

    def put(text):
        parts.append(text)
        size[0] += len(text)
        if size[0] > limit:
            raise _Full

    def items(iterable, separator=", "):
        first = True
        for item in iterable:
            if not first:
                put(separator)
            first = False
            walk(item)

    def walk(obj):
        cls = type(obj)
        if cls is str or cls is bytes:
            put(repr(obj if len(obj) <= limit else obj[:limit + 1]))
        elif cls is bytearray and len(obj) > limit:
            put("bytearray(")
            put(repr(bytes(obj[:limit + 1])))
        elif cls in _RECURSION_REPR:
            key = id(obj)
            if key in active:
                put(_RECURSION_REPR[cls])
                return
            active.add(key)
            try:
                if cls is list:
                    put("[")
                    items(obj)
                    put("]")
                elif cls is tuple:
                    put("(")
                    items(obj)
                    put(",)" if len(obj) == 1 else ")")
                elif cls is dict:
                    put("{")
                    first = True
                    for k, v in obj.items():
                        if not first:
                            put(", ")
                        first = False
                        walk(k)
                        put(": ")
                        walk(v)
                    put("}")
                else:
                    name = "set" if cls is set else "frozenset"
                    if not obj:
                        put(name + "()")
                    else:
                        put("{" if cls is set else "frozenset({")
                        items(obj)
                        put("}" if cls is set else "})")
            finally:
                active.discard(key)
        else:
            put(repr(obj))

    try:
        walk(value)
        return "".join(parts), False
    except _Full:
        return "".join(parts)[:limit], True
    except RecursionError:
        pass
    # The walk uses more stack per level than the builtin repr; let the
    # builtin decide whether deeply nested data is printable.  (Outside the
    # except block, so a failure is not chained to the walk's error.)
    del parts[:]
    text = repr(value)
    if len(text) > limit:
        return text[:limit], True
    return text, False


#@cold access
# Access-list enforcement (input member "access"); see "Access lists" in the
# module docstring.  The checking functions below (_access_*) never run as they
# are defined here: _private() rebinds each to a globals dict that holds nothing,
# not even builtins, and their state comes in one immutable tuple (bound with
# MethodType, or the hook's default argument) or generator locals.  So no name
# the snippet can reach or rebind (driver globals, builtins, closure cells,
# __kwdefaults__) changes a verdict.

class AccessDeniedError(PermissionError):
    """An operation the access list denies (the snippet may catch it)."""


class AccessDeniedImportError(ImportError):
    """An import the access list denies (the snippet may catch it)."""


AccessDeniedError.__module__ = AccessDeniedImportError.__module__ = "jsheets"
_ACCESS_ERRORS = (AccessDeniedError, AccessDeniedImportError)
_FunctionType = type(_need)
_MethodType = type(_need.__get__(0))
_MappingProxyType = type(type.__dict__)

# Audit events checked as another reference than their own name.
_ACCESS_EVENT_REFERENCES = {
    "open": "builtins.open",  # open(), io.open_code(), os.open()
    "exec": "builtins.exec",  # exec() and eval()
    "compile": "builtins.compile",
    "builtins.input/result": "builtins.input",
    "function.__new__": "types.FunctionType",
    "code.__new__": "types.CodeType",
}
# Events whose reference depends on their arguments (see _access_hook).
_ACCESS_SPECIAL_EVENTS = ("import", "jsheets.check", "object.__getattr__",
                          "object.__setattr__", "object.__delattr__")
# Notifications of the interpreter, not something the snippet does; "cpython.*"
# events are never checked either.
_ACCESS_IGNORED_EVENTS = ("sys.unraisablehook", "sys.excepthook")
# Frequent events, answered from a precomputed table.
_ACCESS_FREQUENT_EVENTS = ("marshal.loads", "marshal.load", "os.listdir", "os.scandir",
                           "sys._getframe", "builtins.id", "builtins.input", "time.sleep",
                           "pickle.find_class", "os.exec", "os.system", "os.fork",
                           "os.posix_spawn", "subprocess.Popen", "socket.__new__",
                           "socket.connect", "ctypes.dlopen", "gc.get_objects")
# Attributes that reach frames (object.__getattr__ & co. events): checked as
# sys._getframe.
_ACCESS_FRAME_ATTRIBUTES = frozenset((
    "tb_frame", "gi_frame", "cr_frame", "ag_frame", "f_back", "f_globals",
    "f_builtins", "f_locals", "f_code", "gi_code", "cr_code", "ag_code"))
# Function attributes whose assignment makes another function (checked as
# types.FunctionType): a library function given snippet code runs as library code.
_ACCESS_FUNCTION_ATTRIBUTES = frozenset(("__code__", "__defaults__", "__kwdefaults__"))
_ACCESS_SPECIAL = object()
_ACCESS_MAX_REFERENCE = 1000
# Module attributes that protocols probe (repr, pickle, inspect, pydoc use
# getattr with a default or hasattr): never denied as attributes of a partial
# module or of the snippet's __builtins__; absent ones are AttributeErrors.
_ACCESS_MODULE_METADATA = frozenset((
    "__name__", "__doc__", "__package__", "__loader__", "__spec__", "__file__", "__cached__",
    "__path__", "__all__", "__builtins__", "__dict__", "__class__", "__getattr__", "__dir__"))
_ACCESS_WALKERS = 4


def _parse_access(value):
    """Validate the "access" input member; return (list name, {segments: allow})
    where a later rule for the same segments replaces an earlier one."""
    if not isinstance(value, dict) or set(value) != {"list", "rules"}:
        raise _Internal("'access' must be an object with the members 'list' and 'rules'")
    name, rules = value["list"], value["rules"]
    if not isinstance(name, str) or not name:
        raise _Internal("'access.list' must be a non-empty string")
    if not isinstance(rules, list):
        raise _Internal("'access.rules' must be a list")
    table = {}
    for rule in rules:
        if not (isinstance(rule, list) and len(rule) == 2 and isinstance(rule[0], list)
                and rule[0] and isinstance(rule[1], bool)
                and all(isinstance(s, str) and s and "." not in s for s in rule[0])):
            raise _Internal("each 'access.rules' entry must be [[SEGMENT, ...], true|false] "
                            "with non-empty segments without '.', not %r" % (rule,))
        table[tuple(rule[0])] = rule[1]
    return name, table


def _private(func):
    """`func` rebound to globals that hold nothing, not even builtins."""
    return _FunctionType(func.__code__, {"__builtins__": {}}, func.__name__)


def _install_access(access, namespace):
    """Build the snippet builtins and install the audit hook; before the first
    component, after the prelude (which runs unchecked)."""
    list_name, table = access
    allow = frozenset(k for k, v in table.items() if v)
    deny = frozenset(k for k, v in table.items() if not v)
    deny_below = frozenset(k[:i] for k in deny for i in range(1, len(k)))
    allowed = _MethodType(_private(_access_allowed), (allow, deny, deny_below, tuple))
    audit = sys.audit

    def message(reference):
        return "`%s` is not allowed by the access list %s" % (reference, list_name)

    import_globals = {"__builtins__": {}}
    import_function = _FunctionType(_access_import.__code__, import_globals, "__import__",
                                    _access_import.__defaults__)
    # Modules denied whole but with allowed members (`!sys`, `sys.stdout`): `import
    # sys` gives a module holding only those members; its other members are
    # denied by its __getattr__.
    partial = frozenset(k[0] for k in allow if len(k) > 1 and not allowed(k[0]))
    denial = (audit, AccessDeniedError, list_name, _ACCESS_MODULE_METADATA, type, str,
              "".join, isinstance)
    proxy = _MethodType(_private(_access_proxy),
                        (allowed, type(sys), dir, getattr, setattr, frozenset, _MethodType,
                         _private(_access_partial_getattr), AttributeError, denial))
    import_state = (audit, builtins.__import__, "".join, int.__index__, tuple, str, int, type,
                    isinstance, TypeError, partial, proxy)
    make_stub = _private(_access_stub_maker)(audit, AccessDeniedError)
    # The snippet's __builtins__: a module, as in __main__, whose dict (what the
    # snippet's frames look names up in) holds the stubs and the import wrapper.
    # Reading a stubbed name as its attribute or item is itself denied; __import__
    # is the wrapper there too (C code importing for the snippet, time.strptime,
    # gets it as an attribute), which checks what it imports.
    denied_builtins = frozenset(name for name in vars(builtins)
                                if not allowed("builtins." + name) and name != "__import__"
                                and name not in _ACCESS_MODULE_METADATA)
    builtins_state = (denied_builtins, type(sys).__getattribute__) + denial
    checked_type = type("CheckedBuiltins", (type(sys),), {
        "__module__": "jsheets",
        "__doc__": "The builtins of snippet code, checked against the access list.",
        "__getattribute__": _FunctionType(_access_builtins_getattribute.__code__,
                                          {"__builtins__": {}}, "__getattribute__",
                                          (builtins_state,)),
        "__getitem__": _FunctionType(_access_builtins_getitem.__code__, {"__builtins__": {}},
                                     "__getitem__", (builtins_state,)),
    })
    checked_builtins = checked_type("builtins")
    snippet_builtins = type(sys).__getattribute__(checked_builtins, "__dict__")
    for name, value in vars(builtins).items():
        reference = "builtins." + name
        if name == "__import__":
            value = _MethodType(import_function, import_state)
        elif not allowed(reference):
            value = make_stub(name, reference, message(reference))
        snippet_builtins[name] = value

    refs = {}
    for event in _ACCESS_FREQUENT_EVENTS:
        refs[event] = None if allowed(event) else event
    for event, reference in _ACCESS_EVENT_REFERENCES.items():
        refs[event] = None if allowed(reference) else reference
    for event in _ACCESS_IGNORED_EVENTS:
        refs[event] = None
    for event in _ACCESS_SPECIAL_EVENTS:
        refs[event] = _ACCESS_SPECIAL

    bottom = sys._getframe()  # the main thread's outermost frame: the bootstrap's
    while bottom.f_back is not None:
        bottom = bottom.f_back
    walker = _private(_access_walker)
    walks = []
    for _ in range(_ACCESS_WALKERS):
        gen = walker(namespace, snippet_builtins, vars(sys.modules["_frozen_importlib"]),
                     vars(sys.modules["_frozen_importlib_external"]), bottom)
        next(gen)
        gen.send(gen.gi_frame)
        walks.append(gen.send)
    # Reporters: like the walkers, several, so that threads do not wait; they
    # share what was reported (in their frames only) and the current component,
    # which _access_begin sets.
    current, seen = [None], {}
    reporter = _private(_access_reporter)
    reports = []
    for _ in range(_ACCESS_WALKERS):
        gen = reporter(_emit, os.getpid, current, seen, tuple, str, type, BaseException)
        next(gen)
        reports.append(gen.send)

    hook_state = (_MappingProxyType(refs), _ACCESS_SPECIAL, allowed, _ACCESS_FRAME_ATTRIBUTES,
                  _ACCESS_FUNCTION_ATTRIBUTES, tuple(walks), tuple(reports), import_globals,
                  import_state, AccessDeniedError, AccessDeniedImportError, ValueError, str,
                  type, "".join, list_name, _ACCESS_MAX_REFERENCE)
    # A function with its state as default, not a bound method: for every event
    # CPython looks up __cantrace__ on each hook, and on a method that lookup
    # fails through to the function, an exception each time.
    sys.addaudithook(_FunctionType(_access_hook.__code__, {"__builtins__": {}}, "_access_hook",
                                   (hook_state,)))
    _state["snippet_builtins"] = snippet_builtins
    namespace["__builtins__"] = _state["checked_builtins"] = checked_builtins
    _state["access_current"] = current


def _access_begin(cid, namespace):
    """At the start of each component: the snippet may have rebound __builtins__."""
    namespace["__builtins__"] = _state["checked_builtins"]
    _state["access_current"][0] = cid


# --- Private functions: see _private().  No global names, no builtins. ---------

def _access_allowed(rules, reference):
    """Whether the list allows `reference` (a str): the rule with the most
    segments that are a prefix of its segments decides; none: denied.  "a.b.*"
    (import *) is allowed when a.b is and no deny rule lies below a.b."""
    allow, deny, deny_below, tuple_ = rules
    if reference[-2:] == ".*":
        key = tuple_(reference[:-2].split("."))
        if key in deny_below:
            return False
    else:
        key = tuple_(reference.split("."))
    while key:
        if key in allow:
            return True
        if key in deny:
            return False
        key = key[:-1]
    return False


def _access_import(state, name, globals=None, locals=None, fromlist=(), level=0):
    """The snippet's __import__: checks what the import binds, then imports with
    the real __import__ (which then runs unchecked: library code)."""
    (audit, real_import, exact_str, exact_int, tuple_, str_, int_, type_, isinstance_,
     type_error, partial, proxy) = state
    if type_(name) is not str_:
        if not isinstance_(name, str_):
            return real_import(name, globals, locals, fromlist, level)  # TypeError
        name = exact_str((name,))
    if type_(level) is not int_:
        if not isinstance_(level, int_):
            return real_import(name, globals, locals, fromlist, level)  # TypeError
        level = exact_int(level)
    if level:
        # Snippets are no package: resolving would only follow a forged __package__.
        audit("jsheets.check", "<relative import>", "import")
    elif not name:
        return real_import(name, globals, locals, fromlist, level)  # ValueError
    if fromlist:
        names = []
        for item in fromlist:
            if type_(item) is not str_:
                if not isinstance_(item, str_):
                    raise type_error("Item in from list must be str, not %s"
                                     % type_(item).__name__)
                item = exact_str((item,))
            audit("jsheets.check", name + (".*" if item == "*" else "." + item), "import")
            names.append(item)
        return real_import(name, globals, locals, tuple_(names), level)
    if not level and name in partial:
        return proxy(name, real_import(name, globals, locals, None, level))
    prefix = None
    for part in name.split("."):
        prefix = part if prefix is None else prefix + "." + part
        audit("jsheets.check", prefix, "import")
    return real_import(name, globals, locals, None, level)


def _access_proxy(state, name, module):
    """A module named `name` with only the members of `module` the list allows
    (copied now), for `import NAME` of a module that is denied but for members.
    Its __getattr__ (PEP 562) denies the members the list denies (but module
    metadata, which protocols probe) and raises AttributeError for the rest."""
    (allowed, module_type, dir_, getattr_, setattr_, frozenset_, method_type, missing,
     attribute_error, denial) = state
    metadata = denial[3]
    copy = module_type(name)
    denied = []
    for attr in dir_(module):
        if allowed(name + "." + attr):
            setattr_(copy, attr, getattr_(module, attr))
        elif attr not in metadata:
            denied.append(attr)
    if "__getattr__" not in copy.__dict__:
        setattr_(copy, "__getattr__",
                 method_type(missing, (name, frozenset_(denied), attribute_error) + denial))
    return copy


def _access_partial_getattr(state, attr):
    """The __getattr__ of a module from _access_proxy: `attr` is not in it."""
    (name, denied, attribute_error, audit, denied_error, list_name, metadata, type_, str_,
     exact_str, isinstance_) = state
    if type_(attr) is not str_ and isinstance_(attr, str_):
        attr = exact_str((attr,))
    if attr in denied:
        reference = name + "." + attr
        audit("jsheets.check", reference, "permission")
        # not reached unless the hook was tampered with
        raise denied_error("`%s` is not allowed by the access list %s" % (reference, list_name))
    raise attribute_error("module '%s' has no attribute '%s'" % (name, attr))


def _access_builtins_getattribute(self, name, state=None):
    """__getattribute__ of the snippet's __builtins__ (its state is the default of
    `state`): a name the list denies is denied, the rest as for any module."""
    (denied, getattribute, audit, denied_error, list_name, metadata, type_, str_, exact_str,
     isinstance_) = state
    if type_(name) is not str_ and isinstance_(name, str_):
        name = exact_str((name,))
    if name in denied:
        audit("jsheets.check", "builtins." + name, "permission")
        raise denied_error("`builtins.%s` is not allowed by the access list %s"
                           % (name, list_name))
    return getattribute(self, name)


def _access_builtins_getitem(self, name, state=None):
    """__getitem__ of the snippet's __builtins__ (code written for a module other
    than __main__, where __builtins__ is a dict): like an attribute, KeyError for
    a name that is not there."""
    (denied, getattribute, audit, denied_error, list_name, metadata, type_, str_, exact_str,
     isinstance_) = state
    if type_(name) is not str_ and isinstance_(name, str_):
        name = exact_str((name,))
    if type_(name) is str_ and name in denied:
        audit("jsheets.check", "builtins." + name, "permission")
        raise denied_error("`builtins.%s` is not allowed by the access list %s"
                           % (name, list_name))
    return getattribute(self, "__dict__")[name]


def _access_stub_maker(audit, error):
    def make(name, reference, message):
        def stub(*args, **kwargs):
            audit("jsheets.check", reference, "permission")
            raise error(message)  # not reached unless the hook was tampered with

        stub.__name__ = stub.__qualname__ = name
        stub.__module__ = "builtins"
        return stub

    return make


def _access_walker(namespace, snippet_builtins, bootstrap, bootstrap_external, bottom):
    """Generator: each send(None) from the audit hook answers who caused the
    event, as (snippet, child, importing, driver): snippet: a frame of snippet
    code is on the stack; child: the frame nearest to it (not importlib) that it
    called, or None if the event came from the snippet frame itself; importing:
    importlib frames lie between; driver: no snippet frame, and the stack ends
    in the main thread's outermost frame.  (Its own frame, sent at set-up, gives
    the hook's caller without sys._getframe and its audit event.)"""
    me = yield
    answer = None
    while True:
        yield answer
        hook = me.f_back
        f = hook.f_back if hook is not None else None
        child = last = None
        importing = False
        while f is not None:
            g = f.f_globals
            if g is namespace or f.f_builtins is snippet_builtins:
                break
            if g is bootstrap or g is bootstrap_external:
                importing = True
            else:
                child = f
            last = f
            f = f.f_back
        if f is not None:
            answer = (True, child, importing, False)
        else:
            answer = (False, None, importing, last is bottom)


def _access_reporter(emit, getpid, current, seen, tuple_, str_, type_, base_exception):
    """Generator: receives (REFERENCE, MESSAGE) and writes the "violation"
    event, once per (component, reference) (current[0]: the component); not in
    a forked child."""
    pid = getpid()
    while True:
        item = yield
        if type_(item) is not tuple_ or item.__len__() != 2:
            continue
        reference, message = item
        if type_(reference) is not str_ or type_(message) is not str_ or getpid() != pid:
            continue
        cid = current[0]
        key = (cid, reference)
        if key not in seen:
            seen[key] = True
            try:
                emit({"event": "violation", "id": cid, "reference": reference,
                      "message": message})
            except base_exception:
                pass


def _access_hook(event, args, state=None):
    """The audit hook (its state is the default of `state`)."""
    ref = state[0].get(event, state)  # state: no precomputed answer
    if ref is None:
        return
    (refs, special, allowed, frame_attributes, function_attributes, walks, reports,
     import_globals, import_state, denied_error, denied_import_error, value_error, str_,
     type_, exact_str, list_name, max_reference) = state
    kind = "permission"
    walk = True
    if ref is state:  # the event's own name is the reference
        if event[:8] == "cpython.":
            return
        ref = event.partition("/")[0]
        if allowed(ref):
            return
    elif ref is special:
        if event == "import":
            ref = args[0]
            if type_(ref) is not str_:
                ref = exact_str((ref,))
            kind = "import"
        elif event == "jsheets.check":  # from the import wrapper and the stubs
            ref, kind = args
            if type_(ref) is not str_ or type_(kind) is not str_:
                return
            walk = False
        else:  # object.__getattr__, object.__setattr__, object.__delattr__
            attribute = args[1]
            if type_(attribute) is not str_:
                return
            if attribute in frame_attributes:
                ref = "sys._getframe"
            elif attribute in function_attributes and event != "object.__getattr__":
                ref = "types.FunctionType"
            else:
                return
        if allowed(ref):
            return
    if walk:  # the reference is denied: did snippet code cause the event?
        answer = None
        while answer is None:
            for send in walks:
                try:
                    answer = send(None)
                except value_error:  # running in another thread
                    continue
                break
        snippet, child, importing, driver = answer
        if snippet:
            if child is not None:  # library code the snippet called raised it
                if importing:
                    return  # while the library imports (it checked nothing itself)
                g = child.f_globals
                if kind == "import":
                    # A library's own imports are not checked, but the import
                    # wrapper's only with its own state (not re-driven by hand).
                    if g is not import_globals or child.f_locals.get("state") is import_state:
                        return
                else:
                    name = g.get("__name__")
                    if type_(name) is str_ and allowed(name):
                        return
        elif driver:
            return
    if ref[max_reference:]:
        ref = ref[:max_reference] + "... [truncated]"
    message = "`%s` is not allowed by the access list %s" % (ref, list_name)
    sent = False
    while not sent:
        for send in reports:
            try:
                send((ref, message))
            except value_error:  # running in another thread, or below us
                continue
            sent = True
            break
    if kind == "import":
        raise denied_import_error(message, name=ref)
    raise denied_error(message)
