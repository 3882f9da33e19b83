//! Java enforcement: a class file JShell produced, checked against a list before the
//! class is loaded (see the access-lists guide, "Enforcement for Java").
//!
//! Checked: every field and method reference; every method handle (how `System::exit`
//! and lambdas reach their targets); every static argument of every `invokedynamic`
//! and dynamic constant; every class named on its own (`instanceof`, `X.class`, a
//! superclass). The bootstrap methods the compiler emits for lambdas, string
//! concatenation, records and pattern switches are part of the language: allowed as
//! bootstrap methods only. References to the snippet's own classes (JShell puts them
//! all in the package `REPL`) are the snippet's business.

use std::collections::BTreeSet;

use crate::classfile::{self, ClassFileError, ClassReferences, HandleKind, MethodHandleRef};

use super::{AccessList, Reference};

/// JShell's package for every class a snippet makes.
const SNIPPET_PACKAGE: &str = "REPL.";

/// `(owner, name)` of the bootstrap methods javac emits.
const LANGUAGE_BOOTSTRAPS: [(&str, &str); 7] = [
    ("java.lang.invoke.LambdaMetafactory", "metafactory"),
    ("java.lang.invoke.LambdaMetafactory", "altMetafactory"),
    (
        "java.lang.invoke.StringConcatFactory",
        "makeConcatWithConstants",
    ),
    ("java.lang.invoke.StringConcatFactory", "makeConcat"),
    ("java.lang.runtime.ObjectMethods", "bootstrap"),
    ("java.lang.runtime.SwitchBootstraps", "typeSwitch"),
    ("java.lang.runtime.SwitchBootstraps", "enumSwitch"),
];

/// Classes javac names (InnerClasses) in every class that has a call site.
const LOOKUP_CLASSES: [&str; 2] = [
    "java.lang.invoke.MethodHandles",
    "java.lang.invoke.MethodHandles$Lookup",
];

/// One reference a class makes that the list denies.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Denial {
    /// The reference in list syntax: `java.lang.System#exit(int):void`.
    pub reference: String,
    /// How the class uses it: `call`, `field`, `method handle`, `bootstrap method`, ...
    pub usage: &'static str,
    /// Why: the deciding rule, or that no rule covers it.
    pub verdict: String,
}

impl std::fmt::Display for Denial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}` is not allowed ({}; {})",
            self.reference, self.usage, self.verdict
        )
    }
}

/// Reads `bytes` as hostile input and returns every reference the list denies, in a
/// stable order without repeats. An unreadable class file is an error, never allowed.
pub fn check_class(list: &AccessList, bytes: &[u8]) -> Result<Vec<Denial>, ClassFileError> {
    let refs = classfile::references(bytes)?;
    Ok(Checker { list, refs: &refs }.run())
}

struct Checker<'a> {
    list: &'a AccessList,
    refs: &'a ClassReferences,
}

impl Checker<'_> {
    fn run(&self) -> Vec<Denial> {
        let mut denied = Denials::default();
        let bootstraps: BTreeSet<&MethodHandleRef> = self
            .refs
            .indy
            .iter()
            .chain(&self.refs.dynamic)
            .map(|site| &site.bootstrap)
            .collect();
        // A language bootstrap is named by a Methodref (behind its method handle), its
        // owner's Class constant, and the InnerClasses entry javac adds for
        // MethodHandles$Lookup: none of these is the snippet's own use.
        let language: Vec<&MethodHandleRef> = bootstraps
            .iter()
            .copied()
            .filter(|h| is_language_bootstrap(h))
            .collect();
        let bootstrap_only = |class: &str| {
            !language.is_empty()
                && (LOOKUP_CLASSES.contains(&class)
                    || language.iter().any(|h| h.member.owner == class))
        };
        for site in self.refs.indy.iter().chain(&self.refs.dynamic) {
            if !is_language_bootstrap(&site.bootstrap) {
                self.handle(&site.bootstrap, "bootstrap method", &mut denied);
            }
            for arg in &site.static_args {
                match arg {
                    classfile::ConstantArg::MethodHandle(h) => {
                        self.handle(h, "method reference or lambda", &mut denied)
                    }
                    classfile::ConstantArg::Class(c) => {
                        self.class(c, "bootstrap argument", &mut denied)
                    }
                    classfile::ConstantArg::Dynamic { bootstrap, .. }
                        if !is_language_bootstrap(bootstrap) =>
                    {
                        self.handle(bootstrap, "bootstrap method", &mut denied)
                    }
                    _ => {}
                }
            }
        }
        for handle in &self.refs.method_handles {
            if bootstraps.contains(handle) && is_language_bootstrap(handle) {
                continue;
            }
            self.handle(handle, "method handle", &mut denied);
        }
        for member in &self.refs.members {
            if language.iter().any(|h| h.member == *member) {
                continue;
            }
            let usage = match member.kind {
                classfile::MemberKind::Field => "field",
                _ => "call",
            };
            self.member(
                &member.owner,
                &member.name,
                &member.descriptor,
                usage,
                &mut denied,
            );
        }
        for class in &self.refs.classes {
            if !bootstrap_only(class) {
                self.class(class, "class", &mut denied);
            }
        }
        denied.finish()
    }

    fn handle(&self, handle: &MethodHandleRef, usage: &'static str, out: &mut Denials) {
        let m = &handle.member;
        self.member(&m.owner, &m.name, &m.descriptor, usage, out);
    }

    fn member(
        &self,
        owner: &str,
        name: &str,
        descriptor: &str,
        usage: &'static str,
        out: &mut Denials,
    ) {
        if is_own(owner) {
            return;
        }
        // Members of array types are Object's (clone, length): the element type decides.
        if let Some(element) = owner.strip_suffix("[]") {
            self.class(element.trim_end_matches("[]"), usage, out);
            return;
        }
        let reference = if descriptor.starts_with('(') {
            match classfile::descriptor_types(descriptor) {
                Ok((params, ret)) => Reference::method(owner, name, params, ret),
                Err(_) => Reference::field(owner, name),
            }
        } else {
            Reference::field(owner, name)
        };
        let verdict = self.list.check(&reference);
        if !verdict.allowed {
            out.insert(Denial {
                reference: reference.to_string(),
                usage,
                verdict: verdict.to_string(),
            });
            out.classes_with_denied_members.insert(owner.to_owned());
        }
    }

    /// A class named on its own is allowed when the list allows it, or allows some of
    /// its members (`java.lang.System` for `System.out`): what is used of it is then
    /// checked member by member.
    fn class(&self, name: &str, usage: &'static str, out: &mut Denials) {
        if is_own(name) || is_primitive(name) {
            return;
        }
        let reference = Reference::class(name);
        let verdict = self.list.check(&reference);
        if verdict.allowed {
            return;
        }
        let segments = reference.segments();
        let partly = self.list.rules().iter().any(|rule| {
            !rule.is_deny()
                && rule.segments().len() > segments.len()
                && rule.segments()[..segments.len()]
                    .iter()
                    .zip(&segments)
                    .all(|(a, b)| a.as_str() == *b)
        });
        // A class whose denied members are reported already needs no line of its own.
        if !partly && !out.classes_with_denied_members.contains(name) {
            out.insert(Denial {
                reference: reference.to_string(),
                usage,
                verdict: verdict.to_string(),
            });
        }
    }
}

/// Denials by reference, each reported once with the first way it was found.
#[derive(Default)]
struct Denials {
    by_reference: std::collections::BTreeMap<String, Denial>,
    classes_with_denied_members: BTreeSet<String>,
}

impl Denials {
    fn insert(&mut self, denial: Denial) {
        self.by_reference
            .entry(denial.reference.clone())
            .or_insert(denial);
    }

    fn finish(self) -> Vec<Denial> {
        self.by_reference.into_values().collect()
    }
}

fn is_own(class: &str) -> bool {
    class.starts_with(SNIPPET_PACKAGE)
}

fn is_primitive(name: &str) -> bool {
    matches!(
        name,
        "boolean" | "byte" | "char" | "short" | "int" | "long" | "float" | "double" | "void"
    )
}

fn is_language_bootstrap(handle: &MethodHandleRef) -> bool {
    handle.kind == HandleKind::InvokeStatic
        && LANGUAGE_BOOTSTRAPS
            .iter()
            .any(|(owner, name)| handle.member.owner == *owner && handle.member.name == *name)
}
