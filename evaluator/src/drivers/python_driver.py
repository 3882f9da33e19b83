"""jsheets Python driver (runs inside the sandbox, Python 3.11).

Started as ``/usr/bin/python3.11 -I -c BOOTSTRAP`` (see python_bootstrap.py).
The bootstrap reads one JSON document from fd 3 (until EOF) and exec()s the
"driver" member (this file; only its hot part, see "Start-up cost" below)
with the globals

    {"__name__": "__jsheets_driver__", "__builtins__": builtins,
     "__jsheets_input__": <the parsed JSON document>}

The protocol (what comes in on fd 3, the events written on fd 4, the exit
codes) is specified in PROTOCOL.md beside this file, and only there.

In short: the input is one JSON object; with "deferred": true the driver
starts, installs the access hooks, writes "ready" and then reads the
components; every "start" is followed by exactly one "end"; output events
carry what Python code writes to sys.stdout / sys.stderr, which are flushed
before any other event is written.  A forked child has no event channel (it
is closed in the child): what it writes goes to fd 1 and fd 2 as it writes
it, on pipes of their own, so it is ordered with the parent's output only as
writes on two pipes can be.  What the child wrote before the parent writes an
event comes before that event for a reader that drains stdout and stderr
after each read of the channel (the child's output before the parent's print
after os.waitpid).  Output the parent wrote before the fork may still be
unread on the channel when the child writes, so the child's output can land
between two of those output events.

This protocol is not a trust boundary: user code runs in this same process.
The event descriptor is moved to a random free number in the upper half of
the descriptor limit, and under an access list nothing the snippet may reach
writes to a raw descriptor or opens one (see "Access lists"), but without a
list the snippet can simply import os.  The host must treat the event stream
as untrusted input.

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
  AttributeError or KeyError), getattr, setattr, delattr, hasattr, vars,
  globals, locals, __build_class__ (and compile, exec, eval where the list
  allows them) are the checked versions of "Attributes" below, and
  __import__ is a wrapper that checks what an import binds: `import a.b.c`
  checks a, a.b and a.b.c; `from a.b import x` checks a.b.x (so rules
  `!os` + `os.path` allow `from os import path`, not `import os.path`);
  `from a.b import *` checks a.b.*, allowed when a.b is and no deny rule lies
  below it; a relative import is denied as `<relative import>` (a snippet is
  no package).  What an import gives is the module as "Modules" below makes
  it (`import builtins`: the snippet's __builtins__).  __builtins__ is reset
  at each component start.  Library modules keep the real builtins, so what
  they import for themselves is not checked.  C code that imports for the
  snippet (time.strptime imports _strptime) goes through the snippet's
  __import__ and is checked: the list has to allow such helper modules.
* An audit hook (sys.addaudithook; it cannot be removed) checks the events
  snippet code causes.  Snippet code: a frame whose f_builtins is that dict or
  whose f_globals is the components' namespace (exec/eval with fresh globals,
  spoofed filenames and a rebound __builtins__ stay snippet code).  Events:
  import -> the module; open (also io.open_code, os.open, FileIO) ->
  builtins.open, but a descriptor above 2 -> `<descriptor N>`; exec (also
  eval) -> builtins.exec; compile (also ast.parse) -> builtins.compile;
  function.__new__ -> types.FunctionType; code.__new__ -> types.CodeType;
  object.__getattr__/__setattr__/__delattr__ of frame-reaching attributes
  (tb_frame, gi_frame, cr_frame, ag_frame, f_back, f_globals, f_builtins,
  f_locals, f_code, gi_code, ...) -> sys._getframe, assignments to a
  function's __code__/__defaults__/__kwdefaults__ -> types.FunctionType;
  "cpython.*", sys.unraisablehook and sys.excepthook are not checked; any
  other event is its own name, up to a "/" (os.system, subprocess.Popen,
  socket.connect, ctypes.dlopen, sys._getframe, sys.settrace, time.sleep).
  Who caused an event: walking up from the frame that raised it, skipping
  importlib's frames and the checked wrappers' (they act for their caller), to
  the first snippet frame S.  The event is checked if it came from S itself
  (importlib frames between: the snippet imported with the real __import__,
  so the loader's file access is checked too), or from library code S called
  directly whose module (f_globals["__name__"]) the list denies, unless that
  library was importing; imports done by library code are not checked (but the
  import wrapper's own, re-driven with forged state, are).  Whoever causes
  them while a snippet runs (library code too, but not a library importing):
  opening a descriptor above 2, processes (os.system, os.exec*, os.spawn*,
  os.posix_spawn*, os.fork, os.forkpty, subprocess.Popen), os.kill(pg),
  socket.*, ctypes.*, mmap.__new__, sys.settrace/setprofile/_current_frames/
  addaudithook, gc.get_objects/referrers/referents, pickle.find_class (any
  unpickling of a global: pandas.read_pickle, numpy.load(allow_pickle=True))
  and marshal.load(s) are checked, a descriptor whatever the list says (the
  computing libraries do none of that for a snippet: pandas' show_versions
  trying `uname -p` gets a violation it catches); and text that library code
  compiles (typing's forward references, pandas.eval and DataFrame.query,
  dataclasses' generated methods) may not name __globals__, __code__,
  __closure__, __builtins__, __subclasses__, __bases__, __base__, __mro__,
  __self__, __func__, __reduce__, __reduce_ex__, __getstate__, __dict__,
  __wrapped__, __loader__, __spec__, __getattribute__, __import__,
  __defaults__, __kwdefaults__, f_globals, f_locals, f_back, f_builtins,
  tb_frame, gi_frame, cr_frame, ag_frame or cell_contents (a violation
  `<attribute NAME>`).  No snippet frame: the driver's own work in the main
  thread is not checked; in another thread (started by the snippet) the event
  is checked as snippet code's.
* A violation raises AccessDeniedImportError (an ImportError; for import
  events and the wrapper) or AccessDeniedError (a PermissionError), message
  "`REF` is not allowed by the access list NAME", and at once writes a
  "violation" event, once per (component, reference).  One that ends a
  component gets no "exception" event (the violation is the report); the
  component ends with ok false and the next ones run, as after an exception.

Attributes.  Snippet code may read any object's public attributes and the
dunders of protocols and metadata (__init__, __new__, __name__, __qualname__,
__doc__, __module__, __class__, the operator and container methods, __enter__/
__exit__, __call__, __get__/__set__, __post_init__, __slots__, __match_args__,
__members__, __version__, __all__, __file__, __traceback__, __cause__,
__context__, __notes__, __args__, __origin__, ...: _ATTR_SAFE), and the
namedtuple API (_asdict, _replace, _make, _fields, _field_defaults) of
anything but a module.  It may not use frame, code and cell internals
(f_back, f_globals, f_locals, f_builtins, f_code, tb_frame, gi_frame,
gi_code, cr_frame, ag_frame, every co_*, cell_contents), mro, or any other
dunder (__globals__, __code__, __closure__, __builtins__, __self__, __func__,
__subclasses__, __bases__, __base__, __mro__, __reduce__, __reduce_ex__,
__getstate__, __wrapped__, __spec__, __loader__, __defaults__, ...); it may
write or delete only its own objects' dunders, and of those only the readable
ones but __class__ and __module__ (C.__repr__ = ..., f.__name__ = ...), and
__dict__ and __annotations__.  Private names (_x, and __x as the
compiler mangles it), __dict__, __annotations__, and __getattribute__/
__getattr__/__setattr__/__delattr__ bound to an instance are its own objects'
only: the classes its class statements made (and that say so: __module__ is
__main__) whose bases are its own, builtin (non-heap) types, abc.ABC,
typing.Generic or typing.Protocol, their instances and super() of them, the
functions of its namespace; an attribute that a class of the MRO not its own
defines is not its own (so `class R(random.Random)` cannot read or set
R()._randbelow, and what a library method of a base reads, the snippet does
not write).  Never a module's.  The rule is enforced:
* before the code runs: each component (and what the snippet's compile, exec
  and eval compile, where the list allows them) is parsed and its tree
  checked; a name no object's may be used (obj.__globals__, in an f-string, in
  a class pattern's keywords) or a positional class pattern (`case C(x)`,
  whose attributes the class's __match_args__ names: write `case C(x=x)`) is
  a violation `<attribute NAME>` / `<positional class pattern>`, every one in
  the component in source order, and the component does not start;
  obj.NAME where the verdict depends on obj (private names, __dict__ & co,
  format and format_map) becomes jsheets.attribute[obj, 'NAME'] (Load, Store,
  Del, augmented), a checked accessor in the snippet builtins whose name no
  source can spell (rebinding it, or __builtins__, gives code that cannot
  read a private attribute at all);
* when used, for dynamic names: getattr, setattr, delattr, hasattr (a denied
  name is a violation, not False or the default), vars(obj) (as
  obj.__dict__), operator.attrgetter and methodcaller of the modules given to
  the snippet, str.format/format_map got through the accessor or getattr
  (a field "{0.NAME}" with a name the rule does not allow to every object);
  globals(), locals() and vars() give their caller's only if it is snippet
  code (library code given them as callbacks gets a TypeError, not its own
  module's globals).  A runtime denial names the module (`random._os`,
  `sys._getframe`) or `<attribute NAME>`.

Modules.  A module the snippet gets (import, or a module-valued member of one
it got) is a new module holding the real one's public members that the list
allows and that are not a function or class of a module a rule denies
(functools.RLock is _thread's: `_thread.RLock`; pandas.io.common.Path:
`pathlib.Path`), unless a rule for that very member allows it (io.StringIO
is _io's); text metadata and a copy of __all__ (not __path__, __spec__,
__loader__, __builtins__); operator.attrgetter/methodcaller,
functools.update_wrapper/wraps (which write only the snippet's own wrapper,
read from `wrapped` what the rule lets them, and copy only public entries of
a __dict__ not the snippet's) and dataclasses.dataclass (field names must be
identifiers, the class's __module__ __main__, its metaclass not the
snippet's: the code it generates and the globals that code runs with) in
checked versions.  Its __getattr__ gives later additions and submodules (a
module-valued member as allowed by its own name, or by a rule for its path:
`os.path` gives posixpath as os.path), denies private and denied members
(`random._os`, `sys.modules`), and raises AttributeError for absent ones (and
for absent metadata that protocols probe); dir() lists what it gives.  One
per real module and name, so `json is json`; the real builtins module (as
enum.bltns) is the snippet's __builtins__.  Assignments to a module's
attributes change the snippet's module, not the library's.

The event channel.  Its descriptor is at a random free number (see "Take
over the protocol descriptors"); opening any descriptor above 2 is denied
whoever does it (open(5), FileIO(5), a FileIO re-initialized in place);
os.write & co, socket, mmap, fcntl are denied modules; the stream objects
behind sys.stdout/sys.stderr (sys.stdout.buffer.raw, reachable) take no
attribute assignments, and new or re-initialized ones can only be "stdout" or
"stderr", whose event header is fixed: what goes on the channel is the data,
encoded; numpy's ndarray.tofile(obj_with_fileno) imports os for the snippet
(denied).

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

This is a policy, not a boundary (the OS sandbox is).  Known gaps:
* native memory: numpy is allowed, and numpy.lib.stride_tricks.as_strided or
  a class with __array_interface__ (a dunder the snippet may define) read and
  write any address of the process, which ends every in-process rule;
* library code that reads attributes by names it is given, on objects that
  are not modules (modules given to the snippet check their own members):
  pandas' DataFrame.agg("name") & co read attributes of pandas objects (and
  of numpy); library code that stores real modules or denied functions on
  its own objects' public attributes hands them out (none known in the
  allowed standard library; the module members are filtered, not every
  object's);
* frames are denied as attributes, not as objects: allowed library functions
  that return frames (traceback.walk_stack, traceback.walk_tb) give frames
  that can be passed to other library code, which reads them (only text
  comes back from the allowed ones: StackSummary with capture_locals gives
  reprs of the driver's locals);
* str.format on text that library code formats for the snippet (a format
  string handed to a library) is not checked: text only;
* not the snippet's own, so without private attributes (a usability limit):
  classes made by type() or a metaclass call, subclasses of library classes;
  and format strings read no private attribute, not even of its own objects;
* dataclasses.dataclass checks the field names it is given once, before the
  class is processed: a descriptor default that rewrites the class's
  __annotations__ during processing gets past it (the generated code then
  runs with the snippet's globals, where the backstop for compiled text and
  the module members still hold);
* the check of the snippet's own objects costs a call per private attribute
  access (about 0.3 microseconds once a class is known).
"""

import os
import sys

# --- Take over the protocol descriptors before anything opens a file. -------
# The bootstrap opened fd 3 with closefd=False, so it is still open here and
# dup(4) cannot land on it.  os.dup() returns a non-inheritable descriptor.  The
# event descriptor goes to a free number picked at random in the upper half of
# what the descriptor limit allows, so that no guess at it (os.write(5, ...))
# reaches it: nothing the snippet may use writes to a raw descriptor anyway.
_INPUT = globals().pop("__jsheets_input__", None)


def _event_descriptor():
    try:
        limit = os.sysconf("SC_OPEN_MAX")
        low = max(16, limit // 2)
        for _ in range(8 if limit - low >= 8 else 0):
            fd = low + int.from_bytes(os.urandom(4), "little") % (limit - low)
            try:
                os.fstat(fd)
            except OSError:
                return os.dup2(4, fd, inheritable=False)
    except (OSError, ValueError):
        pass
    return os.dup(4)


try:
    _EVENTS_FD = _event_descriptor()
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
        transform = _state.get("transform")
        if transform is not None:  # an access list: checks and rewrites attribute access
            transform(tree)
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
           "zygote": _INPUT_FD is not None and data.get("zygote") is True,
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


# Per stream: the "output" event up to its data, as _encode_event would write it,
# and the real descriptor.
_STREAMS = {"stdout": (b'{"event":"output","stream":"stdout","data":"', 1),
            "stderr": (b'{"event":"output","stream":"stderr","data":"', 2)}


class _EventStream(io.RawIOBase):
    """Raw writer behind sys.stdout / sys.stderr: Python-level output travels on the
    event channel, in order with the events, so the host attributes every byte to
    the component that wrote it. Output written to fd 1 and 2 directly (C code, child
    processes) still reaches the host on the real pipes.  Snippet code reaches it
    (sys.stdout.buffer.raw) and may make more or re-initialize it, but for one of
    the two streams only: what goes on the channel is the data, encoded."""

    def __init__(self, stream):
        io.RawIOBase.__init__(self)
        _STREAMS[stream]  # KeyError for anything else
        object.__setattr__(self, "_name", stream)

    def __setattr__(self, name, value):
        # Nothing of it is the snippet's to change (write = ..., fileno = ...);
        # IOBase.close() marks it closed.
        if name != "__IOBase_closed":
            raise AttributeError("'%s' object attribute '%s' is read-only"
                                 % (type(self).__name__, name))
        object.__setattr__(self, name, value)

    def writable(self):
        return True

    def fileno(self):
        return _STREAMS[self._name][1]

    def isatty(self):
        return False

    def write(self, data):
        data = bytes(data)
        head, fd = _STREAMS[self._name]
        if _state["forked"]:
            # A forked child has no event channel: fall back to the raw descriptor.
            _need("rare")
            return _write_raw(fd, data)
        for start in range(0, len(data), 65536):
            _write_bytes(head + _b2a_base64(data[start:start + 65536], newline=False)
                         + b'"}\n')
        return len(data)


def _setup_stdio():
    stdin = getattr(sys, "stdin", None)
    if stdin is not None:
        try:
            stdin.reconfigure(encoding="utf-8", errors="surrogateescape")
        except BaseException:
            pass
    for name, errors in (("stdout", "surrogateescape"), ("stderr", "backslashreplace")):
        stream = io.TextIOWrapper(io.BufferedWriter(_EventStream(name)), encoding="utf-8",
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
        if cfg["zygote"]:
            # A zygote: forks a sandbox per request; returns only in one of them.
            _need("zygote")
            _zygote_serve()
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


#@cold zygote
# A zygote (sandbox/zygote.rs): the driver, started and warm, with the access
# hooks installed, that forks a sandbox for each request instead of running one.
# It runs no snippet code.  Its fd 0 is a seqpacket socket on which each request
# is b"fork" with six descriptors: the helper's control socket, event pipe and
# input pipe, and the stdin, stdout and stderr pipes.  The forked child puts
# them on the helper's numbers and calls the zygote library, which builds the
# sandbox around it (namespaces, root, cgroup placement, uid, rlimits,
# capabilities, seccomp) as an exec'd helper does; it returns in the sandbox's
# payload, which goes on as a waiting driver: "ready", then its request on fd 3.

_ZYGOTE_LIBRARY = "/zygote/libjsheets_zygote.so"  # sandbox::zygote::LIBRARY


def _zygote_serve():
    import ctypes
    import fcntl
    import signal
    import socket
    before = set(sys.modules)
    lib = ctypes.CDLL(_ZYGOTE_LIBRARY)
    become = lib.jsheets_forked_helper
    become.restype = ctypes.c_int
    become.argtypes = ()
    requests = socket.socket(fileno=0)
    # Forked helpers are reaped by the kernel.
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    # Everything the zygote holds goes to the collector's permanent generation: a
    # fork's collections then never walk (and so never copy-on-write) the pages of
    # the zygote's objects; what a fork makes is collected as usual.
    import gc
    gc.collect()
    gc.freeze()
    _write_event({"event": "ready"})
    while True:
        try:
            msg, fds, _flags, _addr = socket.recv_fds(requests, 16, 8)
        except InterruptedError:
            continue
        if not msg:  # the supervisor went away
            os._exit(0)
        if msg != b"fork" or len(fds) != 6:
            for fd in fds:
                os.close(fd)
            continue
        if os.fork():
            for fd in fds:
                os.close(fd)
            continue
        # The helper.  Above every number they go to first, so none is overwritten
        # before it is placed.
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        requests.detach()
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 100) for fd in fds]
        for fd in fds:
            os.close(fd)
        for fd, target in zip(high, (3, 5, 6, 0, 1, 2)):
            os.dup2(fd, target)
        # Every other descriptor is closed by the library; it returns in the payload.
        if become() != 0:
            os._exit(70)
        break
    # The payload: the protocol descriptors are 3 and 4 again (see the top).
    global _EVENTS_FD, _INPUT_FD
    _state["forked"] = False
    _EVENTS_FD = _event_descriptor()
    _INPUT_FD = os.dup(3)
    for fd in (3, 4):
        os.close(fd)
    del lib, become, requests
    for name in set(sys.modules) - before:
        del sys.modules[name]
    # A lane forks its sandboxes without Python's fork hooks (sandbox/helper.rs):
    # `random` reseeds here, as after os.fork, or every sandbox of a lane would
    # draw the same numbers.
    if "random" in sys.modules:
        sys.modules["random"].seed()


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

import _ast


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
    "exec": "builtins.exec",  # exec() and eval()
    "builtins.input/result": "builtins.input",
    "function.__new__": "types.FunctionType",
    "code.__new__": "types.CodeType",
}
# Events whose reference depends on their arguments (see _access_hook): "open"
# (open(), io.open_code(), os.open(), FileIO()) is builtins.open, or a
# descriptor; "compile" (compile(), exec/eval of a string, ast.parse) is
# builtins.compile, and for library code the text it compiles.
_ACCESS_SPECIAL_EVENTS = ("import", "jsheets.check", "object.__getattr__",
                          "object.__setattr__", "object.__delattr__", "open", "compile")
# Notifications of the interpreter, not something the snippet does; "cpython.*"
# events are never checked either.
_ACCESS_IGNORED_EVENTS = ("sys.unraisablehook", "sys.excepthook")
# Frequent events, answered from a precomputed table.
_ACCESS_FREQUENT_EVENTS = ("marshal.loads", "marshal.load", "os.listdir", "os.scandir",
                           "sys._getframe", "builtins.id", "builtins.input", "time.sleep",
                           "pickle.find_class", "os.exec", "os.system", "os.fork",
                           "os.posix_spawn", "subprocess.Popen", "socket.__new__",
                           "socket.connect", "ctypes.dlopen", "gc.get_objects")
# Events checked whoever raises them while a snippet runs, allowed library code
# too (but not a library importing): processes, signals, the network, native
# code, tracing, the collector's object lists and unpickling (pandas.read_pickle
# and numpy.load(allow_pickle=True) would give any module's members) are nothing
# the computing libraries do for a snippet.  Also every event of these
# 7-character prefixes.
_ACCESS_ANY_CALLER_EVENTS = frozenset((
    "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
    "os.kill", "os.killpg", "subprocess.Popen", "sys.settrace", "sys.setprofile",
    "sys._current_frames", "sys.addaudithook", "gc.get_objects", "gc.get_referrers",
    "gc.get_referents", "mmap.__new__", "pickle.find_class", "marshal.loads",
    "marshal.load"))
_ACCESS_ANY_CALLER_PREFIXES = frozenset(("socket.", "ctypes."))
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
# getattr with a default or hasattr): an absent one is an AttributeError, not a
# violation, on a module given to the snippet or on its __builtins__.
_ACCESS_MODULE_METADATA = frozenset((
    "__name__", "__doc__", "__package__", "__loader__", "__spec__", "__file__", "__cached__",
    "__path__", "__all__", "__builtins__", "__dict__", "__class__", "__getattr__", "__dir__"))
# What a module given to the snippet copies of the real one (see _access_module):
# text; __all__ as a new list.  A package's __path__ and __spec__, which steer
# imports, its __loader__ and __builtins__ stay behind.
_ACCESS_COPIED_METADATA = ("__doc__", "__file__", "__cached__", "__package__", "__version__")
_ACCESS_WALKERS = 4

# --- The attribute rule (see "Attributes" in the module docstring).
# Dunders anything's may be read: protocols, metadata, exception chaining.
_ATTR_SAFE = frozenset("""
    __init__ __new__ __name__ __qualname__ __doc__ __module__ __class__ __repr__ __str__
    __format__ __hash__ __bool__ __len__ __length_hint__ __iter__ __next__ __reversed__
    __contains__ __getitem__ __setitem__ __delitem__ __missing__ __eq__ __ne__ __lt__
    __le__ __gt__ __ge__ __add__ __radd__ __iadd__ __sub__ __rsub__ __isub__ __mul__
    __rmul__ __imul__ __matmul__ __rmatmul__ __imatmul__ __truediv__ __rtruediv__
    __itruediv__ __floordiv__ __rfloordiv__ __ifloordiv__ __mod__ __rmod__ __imod__
    __divmod__ __rdivmod__ __pow__ __rpow__ __ipow__ __lshift__ __rlshift__ __ilshift__
    __rshift__ __rrshift__ __irshift__ __and__ __rand__ __iand__ __xor__ __rxor__ __ixor__
    __or__ __ror__ __ior__ __neg__ __pos__ __abs__ __invert__ __complex__ __int__
    __float__ __index__ __round__ __trunc__ __floor__ __ceil__ __enter__ __exit__
    __aenter__ __aexit__ __aiter__ __anext__ __await__ __call__ __get__ __set__ __delete__
    __set_name__ __init_subclass__ __class_getitem__ __post_init__ __slots__
    __match_args__ __members__ __version__ __all__ __file__ __package__ __traceback__
    __cause__ __context__ __suppress_context__ __notes__ __sizeof__ __fspath__ __bytes__
    __copy__ __deepcopy__ __args__ __origin__ __parameters__
""".split())
# Dunders only the snippet's own objects' may be read; _ATTR_STORE (and those
# of _ATTR_SAFE) only theirs may be written.
_ATTR_OWNED = frozenset(("__dict__", "__annotations__", "__getattribute__", "__getattr__",
                         "__setattr__", "__delattr__"))
_ATTR_STORE = frozenset(("__dict__", "__annotations__"))
# ... of which these, read from a class (not bound to an instance), apply to
# any object: never from a class.
_ATTR_UNBOUND = frozenset(("__getattribute__", "__getattr__", "__setattr__", "__delattr__"))
# The public API of namedtuples, anything's (but a module's) to read.
_ATTR_SAFE_PRIVATE = frozenset(("_asdict", "_replace", "_make", "_fields", "_field_defaults"))
# Frame, code and cell internals (and every co_*), and the MRO.
_ATTR_DENIED = frozenset((
    "f_back", "f_builtins", "f_code", "f_globals", "f_lasti", "f_lineno", "f_locals",
    "f_trace", "f_trace_lines", "f_trace_opcodes", "tb_frame", "gi_frame", "gi_code",
    "cr_frame", "cr_code", "ag_frame", "ag_code", "cell_contents", "mro",
    # (dunders that are safe to read but never to write)
    "__class__", "__module__"))
# Classes whose subclasses the snippet makes stay its own (they keep no state).
_ATTR_NEUTRAL = (("abc", "ABC"), ("typing", "Generic"), ("typing", "Protocol"))
# What library code that compiles text while a snippet runs (typing's forward
# references, pandas.eval, dataclasses) may not mention: the ways around the
# attribute rule.
_ATTR_BACKSTOP = (
    "__globals__", "__code__", "__closure__", "__builtins__", "__subclasses__", "__bases__",
    "__base__", "__mro__", "__self__", "__func__", "__reduce__", "__reduce_ex__",
    "__getstate__", "__dict__", "__wrapped__", "__loader__", "__spec__", "__getattribute__",
    "__import__", "__defaults__", "__kwdefaults__", "f_globals", "f_locals", "f_back",
    "f_builtins", "tb_frame", "gi_frame", "cr_frame", "ag_frame", "cell_contents")
# Methods of str that read attributes named in their text ("{0.attr}"): the
# checked accessor gives them checked (see _access_format).
_ATTR_FORMAT = frozenset(("format", "format_map"))
# The name of the snippet builtin the rewritten code uses: not an identifier, so
# no snippet source can name it.
_ATTR_ACCESSOR = "jsheets.attribute"


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


def _private(func, globals_=None):
    """`func` rebound to globals that hold nothing, not even builtins (or to
    `globals_`, such a dict shared with others)."""
    return _FunctionType(func.__code__, {"__builtins__": {}} if globals_ is None else globals_,
                         func.__name__, func.__defaults__)


def _install_access(access, namespace):
    """Build the snippet builtins and install the audit hook; before the first
    component, after the prelude (which runs unchecked)."""
    list_name, table = access
    allow = frozenset(k for k, v in table.items() if v)
    deny = frozenset(k for k, v in table.items() if not v)
    deny_below = frozenset(k[:i] for k in deny for i in range(1, len(k)))
    rules = (allow, deny, deny_below, tuple)
    allowed = _MethodType(_private(_access_allowed), rules)
    rule = _MethodType(_private(_access_rule), rules)
    audit = sys.audit
    module_type = type(sys)
    # The hook passes over the frames of the functions made with `transparent`
    # globals when it looks for who caused an event (they act for their caller);
    # those made with `frame_globals` may call sys._getframe (for their caller's).
    transparent = {"__builtins__": {}}
    frame_globals = {"__builtins__": {}}
    # State tuples the snippet sees (as a wrapper's __self__): printed short.
    state_type = type("state", (tuple,), {"__slots__": (), "__module__": "jsheets",
                                          "__repr__": _private(_access_state_repr)})

    def message(reference):
        return "`%s` is not allowed by the access list %s" % (reference, list_name)

    def wrapper(func, name, state, globals_=transparent):
        function = _FunctionType(func.__code__, globals_, name, func.__defaults__)
        function.__qualname__ = name
        return _MethodType(function, state_type(state))

    deny_reference = wrapper(_access_deny, "deny", (audit, AccessDeniedError, list_name))

    # --- The attribute rule, and what counts as the snippet's own.
    owned = {}  # class -> class: what the snippet's class statements made
    pure = {}  # class -> (class, all its bases but builtin types are the snippet's)
    # (class, name, store) -> class: an attribute of instances of the class that
    # snippet code may read or write (the class is the value: keys compare equal
    # by a metaclass's __eq__, the class found is compared by identity).
    fast = {}
    kind = _MethodType(_private(_access_attr_kind),
                       (_ATTR_SAFE, _ATTR_OWNED, _ATTR_STORE, _ATTR_SAFE_PRIVATE, _ATTR_DENIED,
                        _ATTR_FORMAT))
    check = wrapper(_access_attr_check, "check", (
        kind, owned, pure, fast, namespace, module_type, _FunctionType, super, type,
        type.__dict__["__mro__"].__get__, type.__dict__["__dict__"].__get__,
        type.__dict__["__flags__"].__get__, module_type.__dict__["__dict__"].__get__,
        sys.modules, _ATTR_OWNED, _ATTR_UNBOUND, str, _ATTR_NEUTRAL,
        super.__dict__["__self_class__"].__get__, super.__dict__["__thisclass__"].__get__,
        super.__dict__["__self__"].__get__))
    # getattr, but str.format & co checked (see _access_format).
    string = _import("_string")
    format_state = (string.formatter_parser, string.formatter_field_name_split, kind,
                    deny_reference, str, isinstance)
    fetch = wrapper(_access_fetch, "getattr", (
        getattr, type, str, type.__dict__["__mro__"].__get__, _ATTR_FORMAT, _MethodType,
        _private(_access_format, transparent), format_state, state_type))
    attr_state = (kind, check, deny_reference, fetch, setattr, delattr, hasattr, vars, type,
                  str, isinstance, "".join, tuple, TypeError, AttributeError, dict, list)
    accessor_state = state_type((fast, getattr, setattr, delattr, check, deny_reference, fetch,
                                 type, str, "".join))
    accessor_type = type("attribute", (), {
        "__module__": "jsheets", "__slots__": (),
        "__doc__": "Checked attribute access of rewritten snippet code: "
                   "jsheets.attribute[obj, '_x'] for obj._x.",
        "__getitem__": _FunctionType(_access_attr_get.__code__, transparent, "__getitem__",
                                     (accessor_state,)),
        "__setitem__": _FunctionType(_access_attr_set.__code__, transparent, "__setitem__",
                                     (accessor_state,)),
        "__delitem__": _FunctionType(_access_attr_del.__code__, transparent, "__delitem__",
                                     (accessor_state,)),
    })
    _state["transform"] = _access_transform_maker(kind, deny_reference)

    # --- The snippet's __builtins__: a module, as in __main__, whose dict (what
    # the snippet's frames look names up in) holds the stubs and the wrappers.
    # Reading a stubbed name as its attribute or item is itself denied; __import__
    # is the wrapper there too (C code importing for the snippet, time.strptime,
    # gets it as an attribute), which checks what it imports.
    denial = (audit, AccessDeniedError, list_name, _ACCESS_MODULE_METADATA, type, str,
              "".join, isinstance)
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

    # --- Modules given to the snippet (see _access_module), and the members
    # they hold instead of the real ones: with the attribute rule.
    attrgetter = wrapper(_access_attrgetter, "attrgetter", attr_state)
    methodcaller = wrapper(_access_methodcaller, "methodcaller", attr_state)
    update_wrapper = wrapper(_access_update_wrapper, "update_wrapper", attr_state)
    wraps = wrapper(_access_wraps, "wraps", (update_wrapper,))
    dataclass = wrapper(_access_dataclass, "dataclass", (
        sys.modules, module_type.__dict__["__dict__"].__get__, owned, deny_reference, type,
        isinstance, type.__dict__["__dict__"].__get__, str, dict, "<dataclass field name>",
        "<attribute __module__>"))
    # (Made now: making a function while a snippet runs is denied as its own.)
    guarded = {
        "operator": {"attrgetter": attrgetter, "methodcaller": methodcaller},
        "functools": {"update_wrapper": update_wrapper, "wraps": wraps},
        "dataclasses": {"dataclass": dataclass},
    }
    # Modules denied whole but with allowed members (`!sys`, `sys.stdout`): `import
    # sys` gives a module holding only those members.
    partial = frozenset(k[0] for k in allow if len(k) > 1 and not allowed(k[0]))
    proxies = {}  # name -> (real module, the snippet's)
    member = wrapper(_access_member, "member", (
        allowed, rule, module_type, type, isinstance, str, getattr, type(len), _FunctionType))
    links = []  # below: _access_module itself, the state of the modules' __getattr__
    module = wrapper(_access_module, "module", (
        proxies, module_type, checked_builtins, builtins, vars, setattr, type, isinstance, str,
        list, tuple, _ACCESS_COPIED_METADATA, guarded, _MethodType, member, links,
        _private(_access_module_getattr, transparent), _private(_access_module_dir, transparent),
        dict))
    links.append(module)
    links.append(state_type((
        deny_reference, getattr, sys.modules, partial, AttributeError, _ACCESS_MODULE_METADATA,
        "".join, str, type, allowed, module_type, builtins, checked_builtins, vars, setattr,
        member, guarded, isinstance, list, sorted, module, rule)))

    import_globals = {"__builtins__": {}}
    import_function = _FunctionType(_access_import.__code__, import_globals, "__import__",
                                    _access_import.__defaults__)
    import_state = (audit, builtins.__import__, "".join, int.__index__, tuple, str, int, type,
                    isinstance, TypeError, partial, module)
    make_stub = _private(_access_stub_maker)(audit, AccessDeniedError)
    frames = (sys._getframe, namespace, snippet_builtins, TypeError)
    wrappers = {
        "getattr": wrapper(_access_getattr, "getattr", attr_state),
        "setattr": wrapper(_access_setattr, "setattr", attr_state),
        "delattr": wrapper(_access_delattr, "delattr", attr_state),
        "hasattr": wrapper(_access_hasattr, "hasattr", attr_state),
        "vars": wrapper(_access_vars, "vars", attr_state + frames, frame_globals),
        "globals": wrapper(_access_globals, "globals", frames, frame_globals),
        "locals": wrapper(_access_locals, "locals", frames, frame_globals),
        "__build_class__": wrapper(_access_build_class, "__build_class__", (
            builtins.__build_class__, owned, type, isinstance,
            type.__dict__["__dict__"].__get__, "__main__", "<attribute __module__>",
            deny_reference)),
    }
    code_state = [compile, exec, eval, _state, frames, checked_builtins, type, str, bytes,
                  dict, _ast.AST, isinstance, "<compile of an AST>", deny_reference]
    compile_wrapper = wrapper(_access_compile, "compile", code_state)
    wrappers["compile"] = compile_wrapper
    code_state.append(compile_wrapper)
    wrappers["exec"] = wrapper(_access_exec, "exec", code_state, frame_globals)
    wrappers["eval"] = wrapper(_access_eval, "eval", code_state, frame_globals)
    for name, value in vars(builtins).items():
        reference = "builtins." + name
        if name == "__import__":
            value = _MethodType(import_function, import_state)
        elif not allowed(reference):
            value = make_stub(name, reference, message(reference))
        elif name in wrappers:
            value = wrappers[name]
        snippet_builtins[name] = value
    snippet_builtins[_ATTR_ACCESSOR] = accessor_type()

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
                     vars(sys.modules["_frozen_importlib_external"]), bottom, transparent)
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

    backstop = (_ATTR_BACKSTOP, tuple(name.encode() for name in _ATTR_BACKSTOP))
    hook_state = (_MappingProxyType(refs), _ACCESS_SPECIAL, allowed, _ACCESS_FRAME_ATTRIBUTES,
                  _ACCESS_FUNCTION_ATTRIBUTES, tuple(walks), tuple(reports), import_globals,
                  import_state, AccessDeniedError, AccessDeniedImportError, ValueError, str,
                  type, "".join, list_name, _ACCESS_MAX_REFERENCE, _ACCESS_ANY_CALLER_EVENTS,
                  _ACCESS_ANY_CALLER_PREFIXES, frame_globals, backstop, int, bytes, bool)
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


def _access_transform_maker(kind, deny_reference):
    """The compile-time part of the attribute rule (driver code, run before the
    snippet's code is): transform(tree) rewrites the snippet's tree in place,
    obj.NAME to jsheets.attribute[obj, 'NAME'] where the rule depends on obj
    (NAME mangled as the compiler would), and if the tree uses an attribute name
    no object's may be used, or a positional class pattern, reports each such
    reference and raises the first violation."""
    AST, Attribute, MatchClass, ClassDef = (_ast.AST, _ast.Attribute, _ast.MatchClass,
                                            _ast.ClassDef)
    Subscript, Tuple, Name, Constant, Load, Store, Del = (
        _ast.Subscript, _ast.Tuple, _ast.Name, _ast.Constant, _ast.Load, _ast.Store, _ast.Del)
    outer_fields = ("bases", "keywords", "decorator_list")  # a ClassDef's, in the outer scope

    def located(new, old):
        new.lineno, new.col_offset = old.lineno, old.col_offset
        new.end_lineno, new.end_col_offset = old.end_lineno, old.end_col_offset
        return new

    def mangle(name, cls):
        # What the compiler makes of __x in class `cls` and what it encloses.
        if cls is None or name[:2] != "__" or name[-2:] == "__":
            return name
        stripped = cls.lstrip("_")
        return "_" + stripped + name if stripped else name

    def rewrite(node, cls, denied):
        if type(node) is Attribute:
            name = mangle(node.attr, cls)
            verdict = kind(name, type(node.ctx) in (Store, Del))
            if verdict == 3:
                denied.append((node.end_lineno, node.end_col_offset,
                               "<attribute %s>" % node.attr))
            elif verdict:
                key = located(Tuple(elts=[node.value, located(Constant(value=name), node)],
                                    ctx=Load()), node)
                accessor = located(Name(id=_ATTR_ACCESSOR, ctx=Load()), node)
                return located(Subscript(value=accessor, slice=key, ctx=node.ctx), node)
        elif type(node) is MatchClass:
            if node.patterns:
                # Positional sub-patterns read the attributes that the class's
                # __match_args__ names, whatever class the snippet made.
                denied.append((node.end_lineno, node.end_col_offset,
                               "<positional class pattern>"))
            for name in node.kwd_attrs:
                if kind(mangle(name, cls), False):
                    denied.append((node.end_lineno, node.end_col_offset,
                                   "<attribute %s>" % name))
        return node

    def transform(tree):
        denied = []
        stack = [(tree, None)]
        while stack:
            node, cls = stack.pop()
            inner = node.name if type(node) is ClassDef else cls
            for field in node._fields:
                scope = cls if field in outer_fields else inner
                value = getattr(node, field, None)
                if type(value) is list:
                    for i, item in enumerate(value):
                        if isinstance(item, AST):
                            new = rewrite(item, scope, denied)
                            if new is not item:
                                value[i] = new
                            stack.append((item, scope))
                elif isinstance(value, AST):
                    new = rewrite(value, scope, denied)
                    if new is not value:
                        setattr(node, field, new)
                    stack.append((value, scope))
        first = None
        for reference in dict.fromkeys(reference for _, _, reference in sorted(denied)):
            try:
                deny_reference(reference)
            except AccessDeniedError as exc:
                first = first or exc
        if first is not None:
            raise first
        return tree

    return transform


# --- Private functions: see _private().  No global names, no builtins. ---------

def _access_state_repr(self):
    return "<jsheets>"


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


def _access_rule(rules, reference):
    """(verdict, segments) of the rule that decides `reference`: True or False
    for an allow or a deny rule, None (and 0) when no rule covers it."""
    allow, deny, deny_below, tuple_ = rules
    key = tuple_(reference.split("."))
    while key:
        if key in allow:
            return True, key.__len__()
        if key in deny:
            return False, key.__len__()
        key = key[:-1]
    return None, 0


def _access_deny(state, reference):
    """Deny `reference` (whatever the list says of it: an attribute rule's
    verdict): the hook reports the violation and raises."""
    audit, denied_error, list_name = state
    audit("jsheets.check", reference, "rule")
    # not reached unless the hook was tampered with
    raise denied_error("`%s` is not allowed by the access list %s" % (reference, list_name))


def _access_attr_kind(kinds, name, store):
    """What the attribute rule says of `name` (read; with `store`, written or
    deleted): 0 allowed, 1 allowed on the snippet's own objects only, 2 allowed
    on anything but a module (the namedtuple API), 3 denied, 4 allowed, read
    through the accessor (str.format)."""
    safe, owned_dunders, store_dunders, safe_private, denied, formats = kinds
    if name[:1] != "_":
        if name in denied or name[:3] == "co_":
            return 3
        return 4 if name in formats else 0
    if name[:2] == "__" and name[-2:] == "__" and name[4:]:
        if store:
            # (its own objects': a protocol method, metadata; never __class__,
            # __module__, __globals__ & co)
            return 1 if name in store_dunders or (name in safe and name not in denied) else 3
        if name in safe:
            return 0
        return 1 if name in owned_dunders else 3
    if not store and name in safe_private:
        return 2
    return 1


def _access_attr_check(state, obj, name, store):
    """None if snippet code may read (`store`: write or delete) the attribute
    `name` (an exact str) of `obj`, else the reference to deny.  The snippet's
    own objects: the classes its class statements made whose bases are its own,
    builtin types (not heap types), abc.ABC, typing.Generic or typing.Protocol
    ("pure"), their instances (and super() of them), the functions of its
    namespace; an attribute that a class of the MRO not its own defines is not
    its own, but for __setattr__ & co of a builtin type bound to such an object."""
    (kind_of, owned, pure, fast, namespace, module_type, function_type, super_type, type_,
     mro_of, dict_of, flags_of, module_dict, modules, owned_dunders, unbound, str_, neutral,
     self_class_of, thisclass_of, self_of) = state
    kind = kind_of(name, store)
    if kind == 0 or kind == 4:
        return None
    cls = type_(obj)
    mro = mro_of(cls)
    if module_type in mro:
        module_name = module_dict(obj).get("__name__")
        return (module_name if type_(module_name) is str_ else "<module>") + "." + name
    reference = "<attribute %s>" % name
    if kind == 3:
        return reference
    if kind == 2:
        return None
    if cls is function_type:
        return None if obj.__globals__ is namespace else reference
    after = None
    bound = True
    instance = False
    if super_type in mro:
        after = thisclass_of(obj)
        cls = self_class_of(obj)
        if cls is None:
            return reference
        bound = type_ not in mro_of(type_(self_of(obj)))
    elif type_ in mro:
        if name in unbound:
            return reference
        cls = obj
        bound = False
    else:
        instance = True
    if owned.get(cls) is not cls:
        return reference
    known = pure.get(cls)
    if known is None or known[0] is not cls:
        verdict = True
        for base in mro_of(cls):
            if owned.get(base) is base or not flags_of(base) & 512:  # Py_TPFLAGS_HEAPTYPE
                continue
            found = False
            for module_name, member in neutral:
                module = modules.get(module_name)
                if module is not None and module_dict(module).get(member) is base:
                    found = True
            if not found:
                verdict = False
                break
        known = pure[cls] = (cls, verdict)
    if not known[1]:
        return reference
    if store and not bound and after is None:
        return None  # into the class's own dict
    searched = False
    for base in mro_of(cls):
        if after is not None and not searched:
            searched = base is after
            continue
        if name in dict_of(base):
            if owned.get(base) is base or (bound and name in owned_dunders
                                             and not flags_of(base) & 512):
                if instance:
                    fast[(cls, name, store)] = cls
                return None
            return reference
    if after is not None and not searched:
        return reference
    if instance:
        fast[(cls, name, store)] = cls
    return None


def _access_fetch(state, obj, name, *default):
    """getattr(obj, name, *default), but for str's format and format_map (bound
    or not), which come checked."""
    getattr_, type_, str_, mro_of, formats, method_type, checker, format_state, state_type = state
    value = getattr_(obj, name, *default)
    if name in formats:
        mro = mro_of(type_(obj))
        if str_ in mro:
            return method_type(checker, state_type((value, obj) + format_state))
        if type_ in mro and str_ in mro_of(obj):
            return method_type(checker, state_type((value, None) + format_state))
    return value


def _access_format(state, *args, **kwargs):
    """str.format or str.format_map of `text` (None: unbound, the first
    argument): a field that reads an attribute the rule does not allow to any
    object ("{0.__globals__}", "{0._x}") is denied."""
    method, text, parser, split, kind, deny, str_, isinstance_ = state
    if text is None and args:
        text = args[0]
    if isinstance_(text, str_):
        pending = [text]
        while pending:
            for literal, field, spec, conversion in parser(pending.pop()):
                if field is not None:
                    first, rest = split(field)
                    for is_attribute, key in rest:
                        if is_attribute and kind(key, False) in (1, 2, 3):
                            deny("<attribute %s>" % key)
                if spec:
                    pending.append(spec)
    return method(*args, **kwargs)


def _access_attr_get(self, key, state=None):
    """jsheets.attribute[obj, name]: obj.name, if snippet code may read it."""
    fast, getattr_, setattr_, delattr_, check, deny, fetch, type_, str_, exact_str = state
    obj, name = key
    if type_(name) is not str_:
        name = exact_str((name,))
    cls = type_(obj)
    if fast.get((cls, name, False)) is cls:
        return getattr_(obj, name)
    reference = check(obj, name, False)
    if reference is not None:
        deny(reference)
    return fetch(obj, name)


def _access_attr_set(self, key, value, state=None):
    """jsheets.attribute[obj, name] = value."""
    fast, getattr_, setattr_, delattr_, check, deny, fetch, type_, str_, exact_str = state
    obj, name = key
    if type_(name) is not str_:
        name = exact_str((name,))
    cls = type_(obj)
    if fast.get((cls, name, True)) is not cls:
        reference = check(obj, name, True)
        if reference is not None:
            deny(reference)
    setattr_(obj, name, value)


def _access_attr_del(self, key, state=None):
    """del jsheets.attribute[obj, name]."""
    fast, getattr_, setattr_, delattr_, check, deny, fetch, type_, str_, exact_str = state
    obj, name = key
    if type_(name) is not str_:
        name = exact_str((name,))
    cls = type_(obj)
    if fast.get((cls, name, True)) is not cls:
        reference = check(obj, name, True)
        if reference is not None:
            deny(reference)
    delattr_(obj, name)


def _access_getattr(state, obj, name, *default):
    """The snippet's getattr: the attribute rule (a denied attribute is denied,
    whatever the default), then the real getattr."""
    (kind, check, deny, getattr_, setattr_, delattr_, hasattr_, vars_, type_, str_,
     isinstance_, exact_str, tuple_, type_error, attribute_error, dict_, list_) = state
    if type_(name) is not str_:
        if not isinstance_(name, str_):
            return getattr_(obj, name, *default)  # TypeError
        name = exact_str((name,))
    reference = check(obj, name, False)
    if reference is not None:
        deny(reference)
    return getattr_(obj, name, *default)


def _access_hasattr(state, obj, name):
    """The snippet's hasattr: a denied attribute is denied, not False."""
    (kind, check, deny, getattr_, setattr_, delattr_, hasattr_, vars_, type_, str_,
     isinstance_, exact_str, tuple_, type_error, attribute_error, dict_, list_) = state
    if type_(name) is not str_:
        if not isinstance_(name, str_):
            return hasattr_(obj, name)  # TypeError
        name = exact_str((name,))
    reference = check(obj, name, False)
    if reference is not None:
        deny(reference)
    return hasattr_(obj, name)


def _access_setattr(state, obj, name, value):
    """The snippet's setattr."""
    (kind, check, deny, getattr_, setattr_, delattr_, hasattr_, vars_, type_, str_,
     isinstance_, exact_str, tuple_, type_error, attribute_error, dict_, list_) = state
    if type_(name) is not str_:
        if not isinstance_(name, str_):
            return setattr_(obj, name, value)  # TypeError
        name = exact_str((name,))
    reference = check(obj, name, True)
    if reference is not None:
        deny(reference)
    return setattr_(obj, name, value)


def _access_delattr(state, obj, name):
    """The snippet's delattr."""
    (kind, check, deny, getattr_, setattr_, delattr_, hasattr_, vars_, type_, str_,
     isinstance_, exact_str, tuple_, type_error, attribute_error, dict_, list_) = state
    if type_(name) is not str_:
        if not isinstance_(name, str_):
            return delattr_(obj, name)  # TypeError
        name = exact_str((name,))
    reference = check(obj, name, True)
    if reference is not None:
        deny(reference)
    return delattr_(obj, name)


def _access_vars(state, *args):
    """The snippet's vars: vars(obj) is obj.__dict__, checked; vars() is its
    caller's locals, if the caller is snippet code."""
    (kind, check, deny, getattr_, setattr_, delattr_, hasattr_, vars_, type_, str_,
     isinstance_, exact_str, tuple_, type_error, attribute_error, dict_, list_,
     getframe, namespace, snippet_builtins, _) = state
    if args:
        if args[1:]:
            return vars_(*args)  # TypeError
        reference = check(args[0], "__dict__", False)
        if reference is not None:
            deny(reference)
        return vars_(args[0])
    frame = getframe(1)
    if frame.f_globals is namespace or frame.f_builtins is snippet_builtins:
        return frame.f_locals
    raise type_error("vars() called by library code: the access list lets it read "
                     "snippet code's variables only")


def _access_globals(state):
    """The snippet's globals(): its caller's, if the caller is snippet code (not
    library code the snippet gave it to)."""
    getframe, namespace, snippet_builtins, type_error = state
    frame = getframe(1)
    if frame.f_globals is namespace or frame.f_builtins is snippet_builtins:
        return frame.f_globals
    raise type_error("globals() called by library code: the access list lets it read "
                     "snippet code's variables only")


def _access_locals(state):
    """The snippet's locals(): its caller's, if the caller is snippet code."""
    getframe, namespace, snippet_builtins, type_error = state
    frame = getframe(1)
    if frame.f_globals is namespace or frame.f_builtins is snippet_builtins:
        return frame.f_locals
    raise type_error("locals() called by library code: the access list lets it read "
                     "snippet code's variables only")


def _access_build_class(state, func, name, *bases, **keywords):
    """The snippet's __build_class__: the class is the snippet's own, and says so
    (its __module__ is __main__)."""
    build_class, owned, type_, isinstance_, dict_of, main, reference, deny = state
    cls = build_class(func, name, *bases, **keywords)
    if isinstance_(cls, type_):
        if dict_of(cls).get("__module__") != main:
            deny(reference)
        owned[cls] = cls
    return cls


def _access_attrgetter(state, attr, *attrs):
    """operator.attrgetter with the attribute rule: a name no object's may be
    read is denied at once, the others when it is called, for the object."""
    (kind, check, deny, getattr_, setattr_, delattr_, hasattr_, vars_, type_, str_,
     isinstance_, exact_str, tuple_, type_error, attribute_error, dict_, list_) = state
    paths = []
    for item in (attr,) + attrs:
        if not isinstance_(item, str_):
            raise type_error("attribute name must be a string")
        path = tuple_(exact_str((item,)).split("."))
        for name in path:
            if kind(name, False) == 3:
                deny("<attribute %s>" % name)
        paths.append(path)
    single = not attrs

    def attrgetter(obj):
        results = []
        for path in paths:
            value = obj
            for name in path:
                reference = check(value, name, False)
                if reference is not None:
                    deny(reference)
                value = getattr_(value, name)
            results.append(value)
        return results[0] if single else tuple_(results)

    return attrgetter


def _access_methodcaller(state, name, *args, **kwargs):
    """operator.methodcaller with the attribute rule."""
    (kind, check, deny, getattr_, setattr_, delattr_, hasattr_, vars_, type_, str_,
     isinstance_, exact_str, tuple_, type_error, attribute_error, dict_, list_) = state
    if not isinstance_(name, str_):
        raise type_error("method name must be a string")
    name = exact_str((name,))
    if kind(name, False) == 3:
        deny("<attribute %s>" % name)

    def methodcaller(obj):
        reference = check(obj, name, False)
        if reference is not None:
            deny(reference)
        return getattr_(obj, name)(*args, **kwargs)

    return methodcaller


def _access_update_wrapper(state, wrapper, wrapped,
                           assigned=("__module__", "__name__", "__qualname__", "__doc__",
                                     "__annotations__"),
                           updated=("__dict__",)):
    """functools.update_wrapper for a wrapper of the snippet's own (it writes its
    attributes): it copies from `wrapped` the metadata and what the attribute
    rule lets snippet code read, of a __dict__ that is not the snippet's its
    public entries, and sets __wrapped__."""
    (kind, check, deny, getattr_, setattr_, delattr_, hasattr_, vars_, type_, str_,
     isinstance_, exact_str, tuple_, type_error, attribute_error, dict_, list_) = state
    reference = check(wrapper, "__dict__", True)
    if reference is not None:
        deny(reference)
    metadata = ("__module__", "__name__", "__qualname__", "__doc__", "__annotations__")
    for name in assigned:
        if not isinstance_(name, str_):
            raise type_error("attribute name must be a string")
        name = exact_str((name,))
        if name not in metadata:
            reference = check(wrapped, name, False) or check(wrapper, name, True)
            if reference is not None:
                deny(reference)
        try:
            value = getattr_(wrapped, name)
        except attribute_error:
            continue
        if name == "__annotations__" and isinstance_(value, dict_):
            value = dict_(value)  # not the wrapped function's own
        setattr_(wrapper, name, value)
    for name in updated:
        if not isinstance_(name, str_):
            raise type_error("attribute name must be a string")
        name = exact_str((name,))
        reference = check(wrapper, name, False)
        if reference is not None:
            deny(reference)
        target = getattr_(wrapper, name)
        source = getattr_(wrapped, name, {})
        if check(wrapped, name, False) is None:
            target.update(source)
        else:
            for key in list_(source):
                if type_(key) is str_ and key[:1] != "_":
                    target[key] = source[key]
    setattr_(wrapper, "__wrapped__", wrapped)
    return wrapper


def _access_wraps(state, wrapped,
                  assigned=("__module__", "__name__", "__qualname__", "__doc__",
                            "__annotations__"),
                  updated=("__dict__",)):
    """functools.wraps, with the checked update_wrapper."""
    update_wrapper = state[0]

    def wraps(wrapper):
        return update_wrapper(wrapper, wrapped, assigned, updated)

    return wraps


def _access_dataclass(state, cls=None, /, **options):
    """dataclasses.dataclass, for classes whose field names are identifiers (it
    writes them into the code it generates), whose metaclass is not the
    snippet's and whose __module__ is __main__
    (whose globals that code runs with); a new class it makes of one of the
    snippet's own (slots=True) is the snippet's own too."""
    (modules, module_dict, owned, deny, type_, isinstance_, dict_of, str_, dict_,
     field_reference, module_reference) = state

    def dataclass(cls):
        if isinstance_(cls, type_):
            namespace = dict_of(cls)
            if owned.get(type_(cls)) is type_(cls) or namespace.get("__module__") != "__main__":
                deny(module_reference)  # a metaclass of the snippet's, or another module
            annotations = namespace.get("__annotations__", None)
            if annotations is not None:
                if type_(annotations) is not dict_:
                    deny(field_reference)
                for name in annotations:
                    if type_(name) is not str_ or not name.isidentifier():
                        deny(field_reference)
        real = module_dict(modules["dataclasses"])["dataclass"]
        result = real(**options)(cls)
        if owned.get(cls) is cls and isinstance_(result, type_):
            owned[result] = result
        return result

    if cls is None:
        return dataclass
    return dataclass(cls)


def _access_member(state, name, attr, value):
    """None if the member `attr` (public) of the real module `name` may be given
    to the snippet, else the reference to deny: what the list denies, and a
    function or class of a module the list denies by a rule (os.system as
    anything.system, pathlib.Path as pandas.io.common.Path), unless a rule for
    `name.attr` itself allows it (io.StringIO, whose class is _io's)."""
    (allowed, rule, module_type, type_, isinstance_, str_, getattr_, builtin_type,
     function_type) = state
    reference = name + "." + attr
    if not allowed(reference):
        return reference
    owner = None
    kind = type_(value)
    if kind is builtin_type:
        bound = value.__self__
        if isinstance_(bound, module_type):
            owner = getattr_(bound, "__name__", None)
        else:
            owner = value.__module__
    elif kind is function_type or isinstance_(value, type_):
        owner = getattr_(value, "__module__", None)
    if type_(owner) is str_ and owner != name:
        qualname = getattr_(value, "__qualname__", None)
        full = owner + "." + qualname if type_(qualname) is str_ else owner
        if rule(full)[0] is False:
            verdict, segments = rule(reference)
            if not (verdict is True and segments > 1):
                return full
    return None


def _access_module(state, module, name=None):
    """The module snippet code gets for the real `module` (from an import, or as
    a member of another module it got): a new module holding the real one's
    public members that _access_member lets through (copied now; modules among
    them are given this way when first read), operator.attrgetter & co checked,
    text metadata; its __getattr__ (PEP 562) gives what was added to the real
    module since and submodules, denies private members and denied ones, and
    raises AttributeError for the others.  Its rules are those of the real
    module's name, or `name`, the path by which the snippet reached it where a
    rule allows that path itself (`os.path`, which is posixpath).  One per real
    module and name; the builtins module is the snippet's __builtins__."""
    (proxies, module_type, checked_builtins, real_builtins, vars_, setattr_, type_,
     isinstance_, str_, list_, tuple_, copied, guarded, method_type, member, links,
     make_getattr, make_dir, dict_) = state
    if module is real_builtins or module is checked_builtins:
        return checked_builtins
    if not isinstance_(module, module_type):
        return module  # sys.modules holds something else: given as it is
    members = vars_(module)
    if name is None:
        name = members.get("__name__")
        if type_(name) is not str_:
            name = "<module>"
    known = proxies.get(name)
    if known is not None and known[0] is module:
        return known[1]
    copy = module_type(name)
    for key in copied:
        value = members.get(key)
        if type_(value) is str_:
            setattr_(copy, key, value)
    value = members.get("__all__")
    if isinstance_(value, (list_, tuple_)):
        setattr_(copy, "__all__", list_(value))
    wrapped = guarded.get(name, {})
    for attr, value in list_(members.items()):
        if type_(attr) is not str_ or attr[:1] == "_" or isinstance_(value, module_type):
            continue
        if member(name, attr, value) is None:
            setattr_(copy, attr, wrapped.get(attr, value))
    setattr_(copy, "__getattr__", method_type(make_getattr, (links[1], name, module, copy)))
    setattr_(copy, "__dir__", method_type(make_dir, (links[1], name, module, copy)))
    proxies[name] = (module, copy)
    return copy


def _access_module_getattr(state, attr):
    """The __getattr__ of a module from _access_module: `attr` is not in it."""
    shared, name, module, copy = state
    (deny, getattr_, modules, partial, attribute_error, metadata, exact_str, str_, type_,
     allowed, module_type, real_builtins, checked_builtins, vars_, setattr_, member, guarded,
     isinstance_, list_, sorted_, given, rule) = shared
    if type_(attr) is not str_ and isinstance_(attr, str_):
        attr = exact_str((attr,))
    reference = name + "." + attr
    if attr[:1] == "_":
        if attr in metadata:
            raise attribute_error("module '%s' has no attribute '%s'" % (name, attr))
        deny(reference)
    try:
        value = getattr_(module, attr)
    except attribute_error:
        value = modules.get(reference)
        if value is None:
            raise attribute_error("module '%s' has no attribute '%s'" % (name, attr)) from None
    if isinstance_(value, module_type):
        if not allowed(reference):
            deny(reference)
        inner = vars_(value).get("__name__")
        if value is real_builtins or type_(inner) is str_ and (allowed(inner)
                                                              or inner in partial):
            value = given(value)
        elif rule(reference)[1] > 1:  # a rule for this very path allows it
            value = given(value, reference)
        else:
            deny(inner if type_(inner) is str_ else reference)
    else:
        denied = member(name, attr, value)
        if denied is not None:
            deny(denied)
        value = guarded.get(name, {}).get(attr, value)
    setattr_(copy, attr, value)
    return value


def _access_module_dir(state):
    """The __dir__ of a module from _access_module: the public members that its
    __getattr__ gives."""
    shared, name, module, copy = state
    (deny, getattr_, modules, partial, attribute_error, metadata, exact_str, str_, type_,
     allowed, module_type, real_builtins, checked_builtins, vars_, setattr_, member, guarded,
     isinstance_, list_, sorted_, given, rule) = shared
    names = []
    for attr, value in list_(vars_(module).items()):
        if type_(attr) is not str_ or attr[:1] == "_":
            continue
        reference = name + "." + attr
        if isinstance_(value, module_type):
            inner = vars_(value).get("__name__")
            if allowed(reference) and (value is real_builtins or rule(reference)[1] > 1 or (
                    type_(inner) is str_ and (allowed(inner) or inner in partial))):
                names.append(attr)
        elif member(name, attr, value) is None:
            names.append(attr)
    return sorted_(names)


def _access_compile(state, source, filename, mode, flags=0, dont_inherit=False, optimize=-1,
                    **options):
    """The snippet's compile (where the list allows it): the code it makes is
    checked and rewritten as the snippet's own is; an AST is parsed, not taken."""
    (real_compile, real_exec, real_eval, driver_state, frames, checked_builtins, type_, str_,
     bytes_, dict_, ast_type, isinstance_, ast_reference, deny) = state[:14]
    if isinstance_(source, ast_type):
        deny(ast_reference)
    tree = real_compile(source, filename, mode, flags | 0x400, dont_inherit, optimize,
                        **options)
    if flags & 0x400:  # ast.PyCF_ONLY_AST: the snippet parses, and cannot compile that
        return tree
    driver_state["transform"](tree)
    return real_compile(tree, filename, mode, flags & ~0x400, dont_inherit, optimize)


def _access_exec(state, source, globals=None, locals=None, /, **options):
    """The snippet's exec (where the list allows it): text through the checked
    compile; without globals, its caller's (snippet code only); globals without
    __builtins__ get the snippet's."""
    (real_compile, real_exec, real_eval, driver_state, frames, checked_builtins, type_, str_,
     bytes_, dict_, ast_type, isinstance_, ast_reference, deny, compile_) = state
    if isinstance_(source, (str_, bytes_, ast_type)):
        source = compile_(source, "<string>", "exec")
    if globals is None:
        getframe, namespace, snippet_builtins, type_error = frames
        frame = getframe(1)
        if not (frame.f_globals is namespace or frame.f_builtins is snippet_builtins):
            raise type_error("exec() called by library code without globals")
        globals = frame.f_globals
        if locals is None:
            locals = frame.f_locals
    elif locals is None:
        locals = globals
    if type_(globals) is dict_ and "__builtins__" not in globals:
        globals["__builtins__"] = checked_builtins
    return real_exec(source, globals, locals, **options)


def _access_eval(state, source, globals=None, locals=None, /):
    """The snippet's eval: as its exec."""
    (real_compile, real_exec, real_eval, driver_state, frames, checked_builtins, type_, str_,
     bytes_, dict_, ast_type, isinstance_, ast_reference, deny, compile_) = state
    if isinstance_(source, (str_, bytes_, ast_type)):
        if isinstance_(source, str_):
            source = source.lstrip(" \t")  # as eval() does
        source = compile_(source, "<string>", "eval")
    if globals is None:
        getframe, namespace, snippet_builtins, type_error = frames
        frame = getframe(1)
        if not (frame.f_globals is namespace or frame.f_builtins is snippet_builtins):
            raise type_error("eval() called by library code without globals")
        globals = frame.f_globals
        if locals is None:
            locals = frame.f_locals
    elif locals is None:
        locals = globals
    if type_(globals) is dict_ and "__builtins__" not in globals:
        globals["__builtins__"] = checked_builtins
    return real_eval(source, globals, locals)


def _access_import(state, name, globals=None, locals=None, fromlist=(), level=0):
    """The snippet's __import__: checks what the import binds, then imports with
    the real __import__ (which then runs unchecked: library code), and gives
    the module as _access_module does."""
    (audit, real_import, exact_str, exact_int, tuple_, str_, int_, type_, isinstance_,
     type_error, partial, module) = state
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
        return module(real_import(name, globals, locals, tuple_(names), level))
    if not level and name in partial:
        return module(real_import(name, globals, locals, None, level))
    prefix = None
    for part in name.split("."):
        prefix = part if prefix is None else prefix + "." + part
        audit("jsheets.check", prefix, "import")
    return module(real_import(name, globals, locals, None, level))


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


def _access_walker(namespace, snippet_builtins, bootstrap, bootstrap_external, bottom,
                   transparent):
    """Generator: each send(None) from the audit hook answers who caused the
    event, as (snippet, child, importing, driver, first): snippet: a frame of
    snippet code is on the stack; child: the frame nearest to it (not importlib,
    not a `transparent` wrapper) that it called, or None if the event came from
    the snippet frame itself; importing: importlib frames lie between; driver:
    no snippet frame, and the stack ends in the main thread's outermost frame;
    first: the frame that raised the event.  (Its own frame, sent at set-up,
    gives the hook's caller without sys._getframe and its audit event.)"""
    me = yield
    answer = None
    while True:
        yield answer
        hook = me.f_back
        f = first = hook.f_back if hook is not None else None
        child = last = None
        importing = False
        while f is not None:
            g = f.f_globals
            if g is namespace or f.f_builtins is snippet_builtins:
                break
            if g is bootstrap or g is bootstrap_external:
                importing = True
            elif g is not transparent:
                child = f
            last = f
            f = f.f_back
        if f is not None:
            answer = (True, child, importing, False, first)
        else:
            answer = (False, None, importing, last is bottom, first)


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
     type_, exact_str, list_name, max_reference, any_caller, any_caller_prefixes,
     frame_globals, backstop, int_, bytes_, bool_) = state
    kind = "permission"
    walk = True
    anyone = False  # checked whoever caused it (but a library importing)
    text = None  # the text library code compiles, checked against the backstop
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
        elif event == "jsheets.check":  # from the import wrapper, stubs, checks
            ref, kind = args
            if type_(ref) is not str_ or type_(kind) is not str_:
                return
            walk = False
            if kind == "rule":  # the attribute rule's verdict: denied
                kind = "permission"
                anyone = True
        elif event == "open":
            path = args[0]
            if type_(path) is int_ and path > 2:
                # A descriptor: the driver's are not the snippet's to open.
                ref = "<descriptor %d>" % path
                anyone = True
            else:
                ref = "builtins.open"
        elif event == "compile":
            ref = "builtins.compile"
            source = args[0]
            if type_(source) is str_ or type_(source) is bytes_:
                text = source
            elif allowed(ref):
                return
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
        if text is None and not anyone and allowed(ref):
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
        snippet, child, importing, driver, first = answer
        if (event == "sys._getframe" and first is not None
                and first.f_globals is frame_globals):
            return  # globals(), locals(), vars() & co find their caller
        if snippet:
            if child is not None:  # library code the snippet called raised it
                if importing:
                    return  # while the library imports (it checked nothing itself)
                if text is not None:  # library code compiles text: the backstop
                    names = backstop[0] if type_(text) is str_ else backstop[1]
                    index = 0
                    found = None
                    for name in names:
                        if name in text:
                            found = backstop[0][index]
                            break
                        index += 1
                    if found is None:
                        return
                    ref = "<attribute %s>" % found
                elif anyone or event in any_caller or event[:7] in any_caller_prefixes:
                    pass
                else:
                    g = child.f_globals
                    if kind == "import":
                        # A library's own imports are not checked, but the import
                        # wrapper's only with its own state (not re-driven by hand).
                        if (g is not import_globals
                                or child.f_locals.get("state") is import_state):
                            return
                    else:
                        name = g.get("__name__")
                        if type_(name) is str_ and allowed(name):
                            return
            elif text is not None and allowed(ref):
                return  # snippet code compiles: the list allows it
        elif driver:
            return
        elif text is not None and allowed(ref):
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
