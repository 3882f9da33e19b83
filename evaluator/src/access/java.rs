//! Java enforcement: a class file JShell produced, checked against a list before the
//! class is loaded (see the access-lists guide, "Enforcement for Java").
//!
//! Checked: every field and method reference; every method handle (how `System::exit`
//! and lambdas reach their targets); every static argument of every `invokedynamic`
//! and dynamic constant; every class named on its own (`instanceof`, `X.class`, a
//! superclass). The bootstrap methods the compiler emits for lambdas, string
//! concatenation, records and pattern switches are part of the language: allowed as
//! bootstrap methods only. The snippet's own classes (JShell puts them all in the
//! package `REPL`) are the snippet's business, but not what they inherit: a member
//! named through one of them is resolved to the class that declares it, across the
//! evaluation's components, and checked as that library class's member where it is
//! one (see [`Vetting`]).
//!
//! JShell's own code in those classes is not the snippet's either: a declaration with
//! unresolved references (`int t() { return f(); }` before `f` exists) gets a body of
//! JShell's, `{ throw new jdk.jshell.spi.SPIResolutionException(KEY); }`, and is
//! redefined with the real body once `f` exists. See [`Generated`] for how that stub is
//! told apart from a snippet that writes the same itself.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

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
///
/// The class is checked on its own: a member it reaches through another of the
/// snippet's classes is denied (that class was not vetted here); see [`Vetting`].
pub fn check_class(list: &AccessList, bytes: &[u8]) -> Result<Vec<Denial>, ClassFileError> {
    check_class_with(list, bytes, Generated::Nothing)
}

/// [`check_class`], with what `generated` names taken as JShell's own code.
pub fn check_class_with(
    list: &AccessList,
    bytes: &[u8],
    generated: Generated,
) -> Result<Vec<Denial>, ClassFileError> {
    let mut results = Vetting::new(generated).check_batch(list, &[bytes]);
    results.pop().unwrap_or_else(|| Ok(Vec::new()))
}

/// The vetting of one evaluation's classes, batch by batch (one batch: the classes of
/// one statement, loaded or redefined together).
///
/// It remembers, for every snippet class of an allowed batch, what resolving a member
/// reference needs: its superclass, its interfaces and the members it declares. A
/// reference owned by a snippet class (`REPL.$JShell$12$T#start()`: javac names the
/// static type, so `new T().start()`, `super.start()` in a subclass of `T`, `T::start`
/// and a static field read as `T.FIELD` all look like this) is resolved as the JVM
/// resolves it (JVMS 5.4.3.2 to 5.4.3.4): if a snippet class on the way declares the
/// member, it is the snippet's own code (overriding a denied method is fine); otherwise
/// the member comes from a library class or interface the snippet's classes extend,
/// and the reference is checked as if it named each library type it could come from
/// (the first library superclass of every path, and every library interface reached
/// through the snippet's types). A snippet class the supervisor has not vetted in this
/// evaluation is unknown, and a member no class declares is unresolvable: both denied.
///
/// The JVM can also select a library method for a call that names a snippet interface:
/// `class T extends Thread implements Starter {}` makes `Thread#start` the
/// implementation of `Starter.start()`. So every snippet class is checked where it is
/// defined, too: each method of the snippet's interfaces it implements by inheritance
/// is checked on the library types it may inherit it from.
///
/// Classes are remembered per evaluation, across components, and only once their batch
/// is allowed ([`Vetting::commit`]): a refused class is never loaded. A class vetted
/// again under the same name (a redefinition) adds a version; every version is taken
/// into account, since the JVM may have kept either.
#[derive(Debug)]
pub struct Vetting {
    generated: Generated,
    known: Versions,
    /// The snippet classes of the batch last checked, until it is committed.
    pending: Versions,
}

/// A class file read: its references, and its shape if it is a snippet class.
type Parsed = Result<(ClassReferences, Option<Arc<Shape>>), ClassFileError>;

/// Snippet classes by binary name, every distinct version vetted.
type Versions = HashMap<String, Vec<Arc<Shape>>>;

impl Vetting {
    /// An evaluation's vetting, with what `generated` names taken as JShell's own code.
    pub fn new(generated: Generated) -> Self {
        Vetting {
            generated,
            known: Versions::new(),
            pending: Versions::new(),
        }
    }

    /// Checks one batch of class files; for each, in order, the references the list
    /// denies or why it cannot be read. The batch's own classes are known to one
    /// another; they are remembered for later batches only after [`Vetting::commit`].
    pub fn check_batch(
        &mut self,
        list: &AccessList,
        classes: &[&[u8]],
    ) -> Vec<Result<Vec<Denial>, ClassFileError>> {
        self.pending.clear();
        let parsed: Vec<Parsed> = classes
            .iter()
            .map(|bytes| {
                let refs = classfile::references(bytes)?;
                let shape = is_own(&refs.this_class)
                    .then(|| read_shape(bytes, &refs))
                    .flatten();
                Ok((refs, shape))
            })
            .collect();
        for (refs, shape) in parsed.iter().flatten() {
            if let Some(shape) = shape {
                add_version(&mut self.pending, &refs.this_class, shape.clone());
            }
        }
        let hierarchy = Hierarchy {
            known: &self.known,
            batch: &self.pending,
        };
        let mut results: Vec<Result<Vec<Denial>, ClassFileError>> = Vec::new();
        for parsed in parsed {
            results.push(parsed.map(|(refs, shape)| {
                let resolution_stub =
                    self.generated == Generated::ResolutionStub && is_own(&refs.this_class);
                let mut denied = Checker {
                    list,
                    refs: &refs,
                    resolution_stub,
                    hierarchy: &hierarchy,
                }
                .run();
                if is_own(&refs.this_class) && shape.is_none() {
                    denied.push(Denial {
                        reference: refs.this_class.clone(),
                        usage: "class",
                        verdict: "its fields and methods could not be read".to_owned(),
                    });
                }
                denied
            }));
        }
        // Inherited implementations: of the batch's classes, and of classes vetted
        // before that now extend or implement a new version of one of them.
        let mut implementers: BTreeSet<&str> = self.pending.keys().map(String::as_str).collect();
        for name in self.known.keys() {
            if hierarchy
                .supertypes(name)
                .iter()
                .any(|t| self.pending.contains_key(*t))
            {
                implementers.insert(name);
            }
        }
        let mut extra = Denials::default();
        for class in implementers {
            hierarchy.check_implementations(list, class, &mut extra);
        }
        let extra = extra.finish();
        if !extra.is_empty() {
            match results.iter_mut().find_map(|r| r.as_mut().ok()) {
                Some(first) => {
                    first.extend(extra);
                    first.sort();
                    first.dedup_by(|a, b| a.reference == b.reference);
                }
                None => results.push(Ok(extra)),
            }
        }
        results
    }

    /// The batch last checked was allowed (its classes may be loaded): its snippet
    /// classes are remembered for resolving the references of later batches.
    pub fn commit(&mut self) {
        for (name, versions) in self.pending.drain() {
            for shape in versions {
                add_version(&mut self.known, &name, shape);
            }
        }
    }
}

fn add_version(versions: &mut Versions, name: &str, shape: Arc<Shape>) {
    let entry = versions.entry(name.to_owned()).or_default();
    if !entry.contains(&shape) {
        entry.push(shape);
    }
}

struct Checker<'a> {
    list: &'a AccessList,
    refs: &'a ClassReferences,
    /// JShell's stub for unresolved references is JShell's (see [`Generated`]).
    resolution_stub: bool,
    /// The snippet classes known while checking this class.
    hierarchy: &'a Hierarchy<'a>,
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
        // Members of array types are Object's (clone, length): the element type decides.
        if let Some(element) = owner.strip_suffix("[]") {
            self.class(element.trim_end_matches("[]"), usage, out);
            return;
        }
        if is_own(owner) {
            self.own_member(owner, name, descriptor, usage, out);
            return;
        }
        if self.resolution_stub
            && owner == RESOLUTION_EXCEPTION
            && name == "<init>"
            && descriptor == "(I)V"
        {
            return;
        }
        check_library_member(self.list, owner, name, descriptor, usage, None, out);
    }

    /// A member named through one of the snippet's classes: its own, or a library
    /// member it inherits (see [`Vetting`]).
    fn own_member(
        &self,
        owner: &str,
        name: &str,
        descriptor: &str,
        usage: &'static str,
        out: &mut Denials,
    ) {
        let resolution = self.hierarchy.resolve(owner, name, descriptor);
        let failure = match &resolution.unknown {
            Some(unknown) => Some(format!(
                "denied: {} is not a class this evaluation has vetted",
                shown(unknown)
            )),
            None if resolution.library.is_empty() && !resolution.declared => Some(format!(
                "denied: neither {} nor a class it extends declares it",
                shown(owner)
            )),
            None => None,
        };
        if let Some(verdict) = failure {
            out.insert(Denial {
                reference: reference(owner, name, descriptor).to_string(),
                usage,
                verdict,
            });
            return;
        }
        for library in &resolution.library {
            check_library_member(
                self.list,
                library,
                name,
                descriptor,
                usage,
                Some(&format!("inherited through {}", shown(owner))),
                out,
            );
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

/// `owner#name` with the signature `descriptor` gives (a field for a field descriptor).
fn reference(owner: &str, name: &str, descriptor: &str) -> Reference {
    if descriptor.starts_with('(') {
        match classfile::descriptor_types(descriptor) {
            Ok((params, ret)) => Reference::method(owner, name, params, ret),
            Err(_) => Reference::field(owner, name),
        }
    } else {
        Reference::field(owner, name)
    }
}

/// Checks a member of a library class; `how` says how the snippet reached it, when not
/// by naming the class itself.
fn check_library_member(
    list: &AccessList,
    owner: &str,
    name: &str,
    descriptor: &str,
    usage: &'static str,
    how: Option<&str>,
    out: &mut Denials,
) {
    let reference = reference(owner, name, descriptor);
    let verdict = list.check(&reference);
    if !verdict.allowed {
        let verdict = match how {
            Some(how) => format!("{verdict}; {how}"),
            None => verdict.to_string(),
        };
        out.insert(Denial {
            reference: reference.to_string(),
            usage,
            verdict,
        });
        out.classes_with_denied_members.insert(owner.to_owned());
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

/// A snippet class as the user wrote it: `REPL.$JShell$12$T$Inner` is `T.Inner`, the
/// wrapper JShell makes for a method or variable (`REPL.$JShell$12`) "the snippet".
fn shown(class: &str) -> String {
    let Some(rest) = class.strip_prefix("REPL.$JShell$") else {
        return format!("`{class}`");
    };
    match rest.split_once('$') {
        Some((_, name)) if !name.is_empty() => format!("`{}`", name.replace('$', ".")),
        _ => "the snippet".to_owned(),
    }
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

// ---- Snippet classes: what resolution needs of them, and resolution itself.

const OBJECT: &str = "java.lang.Object";

/// Object's methods, `(name, descriptor)`: the only members a class that extends
/// Object directly can inherit from it.
const OBJECT_METHODS: [(&str, &str); 11] = [
    ("hashCode", "()I"),
    ("equals", "(Ljava/lang/Object;)Z"),
    ("toString", "()Ljava/lang/String;"),
    ("getClass", "()Ljava/lang/Class;"),
    ("notify", "()V"),
    ("notifyAll", "()V"),
    ("wait", "()V"),
    ("wait", "(J)V"),
    ("wait", "(JI)V"),
    ("clone", "()Ljava/lang/Object;"),
    ("finalize", "()V"),
];

/// Most snippet types one resolution visits: a hierarchy that size is not javac's.
const MAX_VISITED: usize = 10_000;

const ACC_PRIVATE: u16 = 0x0002;
const ACC_STATIC: u16 = 0x0008;
const ACC_INTERFACE: u16 = 0x0200;

/// What resolving member references needs of one snippet class, from its class file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Shape {
    interface: bool,
    super_class: Option<String>,
    interfaces: Vec<String>,
    /// `(name, descriptor)` of every field it declares.
    fields: BTreeSet<(String, String)>,
    /// `(name, descriptor)` of every method it declares, with its access flags.
    methods: BTreeMap<(String, String), u16>,
}

impl Shape {
    fn declares_method(&self, key: &(String, String)) -> bool {
        self.methods.contains_key(key)
    }
}

/// The snippet classes known while checking a batch: those of earlier allowed
/// batches and the batch's own.
struct Hierarchy<'a> {
    known: &'a Versions,
    batch: &'a Versions,
}

/// How a member reference through a snippet class resolves.
#[derive(Debug, Default, PartialEq, Eq)]
struct Resolution {
    /// A snippet class on the way declares it.
    declared: bool,
    /// Library types it may be inherited from.
    library: BTreeSet<String>,
    /// A snippet class on the way that was never vetted (or too many of them).
    unknown: Option<String>,
}

impl Hierarchy<'_> {
    fn versions(&self, class: &str) -> Vec<&Shape> {
        self.known
            .get(class)
            .into_iter()
            .chain(self.batch.get(class))
            .flatten()
            .map(|shape| &**shape)
            .collect()
    }

    /// Every supertype name of `class` reachable through snippet types (its versions
    /// included).
    fn supertypes(&self, class: &str) -> BTreeSet<&str> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![class];
        while let Some(c) = stack.pop() {
            if seen.len() > MAX_VISITED {
                break;
            }
            for v in self.versions(c) {
                for s in v.super_class.iter().chain(&v.interfaces) {
                    if seen.insert(s.as_str()) && is_own(s) {
                        stack.push(s);
                    }
                }
            }
        }
        seen
    }

    /// Resolves `owner#name` (`descriptor`: a field's or a method's) as the JVM would,
    /// as far as the snippet's classes go.
    fn resolve(&self, owner: &str, name: &str, descriptor: &str) -> Resolution {
        let key = (name.to_owned(), descriptor.to_owned());
        if !descriptor.starts_with('(') {
            return self.resolve_field(owner, &key);
        }
        if name == "<init>" || name == "<clinit>" {
            // Never inherited: the class itself declares it, every version of it.
            let versions = self.versions(owner);
            return Resolution {
                declared: !versions.is_empty() && versions.iter().all(|v| v.declares_method(&key)),
                library: BTreeSet::new(),
                unknown: versions.is_empty().then(|| owner.to_owned()),
            };
        }
        self.resolve_method(owner, &key, true)
    }

    /// JVMS 5.4.3.2: the class, its superinterfaces, its superclass, recursively. Every
    /// library type reached through snippet types that do not declare it may hold it.
    fn resolve_field(&self, owner: &str, key: &(String, String)) -> Resolution {
        let mut resolution = Resolution::default();
        let mut seen = BTreeSet::new();
        let mut stack = vec![owner];
        while let Some(c) = stack.pop() {
            if !is_own(c) {
                // Object declares no fields.
                if c != OBJECT {
                    resolution.library.insert(c.to_owned());
                }
                continue;
            }
            if !seen.insert(c) {
                continue;
            }
            let versions = self.versions(c);
            if versions.is_empty() || seen.len() > MAX_VISITED {
                resolution.unknown = Some(c.to_owned());
                return resolution;
            }
            for v in versions {
                if v.fields.contains(key) {
                    resolution.declared = true;
                    continue;
                }
                stack.extend(v.interfaces.iter().map(String::as_str));
                stack.extend(v.super_class.as_deref());
            }
        }
        resolution
    }

    /// JVMS 5.4.3.3 and 5.4.3.4: the superclass chain first, then the superinterfaces.
    /// With `interfaces_declare`, a snippet interface that declares the method ends the
    /// search through it (it is more specific than its superinterfaces); without, they
    /// are searched past (for what may implement such a declaration).
    fn resolve_method(
        &self,
        owner: &str,
        key: &(String, String),
        interfaces_declare: bool,
    ) -> Resolution {
        let mut resolution = Resolution::default();
        // The superclass chains of every version; `open`: the snippet classes on a
        // chain before its first library class, where no snippet class declared it.
        let mut open: Vec<&Shape> = Vec::new();
        let mut seen = BTreeSet::new();
        let mut stack = vec![owner];
        while let Some(c) = stack.pop() {
            if !seen.insert(c) {
                continue;
            }
            let versions = self.versions(c);
            if versions.is_empty() || seen.len() > MAX_VISITED {
                resolution.unknown = Some(c.to_owned());
                return resolution;
            }
            for v in versions {
                if v.declares_method(key) {
                    resolution.declared = true;
                    continue;
                }
                open.push(v);
                match v.super_class.as_deref() {
                    Some(s) if is_own(s) => stack.push(s),
                    Some(s) if s != OBJECT || is_object_method(key) => {
                        resolution.library.insert(s.to_owned());
                    }
                    _ => {}
                }
            }
        }
        if open.is_empty() {
            // Every chain found a declaration of the snippet's before any interface.
            return resolution;
        }
        let mut seen = BTreeSet::new();
        let mut stack: Vec<&str> = open
            .iter()
            .flat_map(|v| v.interfaces.iter().map(String::as_str))
            .collect();
        while let Some(i) = stack.pop() {
            if !is_own(i) {
                resolution.library.insert(i.to_owned());
                continue;
            }
            if !seen.insert(i) {
                continue;
            }
            let versions = self.versions(i);
            if versions.is_empty() || seen.len() > MAX_VISITED {
                resolution.unknown = Some(i.to_owned());
                return resolution;
            }
            for v in versions {
                if v.declares_method(key) {
                    resolution.declared = true;
                    if interfaces_declare {
                        continue;
                    }
                }
                stack.extend(v.interfaces.iter().map(String::as_str));
            }
        }
        resolution
    }

    /// Checks the methods of the snippet's interfaces that `class` implements by
    /// inheriting a library method (see [`Vetting`]).
    fn check_implementations(&self, list: &AccessList, class: &str, out: &mut Denials) {
        let versions = self.versions(class);
        if versions.iter().all(|v| v.interface) {
            return;
        }
        // The snippet interfaces `class` implements, and their abstract and default
        // methods.
        let mut wanted: BTreeMap<(String, String), &str> = BTreeMap::new();
        for supertype in self.supertypes(class) {
            if !is_own(supertype) {
                continue;
            }
            for v in self.versions(supertype).into_iter().filter(|v| v.interface) {
                for (key, flags) in &v.methods {
                    if flags & (ACC_STATIC | ACC_PRIVATE) == 0 && key.0 != "<clinit>" {
                        wanted.entry(key.clone()).or_insert(supertype);
                    }
                }
            }
        }
        for (key, interface) in wanted {
            let resolution = self.resolve_method(class, &key, false);
            if let Some(unknown) = resolution.unknown {
                out.insert(Denial {
                    reference: unknown.clone(),
                    usage: "class",
                    verdict: format!(
                        "denied: {} is not a class this evaluation has vetted",
                        shown(&unknown)
                    ),
                });
                return;
            }
            for library in &resolution.library {
                check_library_member(
                    list,
                    library,
                    &key.0,
                    &key.1,
                    "inherited implementation",
                    Some(&format!(
                        "{} may inherit it as its implementation of `{}` of {}",
                        shown(class),
                        key.0,
                        shown(interface)
                    )),
                    out,
                );
            }
        }
    }
}

fn is_object_method(key: &(String, String)) -> bool {
    OBJECT_METHODS
        .iter()
        .any(|(name, descriptor)| key.0 == *name && key.1 == *descriptor)
}

/// The access flags and declared members of a class file [`classfile::references`]
/// has read already; `None` where they cannot be read (never expected then). Bounds
/// checked like the reader itself: the bytes are still hostile.
fn read_shape(bytes: &[u8], refs: &ClassReferences) -> Option<Arc<Shape>> {
    let mut r = Cursor { bytes, pos: 0 };
    r.take(8)?; // magic, minor and major version
    let count = r.u16()?;
    let mut utf8: Vec<Option<&[u8]>> = vec![None; usize::from(count)];
    let mut index = 1;
    while index < count {
        let tag = r.u8()?;
        match tag {
            1 => {
                let len = r.u16()?;
                *utf8.get_mut(usize::from(index))? = Some(r.take(usize::from(len))?);
            }
            7 | 8 | 16 | 19 | 20 => r.skip(2)?,
            15 => r.skip(3)?,
            3 | 4 | 9 | 10 | 11 | 12 | 17 | 18 => r.skip(4)?,
            5 | 6 => {
                r.skip(8)?;
                index = index.checked_add(1)?;
            }
            _ => return None,
        }
        index = index.checked_add(1)?;
    }
    let flags = r.u16()?;
    r.skip(4)?; // this and super class
    let interface_count = r.u16()?;
    r.skip(usize::from(interface_count) * 2)?;
    let fields = read_declared(&mut r, &utf8)?
        .into_iter()
        .map(|(_, name, descriptor)| (name, descriptor))
        .collect();
    let methods = read_declared(&mut r, &utf8)?
        .into_iter()
        .map(|(flags, name, descriptor)| ((name, descriptor), flags))
        .collect();
    Some(Arc::new(Shape {
        interface: flags & ACC_INTERFACE != 0,
        super_class: refs.super_class.clone(),
        interfaces: refs.interfaces.clone(),
        fields,
        methods,
    }))
}

/// `field_info` or `method_info` entries: access flags, name and descriptor.
fn read_declared(r: &mut Cursor<'_>, utf8: &[Option<&[u8]>]) -> Option<Vec<(u16, String, String)>> {
    let count = r.u16()?;
    let text = |index: u16| -> Option<String> { decode_mutf8((*utf8.get(usize::from(index))?)?) };
    let mut members = Vec::new();
    for _ in 0..count {
        let flags = r.u16()?;
        let name = text(r.u16()?)?;
        let descriptor = text(r.u16()?)?;
        let attributes = r.u16()?;
        for _ in 0..attributes {
            r.skip(2)?;
            let len = usize::try_from(r.u32()?).ok()?;
            r.skip(len)?;
        }
        members.push((flags, name, descriptor));
    }
    Some(members)
}

/// Modified UTF-8 (JVMS 4.4.7) as the class-file reader decodes it; `None` for
/// anything that is not exactly a Rust string.
fn decode_mutf8(bytes: &[u8]) -> Option<String> {
    crate::classfile::mutf8::decode(bytes)
        .ok()
        .filter(|t| t.exact)
        .map(|t| t.text)
}

/// A bounds-checked big-endian cursor.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, len: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(len)?;
        let slice = self.bytes.get(self.pos..end)?;
        self.pos = end;
        Some(slice)
    }

    fn skip(&mut self, len: usize) -> Option<()> {
        self.take(len).map(|_| ())
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1)?.first().copied()
    }

    fn u16(&mut self) -> Option<u16> {
        let b = self.take(2)?;
        Some(u16::from_be_bytes([*b.first()?, *b.get(1)?]))
    }

    fn u32(&mut self) -> Option<u32> {
        let b = self.take(4)?;
        Some(u32::from_be_bytes([
            *b.first()?,
            *b.get(1)?,
            *b.get(2)?,
            *b.get(3)?,
        ]))
    }
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

    /// Checks the batch `names` (file names in `classes`), commits it when nothing is
    /// denied, and returns the denied references.
    fn vet(
        vetting: &mut Vetting,
        list: &AccessList,
        classes: &BTreeMap<String, Vec<u8>>,
        names: &[&str],
    ) -> Vec<String> {
        let bytes: Vec<&[u8]> = names
            .iter()
            .map(|n| classes[&format!("{n}.class")].as_slice())
            .collect();
        let denied: Vec<String> = vetting
            .check_batch(list, &bytes)
            .into_iter()
            .flat_map(|r| r.unwrap())
            .map(|d| d.reference)
            .collect();
        if denied.is_empty() {
            vetting.commit();
        }
        denied
    }

    fn list(source: &str) -> AccessList {
        AccessList::parse(source, std::path::Path::new("test.access")).unwrap()
    }

    /// What JShell makes of `class T extends Thread {}` and friends: one wrapper class
    /// per snippet in the package `REPL`, the declared class nested in it.
    const SNIPPETS: &[(&str, &str)] = &[
        ("REPL/$JShell$11.java", "package REPL; public class $JShell$11 { public static class T extends Thread {} }"),
        ("REPL/$JShell$12.java", "package REPL; public class $JShell$12 { public static void go() { new $JShell$11.T().start(); } }"),
        ("REPL/$JShell$13.java", "package REPL; public class $JShell$13 { public static class U extends $JShell$11.T { public void f() { super.start(); } } }"),
        ("REPL/$JShell$14.java", "package REPL; public class $JShell$14 { public static class V extends Thread { public void start() { } public void g() { super.start(); } } public static void go() { new V().start(); } }"),
        ("REPL/$JShell$15.java", "package REPL; public class $JShell$15 { public static Runnable r = new $JShell$11.T()::start; public static Runnable l = () -> new $JShell$11.T().start(); }"),
        ("REPL/$JShell$16.java", "package REPL; public class $JShell$16 { public static class S extends java.util.logging.Level { S() { super(\"s\", 1); } } public static Object o = S.SEVERE; public static Object fine = S.FINE; }"),
        ("REPL/$JShell$17.java", "package REPL; public class $JShell$17 { public static class Bag implements Iterable<Integer> { public java.util.Iterator<Integer> iterator() { return java.util.List.of(1).iterator(); } } public static void go() { new Bag().forEach(x -> { }); new Bag().spliterator(); } }"),
        ("REPL/$JShell$18.java", "package REPL; public class $JShell$18 { public interface Greeter { default String hi() { return \"hi\"; } } public static class G implements Greeter { } public static String go() { return new G().hi() + new G().hashCode(); } }"),
        ("REPL/$JShell$19.java", "package REPL; public class $JShell$19 { public interface Starter { void start(); } }"),
        ("REPL/$JShell$20.java", "package REPL; public class $JShell$20 { public static class W extends Thread implements $JShell$19.Starter { } }"),
        ("REPL/$JShell$21.java", "package REPL; public class $JShell$21 { public static void go($JShell$19.Starter s) { s.start(); } }"),
        ("REPL/$JShell$22.java", "package REPL; public class $JShell$22 { public static class A { } public static class B extends A { void f() { } } public static class L extends java.util.ArrayList<String> { } public static Object go() { new B().f(); new L().add(\"x\"); new L().size(); return new B().toString() + new B().hashCode(); } }"),
    ];

    #[test]
    fn members_reached_through_snippet_classes_are_checked_where_they_are_declared() {
        let list = list("java.lang\njava.util\n!java.lang.Thread#start\n!java.util.logging.Level#SEVERE\n!java.lang.Iterable#forEach\n");
        let classes = compiled(SNIPPETS);
        let start = "java.lang.Thread#start():void";
        let mut v = Vetting::new(Generated::Nothing);
        // Unknown: the class of `T` has not been vetted in this evaluation.
        assert_eq!(
            vet(&mut v, &list, &classes, &["$JShell$12"]),
            [
                "REPL.$JShell$11$T#<init>():void",
                "REPL.$JShell$11$T#start():void"
            ]
        );
        // Extending Thread is allowed; `new T().start()` is Thread#start.
        assert!(vet(&mut v, &list, &classes, &["$JShell$11", "$JShell$11$T"]).is_empty());
        assert_eq!(vet(&mut v, &list, &classes, &["$JShell$12"]), [start]);
        // `super.start()` in a subclass of T, and T::start and a lambda.
        assert_eq!(
            vet(&mut v, &list, &classes, &["$JShell$13", "$JShell$13$U"]),
            [start]
        );
        assert_eq!(vet(&mut v, &list, &classes, &["$JShell$15"]), [start]);
        // Overriding start is the snippet's own code; its `super.start()` is not.
        assert_eq!(
            vet(&mut v, &list, &classes, &["$JShell$14", "$JShell$14$V"]),
            [start]
        );
        // A static field inherited from a library class.
        assert_eq!(
            vet(&mut v, &list, &classes, &["$JShell$16", "$JShell$16$S"]),
            ["java.util.logging.Level#SEVERE"]
        );
        // A library interface's default method.
        assert_eq!(
            vet(&mut v, &list, &classes, &["$JShell$17", "$JShell$17$Bag"]),
            ["java.lang.Iterable#forEach(java.util.function.Consumer):void"]
        );
        // A default method of the snippet's own interface, and Object's methods.
        assert!(vet(
            &mut v,
            &list,
            &classes,
            &["$JShell$18", "$JShell$18$Greeter", "$JShell$18$G"]
        )
        .is_empty());
        // Thread#start as the implementation of the snippet's `Starter.start()`.
        assert!(vet(
            &mut v,
            &list,
            &classes,
            &["$JShell$19", "$JShell$19$Starter"]
        )
        .is_empty());
        let w = [
            classes["$JShell$20.class"].as_slice(),
            classes["$JShell$20$W.class"].as_slice(),
        ];
        let denials: Vec<String> = v
            .check_batch(&list, &w)
            .into_iter()
            .flat_map(|r| r.unwrap())
            .map(|d| d.to_string())
            .collect();
        assert_eq!(
            denials,
            [
                "`java.lang.Thread#start():void` is not allowed (inherited implementation; \
              denied by line 3 `!java.lang.Thread#start`; `W` may inherit it as its \
              implementation of `start` of `Starter`)"
            ]
        );
        // W was refused, so calling Starter.start() reaches only the snippet's classes.
        assert!(vet(&mut v, &list, &classes, &["$JShell$21"]).is_empty());
        // Ordinary inheritance.
        assert!(vet(
            &mut v,
            &list,
            &classes,
            &["$JShell$22", "$JShell$22$A", "$JShell$22$B", "$JShell$22$L"]
        )
        .is_empty());
    }

    #[test]
    fn the_usage_names_how_an_inherited_member_was_reached() {
        let list = list("java.lang\n!java.lang.Thread#start\n");
        let classes = compiled(&SNIPPETS[..2]);
        let mut v = Vetting::new(Generated::Nothing);
        vet(&mut v, &list, &classes, &["$JShell$11", "$JShell$11$T"]);
        let denials = v
            .check_batch(&list, &[classes["$JShell$12.class"].as_slice()])
            .pop()
            .unwrap()
            .unwrap();
        assert_eq!(denials.len(), 1);
        assert_eq!(
            denials[0].to_string(),
            "`java.lang.Thread#start():void` is not allowed (call; denied by line 2 \
             `!java.lang.Thread#start`; inherited through `T`)"
        );
        // Nothing of a batch is remembered before it is committed.
        let mut fresh = Vetting::new(Generated::Nothing);
        fresh.check_batch(&list, &[classes["$JShell$11$T.class"].as_slice()]);
        assert!(vet(&mut fresh, &list, &classes, &["$JShell$12"])
            .contains(&"REPL.$JShell$11$T#start():void".to_owned()));
    }

    #[test]
    fn a_member_no_class_declares_is_denied() {
        let list = list("java.lang\n");
        let before = compiled(&[
            ("REPL/$JShell$11.java", "package REPL; public class $JShell$11 { public static class T { public static int n() { return 1; } public static int k; } }"),
            ("REPL/$JShell$12.java", "package REPL; public class $JShell$12 { public static int go() { return $JShell$11.T.n() + $JShell$11.T.k; } }"),
        ]);
        let after = compiled(&[(
            "REPL/$JShell$11.java",
            "package REPL; public class $JShell$11 { public static class T { } }",
        )]);
        let mut v = Vetting::new(Generated::Nothing);
        assert!(vet(&mut v, &list, &after, &["$JShell$11", "$JShell$11$T"]).is_empty());
        assert_eq!(
            vet(&mut v, &list, &before, &["$JShell$12"]),
            ["REPL.$JShell$11$T#k", "REPL.$JShell$11$T#n():int"]
        );
        // With both versions known (a redefinition the JVM may have refused), the
        // members resolve to the one that declares them, and to Object for the other.
        assert!(vet(&mut v, &list, &before, &["$JShell$11$T"]).is_empty());
        assert!(vet(&mut v, &list, &before, &["$JShell$12"]).is_empty());
    }

    fn shape(
        interface: bool,
        super_class: Option<&str>,
        interfaces: &[&str],
        methods: &[&str],
    ) -> Arc<Shape> {
        Arc::new(Shape {
            interface,
            super_class: super_class.map(str::to_owned),
            interfaces: interfaces.iter().map(|s| (*s).to_owned()).collect(),
            fields: BTreeSet::new(),
            methods: methods
                .iter()
                .map(|m| (((*m).to_owned(), "()V".to_owned()), 0x0001))
                .collect(),
        })
    }

    #[test]
    fn hostile_hierarchies_end() {
        // A cycle of superclasses and one of interfaces: the search ends, and what
        // it finds is a library type or nothing.
        let mut known = Versions::new();
        add_version(
            &mut known,
            "REPL.A",
            shape(false, Some("REPL.B"), &["REPL.I"], &[]),
        );
        add_version(
            &mut known,
            "REPL.B",
            shape(false, Some("REPL.A"), &["REPL.J"], &[]),
        );
        add_version(
            &mut known,
            "REPL.I",
            shape(true, Some(OBJECT), &["REPL.J"], &[]),
        );
        add_version(
            &mut known,
            "REPL.J",
            shape(true, Some(OBJECT), &["REPL.I", "java.lang.Runnable"], &[]),
        );
        add_version(
            &mut known,
            "REPL.B",
            shape(false, Some("java.lang.Thread"), &[], &["run"]),
        );
        let batch = Versions::new();
        let h = Hierarchy {
            known: &known,
            batch: &batch,
        };
        let r = h.resolve("REPL.A", "start", "()V");
        assert_eq!(r.unknown, None);
        assert_eq!(
            r.library.iter().map(String::as_str).collect::<Vec<_>>(),
            ["java.lang.Runnable", "java.lang.Thread"]
        );
        let r = h.resolve("REPL.A", "run", "()V");
        assert!(r.declared);
        assert!(r.library.contains("java.lang.Runnable"));
        // A class nobody vetted, on the way.
        add_version(
            &mut known,
            "REPL.C",
            shape(false, Some("REPL.Missing"), &[], &[]),
        );
        let h = Hierarchy {
            known: &known,
            batch: &batch,
        };
        assert_eq!(
            h.resolve("REPL.C", "start", "()V").unknown.as_deref(),
            Some("REPL.Missing")
        );
        assert!(!h.resolve("REPL.C", "<init>", "()V").declared);
    }

    #[test]
    fn reading_the_shape_of_hostile_bytes_never_panics() {
        let classes = compiled(&SNIPPETS[..1]);
        let bytes = &classes["$JShell$11$T.class"];
        let refs = classfile::references(bytes).unwrap();
        let shape = read_shape(bytes, &refs).unwrap();
        assert_eq!(shape.super_class.as_deref(), Some("java.lang.Thread"));
        assert!(shape
            .methods
            .contains_key(&("<init>".to_owned(), "()V".to_owned())));
        for len in 0..bytes.len() {
            let _ = read_shape(&bytes[..len], &refs);
        }
        for i in 0..bytes.len() {
            for b in [0x00, 0x01, 0x7f, 0x80, 0xc0, 0xff] {
                let mut mutated = bytes.clone();
                mutated[i] = b;
                let _ = read_shape(&mutated, &refs);
            }
        }
        assert_eq!(decode_mutf8(b"start").as_deref(), Some("start"));
        assert_eq!(decode_mutf8(&[0xC3, 0xA9]).as_deref(), Some("\u{e9}"));
        assert_eq!(
            decode_mutf8(&[0xED, 0xA0, 0xBD, 0xED, 0xB8, 0x80]).as_deref(),
            Some("\u{1f600}")
        );
        assert_eq!(decode_mutf8(&[0xED, 0xA0, 0x80]), None);
        assert_eq!(decode_mutf8(&[0x00]), None);
        assert_eq!(decode_mutf8(&[0xC1, 0x81]), None);
    }

    #[test]
    fn shown_names() {
        assert_eq!(shown("REPL.$JShell$12$T"), "`T`");
        assert_eq!(shown("REPL.$JShell$12B$T$Inner"), "`T.Inner`");
        assert_eq!(shown("REPL.$JShell$12"), "the snippet");
        assert_eq!(shown("REPL.Other"), "`REPL.Other`");
    }
}
