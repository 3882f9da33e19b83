//! Our JShell driver against stock JShell. The same snippets go through the host JDK's
//! own JShell (the oracle: the public `jdk.jshell` API with its default execution
//! engine, a second JVM driven through JDI, which redefines classes in place) and
//! through our driver in a sandbox under `java-default`; every value, exception and
//! error diagnostic (code and span) must be the same.
//!
//! The oracle evaluates each statement of a component on its own; our driver gets the
//! component as one text (the statements joined by newlines) and must find the same
//! statements in it (every statement but a component's last ends with `;`: JShell's
//! analysis takes a line without one to go on in the next). Oracle spans are relative to the statement, in UTF-16 units; ours
//! are character offsets into the component, so the statement's offset is added and
//! units are counted as characters.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use common::{Fixture, Run};
use evaluator::access::catalog::Catalog;
use evaluator::sandbox::{Limits, Status};
use evaluator::snippet::{Component, Output};

/// One evaluation: components, each a list of statements.
struct Case {
    name: &'static str,
    components: &'static [&'static [&'static str]],
}

const CASES: &[Case] = &[
    Case {
        name: "values",
        components: &[
            &["int x = 41;", "String s = \"a\" + \"b\";", "x + 1"],
            &["System.out.println(1);", ";", "Math.max(3, 4)"],
            &["x = 7;", "var list = new ArrayList<Integer>();", "list.add(3);", "list"],
            &["void hello() { }", "hello();", "long big = 1L << 40, small = 2;", "hello()"],
            &["int div(int d) { return 10 / d; }", "div(0);", "div(5)"],
        ],
    },
    Case {
        name: "forward references",
        components: &[
            &["int t() { return f(); }"],
            &["t()"],
            &["int f() { return 1; }"],
            &["t()"],
            &["int u() { return g() * 2; }", "int g() { return 21; }", "u()"],
            &["class Later { int v() { return helper(); } }"],
            &["int helper() { return 7; }", "new Later().v()"],
        ],
    },
    Case {
        name: "method redefinition with a dependent",
        components: &[
            &["int base() { return 1; }", "int dep() { return base() * 10; }"],
            &["dep()"],
            &["int base() { return 2; }"],
            &["dep();", "base()"],
        ],
    },
    Case {
        name: "counter redefinition",
        components: &[
            &["int counter = 0;", "void inc() { counter++; }"],
            &["inc();", "inc();"],
            &["void inc() { counter += 10; }"],
            &["inc();", "counter"],
        ],
    },
    Case {
        name: "variable over a redefined method",
        components: &[
            &["int f() { return 1; }", "int x = f();"],
            &["int f() { return 2; }"],
            &["f();", "x"],
        ],
    },
    Case {
        name: "class redefinition keeps static state",
        components: &[
            &["class C { static int n = 0; static int inc() { return ++n; } }"],
            &["C.inc();", "C.inc()"],
            &["class C { static int n = 0; static int inc() { n += 10; return n; } }"],
            &["C.inc()"],
        ],
    },
    Case {
        name: "class redefinition keeps instances, a new schema does not",
        components: &[
            &[
                "class P { int v = 1; int get() { return v; } public String toString() { return \"P\" + v; } }",
                "P p = new P();",
            ],
            &["class P { int v = 1; int get() { return v * 100; } public String toString() { return \"P\" + v; } }"],
            &["p.get();", "p"],
            &["class P { int v = 1; int w = 2; int get() { return v * 100; } public String toString() { return \"P\" + v; } }"],
            &["p"],
        ],
    },
    Case {
        name: "errors in several statements of a component",
        components: &[
            &["int a = missing1;", "int b = 2;", "int c = missing2;"],
            &["int d = ;", "int e = 3;", "int f = ;"],
            &["String q = 1;", "int r = 4;", "int s = \"s\";"],
            &["int h = \"\u{1d11e}\u{1d11e}\".length() + missing4;", "int i = 5;", "int j = 1 +;"],
            &["class Bad { int m() { return ; } }", "int k = 6;"],
        ],
    },
];

/// Values, exceptions and diagnostics (code, start, end) of one component.
#[derive(Debug, Default, PartialEq, Eq)]
struct Seen {
    values: Vec<String>,
    exceptions: Vec<String>,
    diagnostics: Vec<(String, u64, u64)>,
}

/// The oracle's Java program (run by the host JDK's `java` as a source file).
const ORACLE: &str = r#"
import java.io.OutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;

import jdk.jshell.Diag;
import jdk.jshell.EvalException;
import jdk.jshell.JShell;
import jdk.jshell.Snippet;
import jdk.jshell.SnippetEvent;
import jdk.jshell.UnresolvedReferenceException;

/**
 * Input, one item a line: "R" starts a run (a fresh JShell with the driver's default
 * imports), "C" a component, "S text" a statement (\n and \\ escaped). Output, one JSON
 * object a line: the JDK version, then every event value, exception and error
 * diagnostic (UTF-16 offsets into the statement).
 */
public class JShellOracle {
    public static void main(String[] args) throws Exception {
        PrintStream quiet = new PrintStream(OutputStream.nullOutputStream());
        PrintStream out = new PrintStream(System.out, true, StandardCharsets.UTF_8);
        out.println("{\"version\":" + Runtime.version().feature() + "}");
        JShell shell = null;
        int run = -1, component = -1, statement = -1;
        for (String line : Files.readAllLines(Path.of(args[0]), StandardCharsets.UTF_8)) {
            if (line.equals("R")) {
                if (shell != null) {
                    shell.close();
                }
                shell = JShell.builder().out(quiet).err(quiet).build();
                for (String pkg : new String[] {"java.math", "java.time", "java.text", "java.util",
                        "java.util.function", "java.util.stream"}) {
                    shell.eval("import " + pkg + ".*;");
                }
                run++;
                component = -1;
            } else if (line.equals("C")) {
                component++;
                statement = -1;
            } else if (line.startsWith("S ")) {
                statement++;
                String at = "{\"run\":" + run + ",\"component\":" + component + ",\"statement\":" + statement;
                for (SnippetEvent e : shell.eval(unescape(line.substring(2)))) {
                    if (e.value() != null) {
                        out.println(at + ",\"value\":" + json(e.value()) + "}");
                    }
                    if (e.exception() != null) {
                        String type = e.exception() instanceof EvalException ee ? ee.getExceptionClassName()
                                : e.exception() instanceof UnresolvedReferenceException
                                        ? "jdk.jshell.UnresolvedReferenceException"
                                        : e.exception().getClass().getName();
                        out.println(at + ",\"exception\":" + json(type) + "}");
                    }
                    if (e.causeSnippet() == null && e.status() == Snippet.Status.REJECTED) {
                        for (Diag d : shell.diagnostics(e.snippet()).filter(Diag::isError).toList()) {
                            out.println(at + ",\"diagnostic\":" + json(d.getCode()) + ",\"start\":"
                                    + d.getStartPosition() + ",\"end\":" + d.getEndPosition() + "}");
                        }
                    }
                }
            }
        }
        if (shell != null) {
            shell.close();
        }
    }

    static String unescape(String s) {
        StringBuilder b = new StringBuilder();
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            if (c == '\\' && i + 1 < s.length()) {
                char n = s.charAt(++i);
                b.append(n == 'n' ? '\n' : n);
            } else {
                b.append(c);
            }
        }
        return b.toString();
    }

    static String json(String s) {
        StringBuilder b = new StringBuilder("\"");
        for (char c : s.toCharArray()) {
            if (c == '"' || c == '\\') {
                b.append('\\').append(c);
            } else if (c < 0x20) {
                b.append(String.format("\\u%04x", (int) c));
            } else {
                b.append(c);
            }
        }
        return b.append('"').toString();
    }
}
"#;

/// The host JDK's `java`, next to the real `/usr/bin/jshell` (the oracle is Java 17's).
fn host_java() -> PathBuf {
    let jshell = std::fs::canonicalize("/usr/bin/jshell")
        .expect("the host's JDK 17 (/usr/bin/jshell) is the oracle of these tests");
    jshell.with_file_name("java")
}

/// What stock JShell makes of every case, by case and component.
fn oracle() -> Vec<Vec<Seen>> {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("JShellOracle.java");
    std::fs::write(&source, ORACLE).unwrap();
    let mut input = String::new();
    for case in CASES {
        input.push_str("R\n");
        for component in case.components {
            input.push_str("C\n");
            for statement in *component {
                let escaped = statement.replace('\\', "\\\\").replace('\n', "\\n");
                input.push_str(&format!("S {escaped}\n"));
            }
        }
    }
    let input_file = dir.path().join("input.txt");
    std::fs::write(&input_file, input).unwrap();
    let output = Command::new(host_java())
        .arg(&source)
        .arg(&input_file)
        .output()
        .expect("running the oracle");
    assert!(
        output.status.success(),
        "the oracle failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut seen: Vec<Vec<Seen>> = CASES
        .iter()
        .map(|c| c.components.iter().map(|_| Seen::default()).collect())
        .collect();
    let mut lines = std::str::from_utf8(&output.stdout).unwrap().lines();
    let version: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert_eq!(version["version"], 17, "the oracle is JDK 17's JShell");
    for line in lines {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let (run, component, statement) = (
            v["run"].as_u64().unwrap() as usize,
            v["component"].as_u64().unwrap() as usize,
            v["statement"].as_u64().unwrap() as usize,
        );
        let statements = CASES[run].components[component];
        let into = &mut seen[run][component];
        if let Some(value) = v["value"].as_str() {
            into.values.push(value.to_owned());
        } else if let Some(exception) = v["exception"].as_str() {
            into.exceptions.push(exception.to_owned());
        } else if let Some(code) = v["diagnostic"].as_str() {
            // The statement's offset in the component, in characters, plus the span's.
            let offset: usize = statements[..statement]
                .iter()
                .map(|s| s.chars().count() + 1)
                .sum();
            let text = statements[statement];
            let chars = |utf16: u64| -> u64 {
                let mut units = 0;
                let mut count = 0;
                for c in text.chars() {
                    if units >= utf16 {
                        break;
                    }
                    units += c.len_utf16() as u64;
                    count += 1;
                }
                offset as u64 + count
            };
            into.diagnostics.push((
                code.to_owned(),
                chars(v["start"].as_u64().unwrap()),
                chars(v["end"].as_u64().unwrap()),
            ));
        }
    }
    seen
}

/// What our driver made of `case`, by component; anything else it reported is an error.
fn ours(case: &Case, run: &Run) -> Vec<Seen> {
    assert_eq!(run.outcome.status, Status::Ok, "{}: {run:#?}", case.name);
    let mut by_id: BTreeMap<String, Seen> = BTreeMap::new();
    for o in &run.outputs {
        match o {
            Output::Value { component, text } => by_id
                .entry(component.clone())
                .or_default()
                .values
                .push(text.clone()),
            Output::Exception {
                component, kind, ..
            } => by_id
                .entry(component.clone())
                .or_default()
                .exceptions
                .push(kind.clone()),
            Output::Diagnostic {
                component,
                kind,
                start,
                end,
                ..
            } => by_id
                .entry(component.clone())
                .or_default()
                .diagnostics
                .push((kind.clone(), *start, *end)),
            Output::Violation { .. } | Output::Internal { .. } => {
                panic!("{}: unexpected {o:?}", case.name)
            }
            Output::Started { .. } | Output::Stdout { .. } | Output::Stderr { .. } => {}
        }
    }
    (0..case.components.len())
        .map(|i| by_id.remove(&format!("c{i}")).unwrap_or_default())
        .collect()
}

#[tokio::test]
async fn our_driver_answers_as_stock_jshell() {
    let stock = std::thread::spawn(oracle);
    let fx = Fixture::new();
    let runtime = fx.runtime("openjdk-17").await;
    let mut launch = runtime.launch();
    launch.access_list = Some(Arc::new(Catalog::new(None).load("java-default").unwrap()));
    let mut got = Vec::new();
    for case in CASES {
        let components = case
            .components
            .iter()
            .enumerate()
            .map(|(i, statements)| Component {
                id: format!("c{i}"),
                code: statements.join("\n"),
            })
            .collect();
        let run = fx.eval_launch(&launch, components, Limits::default()).await;
        got.push(ours(case, &run));
    }
    let stock = stock.join().unwrap();

    // The oracle is what we think it is: stock JShell's values where they differ from
    // an engine that replaces classes instead of redefining them.
    let value = |case: usize, component: usize| stock[case][component].values.clone();
    assert_eq!(value(3, 3), ["", "12"], "counter: {:?}", stock[3]);
    assert_eq!(value(5, 3), ["12"], "class state: {:?}", stock[5]);
    assert_eq!(value(6, 2), ["100", "P1"], "instances: {:?}", stock[6]);
    assert_eq!(value(6, 4), ["null"], "new schema: {:?}", stock[6]);
    assert_eq!(value(1, 3), ["1"], "forward reference: {:?}", stock[1]);
    assert_eq!(value(0, 1), ["", "", "4"], "empty values: {:?}", stock[0]);
    // Errors in the first and third statements both show.
    for seen in &stock[7][..4] {
        assert_eq!(seen.diagnostics.len(), 2, "{seen:?}");
    }

    let mut differences = Vec::new();
    for ((case, stock), ours) in CASES.iter().zip(&stock).zip(&got) {
        for (i, (s, o)) in stock.iter().zip(ours).enumerate() {
            println!("{} c{i}: stock {s:?}", case.name);
            if s != o {
                differences.push(format!(
                    "{} c{i} {:?}:\n  stock JShell {s:?}\n  our driver   {o:?}",
                    case.name, case.components[i]
                ));
            }
        }
    }
    assert!(differences.is_empty(), "{}", differences.join("\n"));
    fx.assert_clean().await;
}
