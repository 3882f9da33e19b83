//! Java snippets through the JShell driver in real sandboxes, held to the shipped
//! java-default access list, which the supervisor enforces on the class files.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::sync::Arc;

use common::{Fixture, Run};
use evaluator::access::AccessList;
use evaluator::sandbox::{Limits, Status};
use evaluator::snippet::Output;
use tokio_util::sync::CancellationToken;

use common::components;

/// What `pick` takes from the outputs of `component`.
fn of<T>(run: &Run, component: &str, pick: impl Fn(&Output) -> Option<(&str, T)>) -> Vec<T> {
    run.outputs
        .iter()
        .filter_map(|o| pick(o).filter(|(c, _)| *c == component).map(|(_, t)| t))
        .collect()
}

fn stdout_of(run: &Run, component: &str) -> String {
    of(run, component, |o| match o {
        Output::Stdout { component, data } => Some((
            component.as_str(),
            String::from_utf8_lossy(data).into_owned(),
        )),
        _ => None,
    })
    .concat()
}

fn values_of(run: &Run, component: &str) -> Vec<String> {
    of(run, component, |o| match o {
        Output::Value { component, text } => Some((component.as_str(), text.clone())),
        _ => None,
    })
}

fn violations_of(run: &Run, component: &str) -> Vec<String> {
    of(run, component, |o| match o {
        Output::Violation {
            component,
            reference,
            ..
        } => Some((component.as_str(), reference.clone())),
        _ => None,
    })
}

/// No errors of any kind in `component`.
fn assert_clean(run: &Run, component: &str) {
    let errors: Vec<&Output> = run
        .outputs
        .iter()
        .filter(|o| match o {
            Output::Diagnostic { component: c, .. }
            | Output::Exception { component: c, .. }
            | Output::Violation { component: c, .. }
            | Output::Internal { component: c, .. } => c == component,
            _ => false,
        })
        .collect();
    assert!(errors.is_empty(), "{component}: {errors:#?}");
}

#[tokio::test]
async fn the_language_works_under_the_default_list() {
    let fx = Fixture::new();
    let launch = common::java(&fx, true).await;
    let run = fx
        .eval_launch(
            &launch,
            components(&[
                "System.out.println(\"hello\");",
                "1 + 1",
                "int a = 20; int b = 22; a + b",
                "class Counter { private int n; int next() { return ++n; } }",
                "var c = new Counter(); c.next(); c.next()",
                "record Point(int x, int y) {}\nnew Point(1, 2)",
                "List.of(3, 1, 2).stream().sorted().map(i -> i * 10).collect(Collectors.toList())",
                "String name = \"jsheets\"; \"hi \" + name + \" \" + a",
                "String block = \"\"\"\n    one\n    two\n    \"\"\";\nblock.lines().count()",
                "Object o = 42;\nString kind = switch (o) {\n  case Integer i && i > 40 -> \"big \" + i;\n  case Integer i -> \"int \" + i;\n  default -> \"other\";\n};\nkind",
                "Function<Integer, Integer> twice = x -> x * 2; BigInteger.TEN.pow(3).toString() + twice.apply(4)",
            ]),
            Limits::default(),
        )
        .await;
    assert_eq!(run.outcome.status, Status::Ok, "{run:#?}");
    for c in 1..=11 {
        assert_clean(&run, &format!("c{c}"));
    }
    assert_eq!(stdout_of(&run, "c1"), "hello\n");
    // Every snippet JShell runs reports its value, as jsheets reports each one: a
    // variable's, an expression's, and an empty one for a statement or a void call.
    assert_eq!(values_of(&run, "c1"), [""]);
    assert_eq!(values_of(&run, "c2"), ["2"]);
    assert_eq!(values_of(&run, "c3"), ["20", "22", "42"]);
    // Declarations of methods and classes have none.
    assert_eq!(values_of(&run, "c4"), Vec::<String>::new());
    let c5 = values_of(&run, "c5");
    assert!(c5[0].starts_with("Counter@"), "{c5:?}");
    assert_eq!(c5[1..], ["1", "2"]);
    assert_eq!(values_of(&run, "c6"), ["Point[x=1, y=2]"]);
    assert_eq!(values_of(&run, "c7"), ["[10, 20, 30]"]);
    assert_eq!(values_of(&run, "c8"), ["\"jsheets\"", "\"hi jsheets 20\""]);
    assert_eq!(values_of(&run, "c9"), ["\"one\\ntwo\\n\"", "2"]);
    assert_eq!(values_of(&run, "c10"), ["42", "\"big 42\"", "\"big 42\""]);
    assert_eq!(values_of(&run, "c11")[1..], ["\"10008\""]);
}

#[tokio::test]
async fn diagnostics_point_into_the_component_and_exceptions_are_reported() {
    let fx = Fixture::new();
    let launch = common::java(&fx, true).await;
    let second = "int ok = 1;\nint bad = ok + missing;";
    let run = fx
        .eval_launch(
            &launch,
            components(&[
                second,
                "int f(int x) { return 10 / x; }\nf(0)",
                "System.out.println(\"after\");",
            ]),
            Limits::default(),
        )
        .await;
    assert_eq!(run.outcome.status, Status::Ok, "{run:#?}");
    let diag = run
        .outputs
        .iter()
        .find_map(|o| match o {
            Output::Diagnostic {
                component,
                kind,
                line,
                start,
                end,
                ..
            } if component == "c1" => Some((kind.clone(), *line, *start, *end)),
            _ => None,
        })
        .expect("a diagnostic for c1");
    let at = second.find("missing").unwrap() as u64;
    assert_eq!(
        diag,
        (
            "compiler.err.cant.resolve.location".into(),
            2,
            at,
            at + "missing".len() as u64
        )
    );
    let exception = run
        .outputs
        .iter()
        .find_map(|o| match o {
            Output::Exception {
                component,
                kind,
                traceback,
                line,
                ..
            } if component == "c2" => Some((kind.clone(), traceback.clone(), *line)),
            _ => None,
        })
        .expect("an exception for c2");
    assert_eq!(exception.0, "java.lang.ArithmeticException");
    assert!(
        exception.1.contains("at f (component c2, line 1)"),
        "{}",
        exception.1
    );
    assert_eq!(exception.2, Some(1));
    // Later components still run.
    assert_eq!(stdout_of(&run, "c3"), "after\n");
}

#[tokio::test]
async fn denied_references_are_reported_and_never_run() {
    let fx = Fixture::new();
    let launch = common::java(&fx, true).await;
    let exit = "java.lang.System#exit(int):void";
    let run = fx
        .eval_launch(
            &launch,
            components(&[
                "System.exit(3);",
                "IntConsumer c = System::exit;\nc.accept(4);",
                "Runnable r = () -> System.exit(5);\nr.run();",
                "Runtime.getRuntime().exec(\"true\")",
                "Class.forName(\"java.lang.Runtime\")",
                "String.class.getDeclaredMethods()",
                "ProcessHandle.current().pid()",
                "class Sneaky { void go() { Runtime.getRuntime().halt(6); } }",
                "new java.io.File(\"/etc/passwd\").exists()",
                "System.out.println(\"still here\");",
            ]),
            Limits::default(),
        )
        .await;
    // Had any of them run, the JVM would have exited with 3 to 6.
    assert_eq!(run.outcome.status, Status::Ok, "{run:#?}");
    assert_eq!(violations_of(&run, "c1"), [exit]);
    assert_eq!(violations_of(&run, "c2"), [exit]);
    assert_eq!(violations_of(&run, "c3"), [exit]);
    assert!(violations_of(&run, "c4")
        .contains(&"java.lang.Runtime#getRuntime():java.lang.Runtime".to_owned()));
    assert_eq!(
        violations_of(&run, "c5"),
        ["java.lang.Class#forName(java.lang.String):java.lang.Class"]
    );
    assert_eq!(
        violations_of(&run, "c6"),
        ["java.lang.Class#getDeclaredMethods():java.lang.reflect.Method[]"]
    );
    assert!(violations_of(&run, "c7")
        .contains(&"java.lang.ProcessHandle#current():java.lang.ProcessHandle".to_owned()));
    assert!(violations_of(&run, "c8").contains(&"java.lang.Runtime#halt(int):void".to_owned()));
    assert!(violations_of(&run, "c9")
        .iter()
        .any(|r| r.starts_with("java.io.File#<init>")));
    assert_eq!(stdout_of(&run, "c10"), "still here\n");
    // Each violation is a sandbox error naming the list.
    let message = run
        .outputs
        .iter()
        .find_map(|o| match o {
            Output::Violation { message, .. } => Some(message.clone()),
            _ => None,
        })
        .unwrap();
    assert!(message.contains("java-default"), "{message}");
}

#[tokio::test]
async fn a_denied_class_is_not_loaded_for_later_components() {
    let fx = Fixture::new();
    let launch = common::java(&fx, true).await;
    let run = fx
        .eval_launch(
            &launch,
            components(&[
                "class Quitter { static void quit() { System.exit(7); } }",
                "Quitter.quit();",
            ]),
            Limits::default(),
        )
        .await;
    assert_eq!(run.outcome.status, Status::Ok, "{run:#?}");
    assert_eq!(
        violations_of(&run, "c1"),
        ["java.lang.System#exit(int):void"]
    );
    // The class was dropped: the next component does not compile against it.
    assert!(
        run.outputs.iter().any(|o| matches!(o,
            Output::Diagnostic { component, kind, .. } if component == "c2" && kind == "compiler.err.cant.resolve.location")),
        "{run:#?}"
    );
}

#[tokio::test]
async fn limits_end_java_snippets_with_the_right_status() {
    let fx = Fixture::new();
    let launch = common::java(&fx, true).await;
    let run = fx
        .eval_launch(
            &launch,
            components(&["while (true) {}"]),
            Limits {
                wall_time: std::time::Duration::from_secs(4),
                cpu_time: std::time::Duration::from_secs(60),
                ..Limits::default()
            },
        )
        .await;
    assert_eq!(run.outcome.status, Status::WallTimeout, "{run:#?}");

    let run = fx
        .eval_launch(
            &launch,
            components(&[
                "long[] big = new long[200_000_000];",
                "System.out.println(\"no\");",
            ]),
            Limits {
                memory_bytes: 256 << 20,
                ..Limits::default()
            },
        )
        .await;
    assert_eq!(run.outcome.status, Status::MemoryLimit, "{run:#?}");
    assert!(!run.stdout().contains("no"));
    fx.assert_clean().await;
}

#[tokio::test]
async fn statements_per_component_are_capped() {
    let fx = Fixture::new();
    let launch = common::java(&fx, true).await;
    let code = "int i = 0;\n".to_owned() + &"i++;\n".repeat(120);
    let run = fx
        .eval_launch(&launch, components(&[&code, "i"]), Limits::default())
        .await;
    let limit = run.outputs.iter().find_map(|o| match o {
        Output::Diagnostic {
            component,
            kind,
            line,
            ..
        } if component == "c1" => Some((kind.clone(), *line)),
        _ => None,
    });
    assert_eq!(
        limit,
        Some(("compiler.err.jsheets.statement.limit".into(), 101)),
        "{run:#?}"
    );
    // The first hundred ran: i is 99 (the declaration is the first statement).
    assert_eq!(values_of(&run, "c2"), ["99"]);
}

#[tokio::test]
async fn without_a_list_classes_load_unchecked() {
    let fx = Fixture::new();
    let runtime = fx.runtime("openjdk-17").await;
    let launch = runtime.launch();
    assert!(launch.access_list.is_none());
    let run = fx
        .eval_launch(
            &launch,
            components(&["System.getProperty(\"java.version\").isEmpty()"]),
            Limits::default(),
        )
        .await;
    assert_eq!(values_of(&run, "c1"), ["false"], "{run:#?}");
}

#[tokio::test]
async fn a_thread_bomb_ends_at_the_process_limit() {
    let fx = Fixture::new();
    // Threads are denied by java-default; without a list the process limit holds them.
    let launch = fx.runtime("openjdk-17").await.launch();
    let run = fx
        .eval_launch(
            &launch,
            components(&["for (int i = 0; i < 100000; i++) { new Thread(() -> { try { Thread.sleep(600_000); } catch (InterruptedException e) {} }).start(); }"]),
            Limits {
                max_processes: 64,
                ..Limits::default()
            },
        )
        .await;
    assert_eq!(run.outcome.status, Status::ProcessLimit, "{run:#?}");
    fx.assert_clean().await;
}

fn exceptions_of(run: &Run, component: &str) -> Vec<String> {
    of(run, component, |o| match o {
        Output::Exception {
            component, kind, ..
        } => Some((component.as_str(), kind.clone())),
        _ => None,
    })
}

const STUB: &str = "jdk.jshell.spi.SPIResolutionException#<init>(int):void";

#[tokio::test]
async fn forward_references_pass_the_list_through_jshells_own_stub() {
    let fx = Fixture::new();
    let launch = common::java(&fx, true).await;
    let run = fx
        .eval_launch(
            &launch,
            components(&[
                "int t() { return f(); }",
                "t()",
                "int f() { return 1; }",
                "t()",
                "int u() { return g() * 2; }\nint g() { return 21; }\nu()",
                "class Later { int v() { return helper(); } }",
                "int helper() { return 7; }\nnew Later().v()",
            ]),
            Limits::default(),
        )
        .await;
    assert_eq!(run.outcome.status, Status::Ok, "{run:#?}");
    for c in ["c1", "c3", "c4", "c5", "c6", "c7"] {
        assert_clean(&run, c);
    }
    // Before `f` exists, JShell's stub body of `t` throws, as in stock JShell.
    assert_eq!(
        exceptions_of(&run, "c2"),
        ["jdk.jshell.UnresolvedReferenceException"]
    );
    assert_eq!(values_of(&run, "c4"), ["1"]);
    assert_eq!(values_of(&run, "c5"), ["42"]);
    assert_eq!(values_of(&run, "c7"), ["7"]);
}

#[tokio::test]
async fn a_snippets_own_jdk_jshell_references_stay_denied() {
    let fx = Fixture::new();
    let launch = common::java(&fx, true).await;
    // Each alone: JShell's stub is allowed in these evaluations, the snippet's own
    // references to the same class and constructor are not.
    for (code, denied) in [
        // The simple name hidden behind a Unicode escape is still the snippet's.
        (
            "Object o = new jdk.jshell.spi.\\u0053PIResolutionException(2);",
            STUB,
        ),
        (
            "jdk.jshell.JShell.create()",
            "jdk.jshell.JShell#create():jdk.jshell.JShell",
        ),
        (
            "int id(jdk.jshell.spi.SPIResolutionException e) { return e.id(); }",
            "jdk.jshell.spi.SPIResolutionException#id():int",
        ),
    ] {
        let run = fx
            .eval_launch(&launch, components(&[code]), Limits::default())
            .await;
        assert_eq!(run.outcome.status, Status::Ok, "{run:#?}");
        assert!(
            violations_of(&run, "c1").contains(&denied.to_owned()),
            "{code}: {run:#?}"
        );
    }
    let run = fx
        .eval_launch(
            &launch,
            components(&[
                "new jdk.jshell.spi.SPIResolutionException(1)",
                "void mine() { throw new jdk.jshell.spi.SPIResolutionException(0); }",
                "int t() { return f(); }",
                "System.out.println(\"after\");",
            ]),
            Limits::default(),
        )
        .await;
    assert_eq!(run.outcome.status, Status::Ok, "{run:#?}");
    assert_eq!(violations_of(&run, "c1"), [STUB]);
    assert_eq!(violations_of(&run, "c2"), [STUB]);
    // A component names the exception, so none of it is taken for JShell's own in this
    // evaluation: the stub of an unresolved declaration is denied as well.
    assert_eq!(violations_of(&run, "c3"), [STUB]);
    assert_eq!(stdout_of(&run, "c4"), "after\n");
}

#[tokio::test]
async fn a_denied_redefinition_is_not_installed_and_the_old_code_stays() {
    let fx = Fixture::new();
    let launch = common::java(&fx, true).await;
    let exit = "java.lang.System#exit(int):void";
    let run = fx
        .eval_launch(
            &launch,
            components(&[
                "int counter = 0; void inc() { counter++; }",
                "void twice() { inc(); inc(); }",
                "twice(); counter",
                "void inc() { System.exit(9); }",
                "inc(); counter",
                "twice(); counter",
                "void inc() { counter += 10; }",
                "twice(); counter",
                "class K { static int n; static int next() { return ++n; } }",
                "K.next(); K.next()",
                "class K { static int n; static int next() { System.exit(8); return n; } }",
                "K.next()",
            ]),
            Limits::default(),
        )
        .await;
    // Had a refused body been installed, the JVM would have exited with 9 or 8.
    assert_eq!(run.outcome.status, Status::Ok, "{run:#?}");
    assert_eq!(run.outcome.exit_code, Some(0), "{run:#?}");
    assert_eq!(values_of(&run, "c3"), ["", "2"]);
    assert_eq!(violations_of(&run, "c4"), [exit]);
    // The earlier `inc` is still the one that runs, called directly or from `twice`.
    assert_eq!(values_of(&run, "c5"), ["", "3"]);
    assert_eq!(values_of(&run, "c6"), ["", "5"]);
    // An allowed redefinition afterwards is installed in place.
    assert_clean(&run, "c7");
    assert_eq!(values_of(&run, "c8"), ["", "25"]);
    // A class keeps its code and its static state.
    assert_eq!(values_of(&run, "c10"), ["1", "2"]);
    assert_eq!(violations_of(&run, "c11"), [exit]);
    assert_eq!(values_of(&run, "c12"), ["3"]);
    for c in ["c5", "c6", "c8", "c10", "c12"] {
        assert_clean(&run, c);
    }
}

#[tokio::test]
async fn a_denied_variable_redeclaration_is_checked_again_each_time() {
    let fx = Fixture::new();
    let launch = common::java(&fx, true).await;
    let denied = "int v = Runtime.getRuntime().availableProcessors();";
    let run = fx
        .eval_launch(
            &launch,
            components(&["int v = 5;", denied, denied, "int v = 6; v"]),
            Limits::default(),
        )
        .await;
    assert_eq!(run.outcome.status, Status::Ok, "{run:#?}");
    let runtime = "java.lang.Runtime#getRuntime():java.lang.Runtime".to_owned();
    // Refused each time (JShell is not told it was installed), never run.
    assert!(violations_of(&run, "c2").contains(&runtime), "{run:#?}");
    assert!(violations_of(&run, "c3").contains(&runtime), "{run:#?}");
    assert_eq!(values_of(&run, "c2"), Vec::<String>::new());
    assert_eq!(values_of(&run, "c4"), ["6", "6"]);
}

/// java-default with threads allowed but for `Thread#start`, and a few more members
/// denied, to show members reached through a snippet's own classes.
fn inheritance_list() -> Arc<AccessList> {
    let default = include_str!("../../access-lists/java-default.access");
    let source = format!(
        "{default}\njava.lang.Thread\n!java.lang.Thread#start\n!java.util.logging.Level#SEVERE\n!java.lang.Iterable#forEach\n"
    );
    Arc::new(AccessList::parse(&source, Path::new("inheritance.access")).unwrap())
}

const START: &str = "java.lang.Thread#start():void";

#[tokio::test]
async fn members_inherited_through_the_snippets_classes_are_checked() {
    let fx = Fixture::new();
    let mut launch = common::java(&fx, true).await;
    launch.access_list = Some(inheritance_list());
    let run = fx
        .eval_launch(
            &launch,
            components(&[
                "class T extends Thread { public void run() { System.out.println(\"ran\"); } }",
                "new T().start();",
                "class U extends T { void f() { super.start(); } }",
                "Runnable r = new T()::start;",
                "Runnable l = () -> new T().start();",
                "class V extends Thread { public void start() { System.out.println(\"mine\"); } }\nnew V().start();",
                "class S extends java.util.logging.Level { S() { super(\"s\", 1); } }",
                "S.SEVERE",
                "S.FINE",
                "class Bag implements Iterable<Integer> { public Iterator<Integer> iterator() { return List.of(1, 2).iterator(); } }",
                "new Bag().forEach(x -> System.out.println(x));",
                "interface Starter { void start(); }",
                "class W extends Thread implements Starter {}",
                "void go(Starter s) { s.start(); }",
                "interface Greeter { default String hi() { return \"hi\"; } }\nclass G implements Greeter {}\nnew G().hi()",
                "class A {}\nclass B extends A { int f() { return 1; } }\nclass L extends ArrayList<String> {}\nvar list = new L(); list.add(\"x\"); list.size() + new B().f() + new B().hashCode() * 0",
                "Thread.sleep(200); System.out.println(\"done\");",
                "new Thread() { public void run() { System.out.println(\"ran\"); } }.start();",
                "void f() { class Local extends Thread {} new Local().start(); }",
                "interface Numbers extends Iterable<Integer> {}\nNumbers n = () -> List.of(1).iterator();\nn.forEach(x -> {});",
            ]),
            Limits::default(),
        )
        .await;
    assert_eq!(run.outcome.status, Status::Ok, "{run:#?}");
    for c in ["c1", "c7", "c9", "c12", "c14"] {
        assert_clean(&run, c);
    }
    // `new T().start()`, `super.start()` in a subclass, `T::start` and a lambda: each is
    // Thread#start, denied.
    for c in ["c2", "c3", "c4", "c5"] {
        assert_eq!(violations_of(&run, c), [START], "{c}: {run:#?}");
    }
    // Overriding start is the snippet's own code.
    assert_clean(&run, "c6");
    assert_eq!(stdout_of(&run, "c6"), "mine\n");
    // A static field read through a subclass is the library class's.
    assert_eq!(
        violations_of(&run, "c8"),
        ["java.util.logging.Level#SEVERE"]
    );
    assert_clean(&run, "c9");
    assert_eq!(values_of(&run, "c9"), ["FINE"]);
    // A library interface's default method, called on the snippet's class.
    assert_eq!(
        violations_of(&run, "c11"),
        ["java.lang.Iterable#forEach(java.util.function.Consumer):void"]
    );
    assert_eq!(stdout_of(&run, "c11"), "");
    // Thread#start would implement the snippet's Starter.start(): the class is refused.
    assert_eq!(violations_of(&run, "c13"), [START]);
    // The snippet's own default method, and ordinary inheritance.
    assert_clean(&run, "c15");
    assert_eq!(values_of(&run, "c15"), ["\"hi\""]);
    assert_clean(&run, "c16");
    assert_eq!(values_of(&run, "c16").last().map(String::as_str), Some("2"));
    // Anonymous and local classes, and a lambda of the snippet's interface.
    assert_eq!(violations_of(&run, "c18"), [START]);
    assert_eq!(violations_of(&run, "c19"), [START]);
    assert_eq!(
        violations_of(&run, "c20"),
        ["java.lang.Iterable#forEach(java.util.function.Consumer):void"]
    );
    assert_eq!(values_of(&run, "c20").len(), 1, "{run:#?}");
    // No thread of T ever ran.
    assert_eq!(stdout_of(&run, "c17"), "done\n");
    assert!(!run.stdout().contains("ran"), "{run:#?}");
}

#[tokio::test]
async fn the_jdk_instantiates_no_class_named_by_the_snippets_data() {
    let fx = Fixture::new();
    let launch = common::java(&fx, true).await;
    let config = b"handlers=java.util.logging.FileHandler\njava.util.logging.FileHandler.pattern=%t/jsheets-%u.log\n".to_vec();
    let logging = [
        "java.util.logging.LogManager.getLogManager().readConfiguration(System.in);",
        "Arrays.stream(java.util.logging.Logger.getLogger(\"\").getHandlers()).map(h -> h.getClass().getSimpleName()).toList().toString()",
    ];
    // Unchecked, the configuration read from stdin has LogManager make a FileHandler.
    let unchecked = fx.runtime("openjdk-17").await.launch();
    let run = fx
        .run_in(
            None,
            &unchecked,
            components(&logging),
            config.clone(),
            Limits::default(),
            CancellationToken::new(),
        )
        .await;
    assert_eq!(values_of(&run, "c2"), ["\"[FileHandler]\""], "{run:#?}");
    // Under java-default it is refused, and the root logger gets no FileHandler.
    let run = fx
        .run_in(
            None,
            &launch,
            components(&logging),
            config,
            Limits::default(),
            CancellationToken::new(),
        )
        .await;
    assert!(
        violations_of(&run, "c1").contains(
            &"java.util.logging.LogManager#readConfiguration(java.io.InputStream):void".to_owned()
        ),
        "{run:#?}"
    );
    assert_clean(&run, "c2");
    assert!(
        !values_of(&run, "c2")[0].contains("FileHandler"),
        "{run:#?}"
    );

    let run = fx
        .eval_launch(
            &launch,
            components(&[
                "java.util.logging.LogManager.getLogManager().updateConfiguration(k -> (o, n) -> k.equals(\"handlers\") ? \"java.util.logging.FileHandler\" : n);",
                "class M extends java.util.logging.LogManager { M() { super(); } }",
                "java.util.spi.ToolProvider.findFirst(\"jar\")",
                "ResourceBundle.getBundle(\"sun.util.logging.resources.logging\")",
                "java.util.logging.Logger.getLogger(\"x\", \"sun.util.logging.resources.logging\")",
                "Integer.getInteger(\"java.specification.version\")",
                "java.lang.module.ModuleFinder.ofSystem().findAll().size()",
                "java.lang.constant.ClassDesc.of(\"java.lang.Runtime\")",
                "java.util.ServiceLoader.load(java.nio.file.spi.FileSystemProvider.class)",
                "java.util.logging.Logger.getLogger(\"demo\").info(\"logged\");\njava.nio.charset.Charset.forName(\"UTF-8\").name() + java.util.random.RandomGenerator.of(\"L64X128MixRandom\").getClass().getSimpleName()",
            ]),
            Limits::default(),
        )
        .await;
    assert_eq!(run.outcome.status, Status::Ok, "{run:#?}");
    for (c, denied) in [
        ("c1", "java.util.logging.LogManager#updateConfiguration(java.util.function.Function):void"),
        ("c2", "java.util.logging.LogManager#<init>():void"),
        ("c3", "java.util.spi.ToolProvider#findFirst(java.lang.String):java.util.Optional"),
        ("c4", "java.util.ResourceBundle#getBundle(java.lang.String):java.util.ResourceBundle"),
        ("c5", "java.util.logging.Logger#getLogger(java.lang.String,java.lang.String):java.util.logging.Logger"),
        ("c6", "java.lang.Integer#getInteger(java.lang.String):java.lang.Integer"),
        ("c7", "java.lang.module.ModuleFinder#ofSystem():java.lang.module.ModuleFinder"),
        ("c8", "java.lang.constant.ClassDesc#of(java.lang.String):java.lang.constant.ClassDesc"),
        ("c9", "java.util.ServiceLoader#load(java.lang.Class):java.util.ServiceLoader"),
    ] {
        assert!(
            violations_of(&run, c).contains(&denied.to_owned()),
            "{c}: {:#?}",
            violations_of(&run, c)
        );
    }
    // Logging, charsets and random generators by name still work.
    assert_clean(&run, "c10");
    assert_eq!(
        values_of(&run, "c10"),
        ["", "\"UTF-8L64X128MixRandom\""],
        "{run:#?}"
    );
}
