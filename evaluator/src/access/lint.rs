//! Rules that can never change a verdict.
//!
//! Matching is by precedence (segments, then signature rank, then line), so whether a
//! rule matters can be decided from the rules' patterns alone:
//!
//! - [`FindingKind::Duplicate`] / [`FindingKind::Shadowed`]: a later rule with the same
//!   segments and the same signature rank covers everything this one covers (the same
//!   coverage and verdict: a duplicate, possibly spelled differently, as
//!   `a.B#c` / `a.B.c`). The later rule wins every tie, so this one never decides.
//! - [`FindingKind::Redundant`]: the rule has no more specific rule below it and
//!   shadows no earlier rule, and without it every reference it decides would fall to
//!   less specific covering rules with the same verdict, down to one that covers all
//!   of it (an allow under an allow, a deny under a deny). A rule whose only fallback
//!   is "no rule covers it" is not flagged: an explicit `!sun` documents intent.
//!
//! Findings are sound, one by one and together: removing any or all flagged rules
//! changes no verdict. The checks are conservative, so some rules that do not matter
//! may go unreported.
//!
//! A separate check, [`reflective_factories`], warns about rules that matter too much:
//! a Java list must not allow API that instantiates or invokes classes named by data
//! (`LogManager#readConfiguration`, `ServiceLoader#load`, `Class#forName`,
//! deserialization, JNDI, ...), since such API does on the snippet's behalf what the
//! list denies it. [`FindingKind::ReflectiveFactory`] names the reference and the rule
//! that allows it. It is kept out of [`lint()`]: a list that allows a factory is
//! dangerous, not dead, and jsheets' own list allows several.

use std::fmt;
use std::path::PathBuf;

use super::{AccessList, Rule, TypePattern};

/// A rule that can never change a verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub file: PathBuf,
    pub line: usize,
    pub rule: String,
    pub kind: FindingKind,
}

/// Why a rule can never change a verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FindingKind {
    /// The rule at line `of` covers the same with the same verdict, and is later.
    Duplicate { of: usize },
    /// The rule at line `by` is as specific, covers at least as much, and is later.
    Shadowed { by: usize },
    /// Without this rule the rule at line `under` (or a rule between it and this one
    /// with the same verdict) decides the same for everything this one decides.
    Redundant { under: usize },
    /// The rule allows `reference`, one of the [`REFLECTIVE_FACTORIES`]: API that
    /// instantiates or invokes classes named by data.
    ReflectiveFactory { reference: &'static str },
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: `{}` ", self.file.display(), self.line, self.rule)?;
        match self.kind {
            FindingKind::Duplicate { of } => write!(f, "never decides: duplicate of line {of}"),
            FindingKind::Shadowed { by } => write!(f, "never decides: shadowed by line {by}"),
            FindingKind::Redundant { under } => {
                write!(
                    f,
                    "changes no verdict: line {under} already decides the same"
                )
            }
            FindingKind::ReflectiveFactory { reference } => write!(
                f,
                "warning: allows `{reference}`, which instantiates or invokes classes named by data"
            ),
        }
    }
}

/// The rules of `list` that can never change a verdict, in line order.
pub fn lint(list: &AccessList) -> Vec<Finding> {
    let rules = list.rules();
    let mut kinds: Vec<Option<FindingKind>> = rules
        .iter()
        .map(|rule| never_decides(rule, rules))
        .collect();
    // Rules that never decide are no one's fallback. Leaving them out of the redundancy
    // check keeps the findings sound together: removing every flagged rule at once
    // changes no verdict (not only removing any one of them).
    let deciding: Vec<&Rule> = rules
        .iter()
        .zip(&kinds)
        .filter(|(_, kind)| kind.is_none())
        .map(|(rule, _)| rule)
        .collect();
    for (rule, kind) in rules.iter().zip(&mut kinds) {
        if kind.is_none() {
            *kind = redundant(rule, rules, &deciding);
        }
    }
    rules
        .iter()
        .zip(kinds)
        .filter_map(|(rule, kind)| {
            Some(Finding {
                file: list.file().to_owned(),
                line: rule.line,
                rule: rule.text.clone(),
                kind: kind?,
            })
        })
        .collect()
}

/// Java API that instantiates or invokes classes named by data (a class name in a
/// String, a property, a configuration, a stream), one representative reference per
/// way in. `java-default` allows none of them.
pub const REFLECTIVE_FACTORIES: &[&str] = &[
    // Reflection, method handles, proxies, class loading.
    "java.lang.Class#forName(java.lang.String):java.lang.Class",
    "java.lang.Class#newInstance():java.lang.Object",
    "java.lang.Class#getMethod(java.lang.String,java.lang.Class[]):java.lang.reflect.Method",
    "java.lang.Class#getDeclaredConstructor(java.lang.Class[]):java.lang.reflect.Constructor",
    "java.lang.reflect.Method#invoke(java.lang.Object,java.lang.Object[]):java.lang.Object",
    "java.lang.reflect.Constructor#newInstance(java.lang.Object[]):java.lang.Object",
    "java.lang.reflect.Proxy#newProxyInstance(java.lang.ClassLoader,java.lang.Class[],java.lang.reflect.InvocationHandler):java.lang.Object",
    "java.lang.invoke.MethodHandles#lookup():java.lang.invoke.MethodHandles$Lookup",
    "java.lang.ClassLoader#loadClass(java.lang.String):java.lang.Class",
    "java.lang.ClassLoader#getSystemClassLoader():java.lang.ClassLoader",
    "java.lang.ModuleLayer#defineModulesWithOneLoader(java.lang.module.Configuration,java.lang.ClassLoader):java.lang.ModuleLayer",
    "java.lang.constant.DynamicConstantDesc#resolveConstantDesc(java.lang.invoke.MethodHandles$Lookup):java.lang.Object",
    "java.net.URLClassLoader#newInstance(java.net.URL[]):java.net.URLClassLoader",
    "sun.misc.Unsafe#allocateInstance(java.lang.Class):java.lang.Object",
    // Providers and configuration: the JDK instantiates the classes they name.
    "java.util.ServiceLoader#load(java.lang.Class):java.util.ServiceLoader",
    "java.util.spi.ToolProvider#findFirst(java.lang.String):java.util.Optional",
    "java.util.ResourceBundle#getBundle(java.lang.String):java.util.ResourceBundle",
    "java.util.logging.LogManager#readConfiguration(java.io.InputStream):void",
    "java.util.logging.LogManager#updateConfiguration(java.util.function.Function):void",
    "java.util.logging.Logger#getLogger(java.lang.String,java.lang.String):java.util.logging.Logger",
    "java.util.prefs.Preferences#userRoot():java.util.prefs.Preferences",
    // System properties name providers (java.util.logging.config.class, javax.xml.*).
    "java.lang.System#setProperty(java.lang.String,java.lang.String):java.lang.String",
    // Deserialization and bean decoding.
    "java.io.ObjectInputStream#readObject():java.lang.Object",
    "java.beans.Beans#instantiate(java.lang.ClassLoader,java.lang.String):java.lang.Object",
    "java.beans.XMLDecoder#readObject():java.lang.Object",
    // Lookups by name in registries and directories.
    "javax.naming.InitialContext#lookup(java.lang.String):java.lang.Object",
    "java.rmi.Naming#lookup(java.lang.String):java.rmi.Remote",
    "java.sql.DriverManager#getConnection(java.lang.String):java.sql.Connection",
    "javax.script.ScriptEngineManager#<init>()",
    "javax.xml.parsers.DocumentBuilderFactory#newInstance():javax.xml.parsers.DocumentBuilderFactory",
    "javax.xml.transform.TransformerFactory#newInstance():javax.xml.transform.TransformerFactory",
    "java.lang.management.ManagementFactory#getPlatformMBeanServer():javax.management.MBeanServer",
    "javax.tools.ToolProvider#getSystemJavaCompiler():javax.tools.JavaCompiler",
];

/// The [`REFLECTIVE_FACTORIES`] `list` allows, each with the rule that allows it, in
/// line order: warnings for a Java list (see the module documentation).
pub fn reflective_factories(list: &AccessList) -> Vec<Finding> {
    let mut findings: Vec<Finding> = REFLECTIVE_FACTORIES
        .iter()
        .filter_map(|&reference| {
            let parsed: super::Reference = reference.parse().ok()?;
            let verdict = list.check(&parsed);
            let (line, rule) = verdict.rule.filter(|_| verdict.allowed)?;
            Some(Finding {
                file: list.file().to_owned(),
                line,
                rule: rule.to_owned(),
                kind: FindingKind::ReflectiveFactory { reference },
            })
        })
        .collect();
    findings.sort_by_key(|f| f.line);
    findings
}

/// A later rule, as specific, that covers everything `rule` covers.
fn never_decides(rule: &Rule, rules: &[Rule]) -> Option<FindingKind> {
    let later = rules.iter().find(|other| {
        other.line > rule.line
            && other.segments == rule.segments
            && other.signature_rank() == rule.signature_rank()
            && includes(other, rule)
    })?;
    if later.deny == rule.deny && includes(rule, later) {
        Some(FindingKind::Duplicate { of: later.line })
    } else {
        Some(FindingKind::Shadowed { by: later.line })
    }
}

/// `rules`: the whole list; `deciding`: the rules that can decide at all.
fn redundant(rule: &Rule, rules: &[Rule], deciding: &[&Rule]) -> Option<FindingKind> {
    // Anything more specific below the rule: not flagged (as specified, conservative).
    let below = rules.iter().any(|other| {
        other.line != rule.line
            && other.segments.starts_with(&rule.segments)
            && other.specificity() > rule.specificity()
    });
    // A rule that shadows an earlier one is not flagged either: without it, the earlier
    // rule would decide again.
    let shadows = rules.iter().any(|other| {
        other.line < rule.line
            && other.segments == rule.segments
            && other.signature_rank() == rule.signature_rank()
            && includes(rule, other)
    });
    if below || shadows {
        return None;
    }
    // The rules that could decide instead of `rule`, most specific first: those whose
    // segments are a prefix of the rule's, that rank below it, and that share some of
    // its coverage.
    let mut fallbacks: Vec<&Rule> = deciding
        .iter()
        .copied()
        .filter(|other| {
            rule.segments.starts_with(&other.segments)
                && other.precedence() < rule.precedence()
                && overlaps(other, rule)
        })
        .collect();
    fallbacks.sort_by_key(|other| std::cmp::Reverse(other.precedence()));
    for fallback in fallbacks {
        if fallback.deny != rule.deny {
            return None;
        }
        if includes(fallback, rule) {
            return Some(FindingKind::Redundant {
                under: fallback.line,
            });
        }
    }
    // Some references would fall through to "no rule covers it".
    None
}

/// Whether everything `inner` covers is covered by `outer`, ignoring precedence.
fn includes(outer: &Rule, inner: &Rule) -> bool {
    let params = match (&outer.params, &inner.params) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(outer), Some(inner)) => {
            outer.len() == inner.len()
                && outer
                    .iter()
                    .zip(inner)
                    .all(|(o, i)| *o == TypePattern::Any || o == i)
        }
    };
    let ret = match (&outer.ret, &inner.ret) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(outer), Some(inner)) => outer == inner,
    };
    inner.segments.starts_with(&outer.segments) && params && ret
}

/// Whether some reference could be covered by both rules, given that one's segments
/// are a prefix of the other's.
fn overlaps(a: &Rule, b: &Rule) -> bool {
    let params = match (&a.params, &b.params) {
        (None, _) | (_, None) => true,
        (Some(a), Some(b)) => {
            a.len() == b.len()
                && a.iter()
                    .zip(b)
                    .all(|(x, y)| *x == TypePattern::Any || *y == TypePattern::Any || x == y)
        }
    };
    let ret = match (&a.ret, &b.ret) {
        (Some(a), Some(b)) => a == b,
        _ => true,
    };
    params && ret
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::access::{Reference, Signature};

    fn list(source: &str) -> AccessList {
        AccessList::parse(source, Path::new("t.access")).unwrap()
    }

    fn kinds(source: &str) -> Vec<(usize, FindingKind)> {
        let list = list(source);
        let findings = lint(&list);
        assert_sound(source, &findings);
        findings.into_iter().map(|f| (f.line, f.kind)).collect()
    }

    /// References built from the segments and types the test lists use.
    fn universe() -> Vec<Reference> {
        let paths = [
            "a",
            "a.B",
            "a.B.c",
            "a.B.c.d",
            "a.B.e",
            "a.X",
            "a.X.c",
            "b",
            "os",
            "os.path",
            "java",
            "java.util",
            "java.util.List",
            "java.util.List.clear",
            "java.util.concurrent",
            "java.util.concurrent.X",
        ];
        let types = ["int", "long", "x.Other"];
        let mut signatures = vec![Signature::new(Vec::<String>::new(), "void")];
        for ret in ["void", "int", "x.Other"] {
            for a in types {
                signatures.push(Signature::new([a], ret));
                for b in types {
                    signatures.push(Signature::new([a, b], ret));
                }
            }
        }
        let mut references = Vec::new();
        for path in paths {
            references.push(Reference::class(path));
            if let Some((owner, name)) = path.rsplit_once('.') {
                references.push(Reference::field(owner, name));
                for signature in &signatures {
                    references.push(Reference::Member {
                        owner: owner.to_owned(),
                        name: name.to_owned(),
                        signature: Some(signature.clone()),
                    });
                }
            }
        }
        references
    }

    /// `source` without the given lines (kept blank, so line numbers stay).
    fn without(source: &str, lines: &[usize]) -> AccessList {
        let source: String = source
            .lines()
            .enumerate()
            .map(|(i, line)| {
                if lines.contains(&(i + 1)) {
                    "\n".to_owned()
                } else {
                    format!("{line}\n")
                }
            })
            .collect();
        list(&source)
    }

    /// Removing a flagged rule changes no verdict over [`universe`] (for rules that
    /// never decide, not even the deciding line), and neither does removing all of
    /// them at once.
    fn assert_sound(source: &str, findings: &[Finding]) {
        let original = list(source);
        let references = universe();
        for finding in findings {
            let without = without(source, &[finding.line]);
            for reference in &references {
                let before = original.check(reference);
                let after = without.check(reference);
                match finding.kind {
                    FindingKind::Redundant { .. } => assert_eq!(
                        before.allowed, after.allowed,
                        "{source:?}: removing {finding} changes {reference}"
                    ),
                    _ => assert_eq!(before, after, "{source:?}: {finding}, {reference}"),
                }
            }
        }
        let lines: Vec<usize> = findings.iter().map(|f| f.line).collect();
        let never: Vec<usize> = findings
            .iter()
            .filter(|f| !matches!(f.kind, FindingKind::Redundant { .. }))
            .map(|f| f.line)
            .collect();
        let (all, never) = (without(source, &lines), without(source, &never));
        for reference in &references {
            let before = original.check(reference);
            assert_eq!(before, never.check(reference), "{source:?}: {reference}");
            assert_eq!(
                before.allowed,
                all.check(reference).allowed,
                "{source:?}: removing all findings changes {reference}"
            );
        }
    }

    #[test]
    fn exact_duplicates() {
        assert_eq!(kinds("a.B\na.B\n"), [(1, FindingKind::Duplicate { of: 2 })]);
        assert_eq!(
            kinds("a.B\na.B\n!a.X\na.B\n"),
            [
                (1, FindingKind::Duplicate { of: 2 }),
                (2, FindingKind::Duplicate { of: 4 })
            ]
        );
        assert_eq!(
            kinds("!a.B#c(int):void\n!a.B#c(int):void  # again\n"),
            [(1, FindingKind::Duplicate { of: 2 })]
        );
    }

    #[test]
    fn duplicates_spelled_differently() {
        assert_eq!(
            kinds("a.B#c\na.B.c\n"),
            [(1, FindingKind::Duplicate { of: 2 })]
        );
        assert_eq!(
            kinds("a.B#c(*):void\na.B#c:void\n"),
            [(1, FindingKind::Duplicate { of: 2 })]
        );
        assert_eq!(
            kinds("a.B#c(int):*\na.B#c(int)\n"),
            [(1, FindingKind::Duplicate { of: 2 })]
        );
    }

    #[test]
    fn shadowed_by_a_later_rule_as_specific() {
        assert_eq!(kinds("a.B\n!a.B\n"), [(1, FindingKind::Shadowed { by: 2 })]);
        assert_eq!(kinds("!a.B\na.B\n"), [(1, FindingKind::Shadowed { by: 2 })]);
        assert_eq!(
            kinds("a\n!a.B#c(int,int)\na.B#c(*,*)\n"),
            [(2, FindingKind::Shadowed { by: 3 })]
        );
        // The later rule covers more with the same verdict: still never decides.
        assert_eq!(
            kinds("a.B#c(int,long):void\na.B#c(*,long):void\n"),
            [(1, FindingKind::Shadowed { by: 2 })]
        );
    }

    #[test]
    fn not_shadowed() {
        // Same rank, different coverage.
        assert_eq!(kinds("!a.B#c(int)\na.B#c:void\n"), []);
        // The earlier rule covers more than the later one.
        assert_eq!(kinds("a\n!a.B#c(*,*)\na.B#c(int,int)\n"), []);
        // More specific, not the same specificity.
        assert_eq!(kinds("!a.B#c(int):void\na.B#c(int)\n"), []);
    }

    #[test]
    fn redundant_allow_under_an_allow() {
        assert_eq!(
            kinds("java.util\njava.util.List\n"),
            [(2, FindingKind::Redundant { under: 1 })]
        );
        // Precedence, not line order.
        assert_eq!(
            kinds("java.util.List\njava.util\n"),
            [(1, FindingKind::Redundant { under: 2 })]
        );
        assert_eq!(
            kinds("a.B\na.B#c(int):void\n"),
            [(2, FindingKind::Redundant { under: 1 })]
        );
        assert_eq!(
            kinds("a.B#c:void\na.B#c(int):void\n!a.B#c\n"),
            [(2, FindingKind::Redundant { under: 1 })]
        );
        // Through an intermediate rule with the same verdict.
        assert_eq!(
            kinds("a\na.B(int)\na.B#c\n"),
            [(3, FindingKind::Redundant { under: 1 })]
        );
    }

    #[test]
    fn redundant_deny_under_a_deny() {
        assert_eq!(
            kinds("!os\n!os.path\n"),
            [(2, FindingKind::Redundant { under: 1 })]
        );
        assert_eq!(
            kinds("java.util\n!java.util.concurrent\n!java.util.concurrent.X\n"),
            [(3, FindingKind::Redundant { under: 2 })]
        );
    }

    #[test]
    fn not_redundant() {
        // A different verdict.
        assert_eq!(kinds("!java.util\njava.util.List\n"), []);
        // A more specific rule below it.
        assert_eq!(
            kinds("java.util\njava.util.List\n!java.util.List#clear\n"),
            []
        );
        assert_eq!(kinds("a.B\na.B#c\n!a.B#c(int)\n"), []);
        // Only "no rule covers it" underneath: explicit denies document intent.
        assert_eq!(kinds("!sun\n!com.sun\n"), []);
        assert_eq!(kinds("!a.B#c(int)\n"), []);
        // A partial fallback with a different verdict.
        assert_eq!(kinds("a\n!a.B(int)\na.B#c\n"), []);
        // The less specific rules cover only part of it, so some references would
        // fall through to "no rule covers it".
        assert_eq!(kinds("a.B(int)\na.B#c\n"), []);
        // The table's lists.
        for source in [
            "evilcorp.coolib\n!evilcorp.coolib.Library#quit\n",
            "java.lang.Thread\n!java.lang.Thread#sleep(long):void\n",
            "a.Foo#bar\n!a.Foo#bar(int)\n",
            "!java.util.concurrent\njava.util\n",
            "java.lang\n!java.lang.System\njava.lang.System.out\n",
        ] {
            assert_eq!(kinds(source), [], "{source}");
        }
    }

    #[test]
    fn finding_display() {
        let list = list("a.B\n!a.B\njava.util\njava.util.List\n");
        let findings: Vec<String> = lint(&list).iter().map(ToString::to_string).collect();
        assert_eq!(
            findings,
            [
                "t.access:1: `a.B` never decides: shadowed by line 2",
                "t.access:4: `java.util.List` changes no verdict: line 3 already decides the same",
            ]
        );
    }

    #[test]
    fn every_reflective_factory_is_a_valid_reference() {
        for reference in REFLECTIVE_FACTORIES {
            assert!(
                reference.parse::<Reference>().is_ok(),
                "{reference} does not parse"
            );
        }
    }

    #[test]
    fn lists_that_allow_reflective_factories_are_warned_about() {
        let allowing =
            list("java.lang\n!java.lang.Class#forName\njava.util\n!java.util.logging.LogManager\n");
        let findings = reflective_factories(&allowing);
        let found: Vec<(usize, &str)> = findings
            .iter()
            .map(|f| match f.kind {
                FindingKind::ReflectiveFactory { reference } => (f.line, reference),
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(
            found,
            [
                (1, "java.lang.Class#newInstance():java.lang.Object"),
                (1, "java.lang.Class#getMethod(java.lang.String,java.lang.Class[]):java.lang.reflect.Method"),
                (1, "java.lang.Class#getDeclaredConstructor(java.lang.Class[]):java.lang.reflect.Constructor"),
                (1, "java.lang.reflect.Method#invoke(java.lang.Object,java.lang.Object[]):java.lang.Object"),
                (1, "java.lang.reflect.Constructor#newInstance(java.lang.Object[]):java.lang.Object"),
                (1, "java.lang.reflect.Proxy#newProxyInstance(java.lang.ClassLoader,java.lang.Class[],java.lang.reflect.InvocationHandler):java.lang.Object"),
                (1, "java.lang.invoke.MethodHandles#lookup():java.lang.invoke.MethodHandles$Lookup"),
                (1, "java.lang.ClassLoader#loadClass(java.lang.String):java.lang.Class"),
                (1, "java.lang.ClassLoader#getSystemClassLoader():java.lang.ClassLoader"),
                (1, "java.lang.ModuleLayer#defineModulesWithOneLoader(java.lang.module.Configuration,java.lang.ClassLoader):java.lang.ModuleLayer"),
                (1, "java.lang.constant.DynamicConstantDesc#resolveConstantDesc(java.lang.invoke.MethodHandles$Lookup):java.lang.Object"),
                (1, "java.lang.System#setProperty(java.lang.String,java.lang.String):java.lang.String"),
                (1, "java.lang.management.ManagementFactory#getPlatformMBeanServer():javax.management.MBeanServer"),
                (3, "java.util.ServiceLoader#load(java.lang.Class):java.util.ServiceLoader"),
                (3, "java.util.spi.ToolProvider#findFirst(java.lang.String):java.util.Optional"),
                (3, "java.util.ResourceBundle#getBundle(java.lang.String):java.util.ResourceBundle"),
                (3, "java.util.logging.Logger#getLogger(java.lang.String,java.lang.String):java.util.logging.Logger"),
                (3, "java.util.prefs.Preferences#userRoot():java.util.prefs.Preferences"),
            ]
        );
        assert_eq!(
            findings[0].to_string(),
            "t.access:1: `java.lang` warning: allows `java.lang.Class#newInstance():java.lang.Object`, \
             which instantiates or invokes classes named by data"
        );
        assert_eq!(reflective_factories(&list("java.util.ArrayList\n")), []);
        // Dead-rule findings and these are separate.
        assert_eq!(lint(&list("java\n")), []);
        assert_eq!(
            reflective_factories(&list("java\n")).len(),
            REFLECTIVE_FACTORIES
                .iter()
                .filter(|r| r.starts_with("java."))
                .count()
        );
    }

    /// Random lists over a small vocabulary: every finding is sound.
    #[test]
    fn findings_are_sound_on_random_lists() {
        let vocabulary = [
            "a",
            "a.B",
            "a.B#c",
            "a.B.c",
            "a.B#c(int)",
            "a.B#c(*,int)",
            "a.B#c(int,int)",
            "a.B#c:void",
            "a.B#c(int):void",
            "a.B#c(int,*):*",
            "a.B(int)",
            "a.B#c$d",
            "a.B#e",
            "a.X",
            "a.B(*,long):void",
            "a.B#c(x.Other):int",
        ];
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = |bound: usize| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            // The high bits of the LCG are the good ones.
            usize::try_from(state >> 33).unwrap_or(0) % bound
        };
        let mut flagged = 0;
        for _ in 0..600 {
            let len = 1 + next(6);
            let source: String = (0..len)
                .map(|_| {
                    let deny = if next(2) == 0 { "!" } else { "" };
                    format!("{deny}{}\n", vocabulary[next(vocabulary.len())])
                })
                .collect();
            let findings = lint(&list(&source));
            flagged += findings.len();
            assert_sound(&source, &findings);
        }
        assert!(
            flagged > 100,
            "the generator should produce findings: {flagged}"
        );
    }
}
