//! Python snippets held to the shipped python-default list, in real sandboxes: the
//! driver's audit hooks stop every route to a denied module or builtin, and leave
//! allowed modules and library-internal imports alone.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::Fixture;
use evaluator::access::catalog::Catalog;
use evaluator::sandbox::{Limits, Status};
use evaluator::snippet::{Component, Output};

#[tokio::test]
async fn every_route_to_a_denied_module_is_stopped() {
    let fx = Fixture::new();
    let python = fx.runtime("python-3.11").await;
    let mut launch = python.launch();
    let list = Catalog::new(None).load("python-default").unwrap();
    launch.access_list = Some(Arc::new(list));
    let routes = [
        ("import", "import os", "os"),
        ("from", "from os import system", "os.system"),
        ("dunder", "__import__('os')", "os"),
        ("importlib", "import importlib", "importlib"),
        ("builtins", "__builtins__['eval']('1')", "builtins.eval"),
        ("eval", "eval(\"__import__('os')\")", "builtins.eval"),
        ("exec", "exec('import os')", "builtins.exec"),
        ("open", "open('/etc/hostname')", "builtins.open"),
        // The real builtins module is print.__self__: not the snippet's to read.
        (
            "real-builtins",
            "print.__self__.__import__('os').system('true')",
            "<attribute __self__>",
        ),
        ("startup-module", "import posix", "posix"),
        (
            "caught",
            "try:\n    import socket\nexcept ImportError:\n    pass\nprint('caught')",
            "socket",
        ),
    ];
    let mut components: Vec<Component> = routes
        .iter()
        .map(|(id, code, _)| Component {
            id: (*id).into(),
            code: (*code).into(),
        })
        .collect();
    components.push(Component {
        id: "allowed".into(),
        code: "import math, json, random, datetime, sys\nfrom collections import Counter\nfrom sys import stdout\nsys.stderr.write('')\nstdout.write(json.dumps([math.sqrt(16), Counter('aab')['a']]) + '\\n')\ndatetime.datetime.strptime('2026-11-23', '%Y-%m-%d').year".into(),
    });
    let run = fx.eval_launch(&launch, components, Limits::default()).await;
    assert_eq!(run.outcome.status, Status::Ok, "{run:#?}");
    for (id, _, reference) in routes {
        let refs: Vec<&str> = run
            .outputs
            .iter()
            .filter_map(|o| match o {
                Output::Violation {
                    component,
                    reference,
                    ..
                } if component == id => Some(reference.as_str()),
                _ => None,
            })
            .collect();
        assert!(
            refs.contains(&reference),
            "{id}: expected a violation for {reference}, got {refs:?}\n{run:#?}"
        );
    }
    let stdout = run.stdout();
    assert!(stdout.contains("caught\n"), "{stdout}");
    assert!(stdout.contains("[4.0, 2]\n"), "{stdout}");
    assert!(
        run.outputs.iter().any(|o| matches!(o,
            Output::Value { component, text } if component == "allowed" && text == "2026")),
        "{run:#?}"
    );
    assert!(
        !run.outputs.iter().any(|o| matches!(o,
            Output::Violation { component, .. } | Output::Exception { component, .. } if component == "allowed")),
        "{run:#?}"
    );
}

/// A denied name reached as an attribute (of a module the list allows in part, or of
/// `__builtins__`) is a violation naming the rule, not an unexplained AttributeError;
/// a name that does not exist still is an AttributeError.
#[tokio::test]
async fn denied_names_reached_as_attributes_are_violations() {
    let fx = Fixture::new();
    let python = fx.runtime("python-3.11").await;
    let mut launch = python.launch();
    let list = Catalog::new(None).load("python-default").unwrap();
    launch.access_list = Some(Arc::new(list));
    let denied = [
        ("sys-modules", "import sys\nsys.modules", "sys.modules"),
        (
            "sys-getattr",
            "import sys\ngetattr(sys, 'path')",
            "sys.path",
        ),
        ("io-open", "import io\nio.open('/etc/hostname')", "io.open"),
        (
            "builtins-open",
            "__builtins__.open('/etc/hostname')",
            "builtins.open",
        ),
        (
            "builtins-eval",
            "getattr(__builtins__, 'eval')('1')",
            "builtins.eval",
        ),
        // A module's dunders are not the snippet's to read by name.
        (
            "builtins-import",
            "getattr(__builtins__, '__import__')('os')",
            "builtins.__import__",
        ),
    ];
    let mut components: Vec<Component> = denied
        .iter()
        .map(|(id, code, _)| Component {
            id: (*id).into(),
            code: (*code).into(),
        })
        .collect();
    components.push(Component {
        id: "missing".into(),
        code: "import sys\nsys.no_such_member".into(),
    });
    components.push(Component {
        id: "allowed".into(),
        code: "import sys, io\n(sys.version_info[0], io.StringIO('x').read(), __builtins__.len('ab'), __builtins__['__import__']('math').floor(2.5))".into(),
    });
    let run = fx.eval_launch(&launch, components, Limits::default()).await;
    assert_eq!(run.outcome.status, Status::Ok, "{run:#?}");
    for (id, _, reference) in denied {
        let found: Vec<(&str, &str)> = run
            .outputs
            .iter()
            .filter_map(|o| match o {
                Output::Violation {
                    component,
                    reference,
                    message,
                } if component == id => Some((reference.as_str(), message.as_str())),
                _ => None,
            })
            .collect();
        let message = format!("`{reference}` is not allowed by the access list python-default");
        assert_eq!(found, [(reference, message.as_str())], "{id}\n{run:#?}");
        assert!(
            !run.outputs
                .iter()
                .any(|o| matches!(o, Output::Exception { component, .. } if component == id)),
            "{id}: the violation is the report\n{run:#?}"
        );
    }
    assert!(
        run.outputs.iter().any(|o| matches!(o,
            Output::Exception { component, kind, message, .. }
                if component == "missing" && kind == "AttributeError"
                    && message == "module 'sys' has no attribute 'no_such_member'")),
        "{run:#?}"
    );
    assert!(
        !run.outputs
            .iter()
            .any(|o| matches!(o, Output::Violation { component, .. } if component == "missing")),
        "{run:#?}"
    );
    assert!(
        run.outputs.iter().any(|o| matches!(o,
            Output::Value { component, text } if component == "allowed" && text == "(3, 'x', 2, 2)")),
        "{run:#?}"
    );
}

/// The launch of `runtime` held to the shipped python-default list.
async fn python_default(fx: &Fixture, runtime: &str) -> evaluator::lang::Launch {
    let python = fx.runtime(runtime).await;
    let mut launch = python.launch();
    launch.access_list = Some(Arc::new(Catalog::new(None).load("python-default").unwrap()));
    launch
}

/// The references of the violations component `id` reported, in order.
fn violations<'a>(run: &'a common::Run, id: &str) -> Vec<&'a str> {
    run.outputs
        .iter()
        .filter_map(|o| match o {
            Output::Violation {
                component,
                reference,
                ..
            } if component == id => Some(reference.as_str()),
            _ => None,
        })
        .collect()
}

fn components(cases: &[(&str, &str, &str)]) -> Vec<Component> {
    cases
        .iter()
        .map(|(id, code, _)| Component {
            id: (*id).into(),
            code: (*code).into(),
        })
        .collect()
}

/// Every component of `cases` was stopped by a violation of its reference (its
/// first), which is its report: no exception.
fn assert_denied(run: &common::Run, cases: &[(&str, &str, &str)]) {
    for (id, _, reference) in cases {
        let found = violations(run, id);
        assert_eq!(
            found.first(),
            Some(reference),
            "{id}: got {found:?}\n{run:#?}"
        );
        assert!(
            !run.outputs
                .iter()
                .any(|o| matches!(o, Output::Exception { component, .. } if component == id)),
            "{id}: the violation is the report\n{run:#?}"
        );
    }
}

/// The security review's one-liners, one per class, and more of each class:
/// private members of allowed modules, function globals, frames, the pickling
/// protocols and the class graph, dynamic attribute names, allowed library code
/// reading attributes for the snippet.  None runs, the run itself ends well.
#[tokio::test]
async fn attribute_routes_around_the_list_are_stopped() {
    let fx = Fixture::new();
    let launch = python_default(&fx, "python-3.11").await;
    let cases = [
        // private members of allowed modules
        ("private", "import random\nrandom._os", "random._os"),
        ("private-system", "import random\nrandom._os.system('echo pwned')", "random._os"),
        ("private-write", "import random\nrandom._os.write(5, b'{\"event\":\"done\"}\\n')", "random._os"),
        ("private-from", "from random import _os", "random._os"),
        ("private-dynamic", "import random\ngetattr(random, '_o' + 's')", "random._os"),
        ("module-dict", "import random\nvars(random)['_os']", "random.__dict__"),
        ("sys-private", "import sys\nsys._getframe(0)", "sys._getframe"),
        ("denied-member", "import traceback\ntraceback.sys.modules['os']", "sys.modules"),
        ("denied-module-member", "import typing\ntyping.contextlib.os.system('echo pwned')", "os"),
        ("real-builtins", "import enum\nenum.bltns.exec('1')", "builtins.exec"),
        // function globals (the library's and the driver's own)
        ("globals", "import random\nrandom.choice.__globals__['_os']", "<attribute __globals__>"),
        ("driver-globals", "import sys\nsys.stdout.buffer.raw.write.__globals__", "<attribute __globals__>"),
        ("globals-dynamic", "import random\ngetattr(random.choice, '__glob' + 'als__')", "<attribute __globals__>"),
        ("function-builtins", "import json\njson.dumps.__builtins__", "<attribute __builtins__>"),
        // frames
        ("generator-frame", "def g():\n    yield 1\nx = g()\nnext(x)\nx.gi_frame.f_globals", "<attribute gi_frame>"),
        ("traceback-frame", "try:\n    1 / 0\nexcept ZeroDivisionError as e:\n    e.__traceback__.tb_frame.f_back", "<attribute tb_frame>"),
        ("frame-dynamic", "try:\n    1 / 0\nexcept ZeroDivisionError as e:\n    getattr(e.__traceback__, 'tb_' + 'frame')", "<attribute tb_frame>"),
        ("coroutine-frame", "async def c():\n    pass\nc().cr_frame", "<attribute cr_frame>"),
        ("inspect", "import inspect", "inspect"),
        ("walk-stack", "import traceback\n[f for f, _ in traceback.walk_stack(None)]", "traceback.walk_stack"),
        ("stack-locals", "import traceback\ntraceback.StackSummary.extract(iter([]), capture_locals=True)", "traceback.StackSummary"),
        ("walk-tb", "import traceback\ntry:\n    1 / 0\nexcept ZeroDivisionError as e:\n    list(traceback.walk_tb(e.__traceback__))", "traceback.walk_tb"),
        // pickling protocols, the class graph, code and cells
        ("reduce-ex", "(1).__reduce_ex__(2)", "<attribute __reduce_ex__>"),
        ("subclasses", "object.__subclasses__()", "<attribute __subclasses__>"),
        ("subclasses-walk", "().__class__.__base__.__subclasses__()", "<attribute __base__>"),
        ("mro", "int.__mro__", "<attribute __mro__>"),
        ("mro-method", "type(1).mro()", "<attribute mro>"),
        ("bases", "bool.__bases__", "<attribute __bases__>"),
        ("class-dict", "vars(int)", "<attribute __dict__>"),
        ("code", "(lambda: 1).__code__.co_consts", "<attribute __code__>"),
        ("cell", "def f():\n    x = 1\n    return lambda: x\nf().__closure__[0].cell_contents", "<attribute __closure__>"),
        ("self", "print.__self__", "<attribute __self__>"),
        ("getattribute", "import random\nobject.__getattribute__(random, '_os')", "<attribute __getattribute__>"),
        ("format", "'{0.__globals__}'.format(print)", "<attribute __globals__>"),
        ("match-pattern", "match 1:\n    case int(x):\n        pass", "<positional class pattern>"),
        // allowed library code reading attributes for the snippet
        ("starmap", "import itertools, random\nlist(itertools.starmap(getattr, [(random, '_os')]))", "random._os"),
        ("map", "import random\nlist(map(getattr, [random], ['_os']))", "random._os"),
        ("partial", "import functools, random\nfunctools.partial(getattr, random, '_os')()", "random._os"),
        ("sorted-key", "import random\nsorted([random], key=lambda m: m._os)", "random._os"),
        ("attrgetter", "import operator, random\noperator.attrgetter('_os')(random)", "random._os"),
        ("methodcaller", "import operator\noperator.methodcaller('__reduce_ex__', 2)(1)", "<attribute __reduce_ex__>"),
        ("type-hints", "import typing\ntyping.get_type_hints", "typing.get_type_hints"),
        ("formatter", "import string, random\nstring.Formatter().get_field('0.__init__.__globals__', (random.Random,), {})", "string.Formatter"),
        ("update-wrapper", "import functools, sys\nclass H:\n    pass\nfunctools.update_wrapper(sys.stdout.buffer.raw, H())", "<attribute __dict__>"),
        ("forward-ref", "import typing\ntyping.ForwardRef('f.__globals__')", "<attribute __globals__>"),
        ("dataclass-field", "import dataclasses\nC = type('C', (), {'__module__': '__main__', '__annotations__': {'a=1) #': int}})\ndataclasses.dataclass(C)", "<dataclass field name>"),
        ("class-module", "class C:\n    __module__ = 'os'", "<attribute __module__>"),
    ];
    let mut all = components(&cases);
    all.push(Component {
        id: "after".into(),
        code: "'still runs'".into(),
    });
    let run = fx.eval_launch(&launch, all, Limits::default()).await;
    assert_eq!(run.outcome.status, Status::Ok, "{run:#?}");
    assert_denied(&run, &cases);
    assert!(!run.stdout().contains("pwned"), "{}", run.stdout());
    assert!(
        run.outputs.iter().any(|o| matches!(o,
            Output::Value { component, text } if component == "after" && text == "'still runs'")),
        "{run:#?}"
    );
    fx.assert_clean().await;
}

/// The driver's event channel: no descriptor beyond stdin, stdout and stderr may be
/// opened, by the snippet or by library code for it, its stream objects cannot be
/// re-aimed, and after all of that the channel still carries the run to its end.
#[tokio::test]
async fn the_event_channel_cannot_be_written_or_forged() {
    let fx = Fixture::new();
    let launch = python_default(&fx, "python-3.11").await;
    let cases = [
        ("open-fd", "open(5, 'w')", "builtins.open"),
        ("fileio", "import io\nio.FileIO(5, 'w')", "io.FileIO"),
        (
            "stdin-class",
            "import sys\ntype(sys.stdin.buffer.raw)(5, 'w')",
            "<descriptor 5>",
        ),
        (
            "stdin-reinit",
            "import sys\nsys.stdin.buffer.raw.__init__(5, 'w', closefd=False)",
            "<descriptor 5>",
        ),
        ("socket", "import socket\nsocket.socket(fileno=5)", "socket"),
        ("mmap", "import mmap", "mmap"),
        ("fdopen", "import os\nos.fdopen(5, 'w')", "os"),
        (
            "stream-private",
            "import sys\nsys.stdout.buffer.raw._name",
            "<attribute _name>",
        ),
        (
            "library-fd",
            "import contextlib\nwith contextlib.ExitStack() as s:\n    s.callback(open, 5, 'w')",
            "builtins.open",
        ),
    ];
    let mut all = components(&cases);
    for (id, code) in [
        ("stream-store", "import sys\nsys.stdout.buffer.raw.fileno = lambda: 5"),
        ("stream-forge", "import sys\ntype(sys.stdout.buffer.raw)('stdout\",\"data\":\"\"}\\n{\"event\":\"done')"),
        ("print", "import sys\nprint('to stderr', file=sys.stderr)\nprint('to stdout')\n(sys.stdout.fileno(), sys.stderr.fileno())"),
    ] {
        all.push(Component {
            id: id.into(),
            code: code.into(),
        });
    }
    let run = fx.eval_launch(&launch, all, Limits::default()).await;
    assert_eq!(run.outcome.status, Status::Ok, "{run:#?}");
    assert_denied(&run, &cases);
    for (id, kind) in [
        ("stream-store", "AttributeError"),
        ("stream-forge", "KeyError"),
    ] {
        assert!(
            run.outputs.iter().any(|o| matches!(o,
                Output::Exception { component, kind: k, .. } if component == id && k == kind)),
            "{id}\n{run:#?}"
        );
    }
    assert_eq!(run.stdout(), "to stdout\n");
    assert!(
        run.outputs.iter().any(|o| matches!(o,
            Output::Stderr { component, data } if component == "print" && data == b"to stderr\n")),
        "{run:#?}"
    );
    assert!(
        run.outputs.iter().any(|o| matches!(o,
            Output::Value { component, text } if component == "print" && text == "(1, 2)")),
        "{run:#?}"
    );
    fx.assert_clean().await;
}

const NORMAL_CODE: &str = r#"
import collections, dataclasses, itertools, json, math, re, sys
class Point:
    def __init__(self, x, y):
        self._x, self._y = x, y
        self.__norm = math.hypot(x, y)
    def __repr__(self):
        return f"Point({self._x}, {self._y})"
    def __eq__(self, other):
        return isinstance(other, Point) and (self._x, self._y) == (other._x, other._y)
    def __hash__(self):
        return hash((self._x, self._y))
    @property
    def norm(self):
        return self.__norm
@dataclasses.dataclass(frozen=True, order=True)
class Item:
    name: str
    weight: int = 0
def squares(n):
    for i in range(n):
        yield i * i
counts = collections.Counter(re.findall(r"\w+", "a b a c a"))
pairs = list(itertools.combinations(sorted({Point(1, 2), Point(1, 2), Point(3, 4)}, key=lambda p: p.norm), 2))
print("to stderr", file=sys.stderr)
print(json.dumps({"squares": list(squares(4)), "top": counts.most_common(1)}))
print(sorted([Item("b", 2), Item("a", 1)])[0], [p.norm for p in pairs[0]], [x for x in squares(5) if x % 2])
"#;

/// Ordinary code: classes with dunder methods and private attributes, dataclasses,
/// comprehensions, generators, the standard library, and exceptions reported with
/// the snippet's traceback.
#[tokio::test]
async fn ordinary_code_runs_under_the_list() {
    let fx = Fixture::new();
    let launch = python_default(&fx, "python-3.11").await;
    let run = fx
        .eval_launch(
            &launch,
            vec![
                Component {
                    id: "normal".into(),
                    code: NORMAL_CODE.into(),
                },
                Component {
                    id: "raises".into(),
                    code: "class Account:\n    def __init__(self):\n        self._balance = 0\n    def withdraw(self, n):\n        if n > self._balance:\n            raise ValueError(f'only {self._balance}')\nAccount().withdraw(5)".into(),
                },
            ],
            Limits::default(),
        )
        .await;
    assert_eq!(run.outcome.status, Status::Ok, "{run:#?}");
    assert!(
        !run.outputs
            .iter()
            .any(|o| matches!(o, Output::Violation { .. })),
        "{run:#?}"
    );
    assert_eq!(
        run.stdout(),
        "{\"squares\": [0, 1, 4, 9], \"top\": [[\"a\", 3]]}\nItem(name='a', weight=1) [2.23606797749979, 5.0] [1, 9]\n"
    );
    assert!(
        run.outputs.iter().any(|o| matches!(o,
            Output::Stderr { component, data } if component == "normal" && data == b"to stderr\n")),
        "{run:#?}"
    );
    let exception = run.outputs.iter().find_map(|o| match o {
        Output::Exception {
            component,
            kind,
            message,
            traceback,
            line,
        } if component == "raises" => Some((kind, message, traceback, line)),
        _ => None,
    });
    let (kind, message, traceback, line) = exception.expect("an exception");
    assert_eq!(
        (kind.as_str(), message.as_str(), *line),
        ("ValueError", "only 0", Some(6))
    );
    assert_eq!(
        traceback,
        "Traceback (most recent call last):\n  File \"<raises>\", line 7, in <module>\n    Account().withdraw(5)\n  File \"<raises>\", line 6, in withdraw\n    raise ValueError(f'only {self._balance}')\nValueError: only 0\n"
    );
    fx.assert_clean().await;
}

/// numpy and pandas in python-3.11-ml under the list, when that runtime is here or
/// can be built (its build downloads the wheels): they work, and their gadgets
/// (pandas.eval reading attributes, pandas' own imports of denied modules) do not
/// open a way around the list.
#[tokio::test]
async fn numpy_and_pandas_run_under_the_list() {
    let built = evaluator::runtime::Registry::load(&common::runtimes_dir())
        .resolve("python-3.11-ml")
        .is_ok();
    let reachable = std::net::ToSocketAddrs::to_socket_addrs(&("pypi.org", 443))
        .ok()
        .and_then(|mut a| a.next())
        .is_some_and(|a| {
            std::net::TcpStream::connect_timeout(&a, std::time::Duration::from_secs(5)).is_ok()
        });
    if !built && !reachable {
        eprintln!("skipped: python-3.11-ml is not built and PyPI is out of reach");
        return;
    }
    let fx = Fixture::new();
    let launch = python_default(&fx, "python-3.11-ml").await;
    let cases = [
        ("eval-globals", "import pandas as pd, random\npd.eval('x.__init__.__globals__', local_dict={'x': random.Random}, engine='python')", "<attribute __globals__>"),
        ("query-private", "import pandas as pd, random\npd.DataFrame({'a': [1]}).query('@random._os is not None')", "random._os"),
        ("pandas-path", "import pandas as pd\npd.io.common.Path", "pathlib.Path"),
        ("pandas-mmap", "import pandas as pd\npd.io.common.mmap", "mmap"),
        ("read-pickle", "import pandas as pd, io\npd.read_pickle(io.BytesIO(b'cos\\nwrite\\n.'))", "pickle.find_class"),
        ("numpy-ctypes", "import numpy as np\nnp.ctypeslib.ctypes", "ctypes"),
        ("numpy-os", "import numpy as np\nclass F:\n    def fileno(self):\n        return 5\n    def flush(self):\n        pass\n    def tell(self):\n        return 0\n    def seek(self, *a):\n        return 0\nnp.frombuffer(b'x', dtype=np.uint8).tofile(F())", "os"),
    ];
    let mut all = components(&cases);
    all.push(Component {
        id: "works".into(),
        code: "import numpy as np, pandas as pd\na = np.arange(6).reshape(2, 3)\ndf = pd.DataFrame({'k': ['x', 'y', 'x'], 'v': [1, 2, 3]})\ndf.to_csv('/work/t.csv', index=False)\nback = pd.read_csv('/work/t.csv')\n(int(a.sum()), a.T.shape, float(np.linalg.norm([3, 4])), back.groupby('k')['v'].sum().to_dict(), df.query('v > 1').shape, isinstance(a, np.ndarray))".into(),
    });
    let run = fx.eval_launch(&launch, all, Limits::default()).await;
    assert_eq!(run.outcome.status, Status::Ok, "{run:#?}");
    assert_denied(&run, &cases);
    assert!(
        run.outputs.iter().any(|o| matches!(o,
            Output::Value { component, text } if component == "works"
                && text == "(15, (3, 2), 5.0, {'x': 4, 'y': 2}, (2, 2), True)")),
        "{run:#?}"
    );
    assert!(violations(&run, "works").is_empty(), "{run:#?}");
    fx.assert_clean().await;
}
