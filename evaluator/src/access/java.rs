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
//!
//! JShell's own code in those classes is not the snippet's either: a declaration with
//! unresolved references (`int t() { return f(); }` before `f` exists) gets a body of
//! JShell's, `{ throw new jdk.jshell.spi.SPIResolutionException(KEY); }`, and is
//! redefined with the real body once `f` exists. See [`Generated`] for how that stub is
//! told apart from a snippet that writes the same itself.

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

/// The exception JShell's stub for an unresolved declaration throws.
const RESOLUTION_EXCEPTION: &str = "jdk.jshell.spi.SPIResolutionException";
/// Its simple name, which a snippet must write to use the class itself.
const RESOLUTION_EXCEPTION_NAME: &str = "SPIResolutionException";

/// Code JShell generates into a snippet's classes that is taken as JShell's, not the
/// snippet's, and so is not held to the list.
///
/// There is one such thing: the stub body of a declaration with unresolved references,
/// `throw new jdk.jshell.spi.SPIResolutionException(KEY)`, which compiles to exactly two
/// references, the class (`new`) and its constructor `<init>(int)`. The class files
/// cannot tell it from a snippet that writes the same (the bytecode is identical), and
/// the driver that knows which is which runs inside the sandbox, where nothing is
/// trusted. The source can: a snippet can only name a class by writing its simple name
/// (in an import, a qualified name, `new`, `X::new`, `extends`), so if no component of
/// the evaluation contains `SPIResolutionException` (after Java's `\uXXXX` escapes are
/// decoded), every such reference is JShell's. The caller decides that once per
/// evaluation with [`names_resolution_exception`]: where a component does name it (in
/// code, or only in a comment or a string), nothing is allowed beyond the list, so a
/// snippet's own `new jdk.jshell.spi.SPIResolutionException(1)`, and every other
/// `jdk.jshell` reference, is checked exactly as before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Generated {
    /// Everything is the snippet's (what [`check_class`] does).
    Nothing,
    /// JShell's stub for unresolved references: the class `SPIResolutionException` and
    /// its constructor `<init>(int)`, in JShell's classes (package `REPL`), and nothing
    /// else of `jdk.jshell`.
    ResolutionStub,
}

/// Whether a snippet's source could name `SPIResolutionException` itself: the text,
/// with Java's Unicode escapes decoded wherever they could be escapes, contains it.
/// Decoding more than javac does can only find more, never less.
pub fn names_resolution_exception(source: &str) -> bool {
    source.contains(RESOLUTION_EXCEPTION_NAME)
        || (source.contains("\\u")
            && decode_unicode_escapes(source).contains(RESOLUTION_EXCEPTION_NAME))
}

/// `source` with every `\u+XXXX` (JLS 3.3) replaced by its UTF-16 unit (a lone
/// surrogate becomes U+FFFD, which no identifier contains).
fn decode_unicode_escapes(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut units: Vec<u16> = Vec::new();
    let flush = |units: &mut Vec<u16>, out: &mut String| {
        out.extend(char::decode_utf16(units.drain(..)).map(|c| c.unwrap_or('\u{fffd}')));
    };
    let bytes = source.as_bytes();
    let mut i = 0;
    while i < source.len() {
        if bytes[i] == b'\\' {
            let mut j = i + 1;
            while j < bytes.len() && bytes[j] == b'u' {
                j += 1;
            }
            if j > i + 1 {
                if let Some(unit) = source
                    .get(j..j + 4)
                    .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
                    .and_then(|h| u16::from_str_radix(h, 16).ok())
                {
                    units.push(unit);
                    i = j + 4;
                    continue;
                }
            }
        }
        flush(&mut units, &mut out);
        let c = source[i..].chars().next().unwrap_or_default();
        out.push(c);
        i += c.len_utf8().max(1);
    }
    flush(&mut units, &mut out);
    out
}

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
    check_class_with(list, bytes, Generated::Nothing)
}

/// [`check_class`], with what `generated` names taken as JShell's own code.
pub fn check_class_with(
    list: &AccessList,
    bytes: &[u8],
    generated: Generated,
) -> Result<Vec<Denial>, ClassFileError> {
    let refs = classfile::references(bytes)?;
    let resolution_stub = generated == Generated::ResolutionStub && is_own(&refs.this_class);
    Ok(Checker {
        list,
        refs: &refs,
        resolution_stub,
    }
    .run())
}

struct Checker<'a> {
    list: &'a AccessList,
    refs: &'a ClassReferences,
    /// JShell's stub for unresolved references is JShell's (see [`Generated`]).
    resolution_stub: bool,
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
        if self.resolution_stub
            && owner == RESOLUTION_EXCEPTION
            && name == "<init>"
            && descriptor == "(I)V"
        {
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
        if is_own(name)
            || is_primitive(name)
            || (self.resolution_stub && name == RESOLUTION_EXCEPTION)
        {
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::BTreeMap;
    use std::process::Command;

    use super::*;

    /// Classes compiled by the host's `javac`, by file name.
    fn compiled(sources: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let mut javac = Command::new("javac");
        javac.arg("-d").arg(&out);
        for (path, text) in sources {
            let path = dir.path().join("src").join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, text).unwrap();
            javac.arg(path);
        }
        let status = javac.status().expect("javac (a JDK) is needed");
        assert!(status.success(), "javac failed");
        let mut classes = BTreeMap::new();
        for dir in [out.join("REPL"), out] {
            for entry in std::fs::read_dir(dir).unwrap().flatten() {
                if entry.path().is_file() {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    classes.insert(name, std::fs::read(entry.path()).unwrap());
                }
            }
        }
        classes
    }

    fn denied(list: &AccessList, bytes: &[u8], generated: Generated) -> Vec<String> {
        check_class_with(list, bytes, generated)
            .unwrap()
            .into_iter()
            .map(|d| d.reference)
            .collect()
    }

    #[test]
    fn jshells_resolution_stub_is_allowed_and_nothing_else_of_jdk_jshell() {
        let list = AccessList::parse("java.lang\n", std::path::Path::new("test.access")).unwrap();
        let classes = compiled(&[
            // What JShell compiles for `int t() { return f(); }` before `f` exists.
            (
                "REPL/$JShell$12.java",
                "package REPL; public class $JShell$12 {\n  public static int t()\n      { throw new jdk.jshell.spi.SPIResolutionException(12); } }",
            ),
            (
                "REPL/$JShell$13.java",
                "package REPL; public class $JShell$13 { public static int id(jdk.jshell.spi.SPIResolutionException e) { return e.id(); } }",
            ),
            (
                "Outside.java",
                "public class Outside { public static int t() { throw new jdk.jshell.spi.SPIResolutionException(1); } }",
            ),
        ]);
        let stub = &classes["$JShell$12.class"];
        assert_eq!(
            denied(&list, stub, Generated::Nothing),
            ["jdk.jshell.spi.SPIResolutionException#<init>(int):void",]
        );
        assert_eq!(check_class(&list, stub).unwrap().len(), 1);
        assert!(denied(&list, stub, Generated::ResolutionStub).is_empty());
        // Another member of the class is the snippet's.
        assert_eq!(
            denied(
                &list,
                &classes["$JShell$13.class"],
                Generated::ResolutionStub
            ),
            ["jdk.jshell.spi.SPIResolutionException#id():int"]
        );
        // Only JShell's own classes carry its stub.
        assert!(
            denied(&list, &classes["Outside.class"], Generated::ResolutionStub)
                .contains(&"jdk.jshell.spi.SPIResolutionException#<init>(int):void".to_owned())
        );
    }

    #[test]
    fn sources_that_could_name_the_resolution_exception() {
        for source in [
            "new jdk.jshell.spi.SPIResolutionException(1)",
            "import jdk.jshell.spi.*; throw new SPIResolutionException(0);",
            "// SPIResolutionException in a comment counts too",
            "new jdk.jshell.spi.\\u0053PIResolutionException(1)",
            "new jdk.jshell.spi.\\uuu0053\\u0050\\u0049ResolutionException(1)",
            "new jdk.jshell.spi.SPIResol\\u0075tionException(1)",
            // Decoded even where javac would not (after an odd number of backslashes).
            "\"\\\\u0053PIResolutionException\"",
        ] {
            assert!(names_resolution_exception(source), "{source}");
        }
        for source in [
            "int t() { return f(); }",
            "String s = \"\\u0053\"; // SPI ResolutionException",
            "\\u005",                              // a broken escape
            "\\u0053\\uD800PIResolutionException", // a lone surrogate
            "\u{1d11e} \\ud834\\udd1e",
        ] {
            assert!(!names_resolution_exception(source), "{source}");
        }
        assert_eq!(decode_unicode_escapes("a\\ud834\\udd1eb"), "a\u{1d11e}b");
        assert_eq!(decode_unicode_escapes("\\uuu0041\\u00e9\\x"), "A\u{e9}\\x");
    }
}
