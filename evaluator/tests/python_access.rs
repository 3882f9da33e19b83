//! Python snippets held to the shipped python-default list, in real sandboxes: the
//! driver's audit hooks stop every route to a denied module or builtin, and leave
//! allowed modules and library-internal imports alone.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::Fixture;
use evaluator::access::catalog::Catalog;
use evaluator::evaluate::{Component, Output};
use evaluator::sandbox::{Limits, Status};

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
        (
            "real-builtins",
            "print.__self__.__import__('os').system('true')",
            "os.system",
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
        (
            "builtins-import",
            "getattr(__builtins__, '__import__')('os')",
            "os",
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
        code: "import sys, io\n(sys.version_info[0], io.StringIO('x').read(), __builtins__.len('ab'), getattr(__builtins__, '__import__')('math').floor(2.5))".into(),
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
