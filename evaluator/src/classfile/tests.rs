//! Real classes compiled by the host's `javac`, hand-made malformed ones, and noise.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use super::*;

// ---------------------------------------------------------------------------
// Classes compiled by javac

const SOURCES: &[(&str, &str)] = &[
    (
        "REPL/$JShell$11.java",
        r#"package REPL;
        public class $JShell$11 {
            public static void main(String[] args) { System.out.println("hi\0there"); }
        }"#,
    ),
    (
        "Lambdas.java",
        r#"import java.util.function.IntConsumer;
        public class Lambdas {
            static void run() {
                Runnable r = () -> {};
                IntConsumer c = System::exit;
                r.run();
                c.accept(0);
            }
        }"#,
    ),
    (
        "Concat.java",
        r#"public class Concat {
            static String f(int n, String s) { return "n=" + n + s; }
        }"#,
    ),
    ("Point.java", "public record Point(int x, String y) {}"),
    (
        "Nested.java",
        r#"import java.util.*;
        public class Nested {
            static class Inner { int v; }
            static int f(Map<String, Integer> m) {
                for (Map.Entry<String, Integer> e : m.entrySet()) e.getKey();
                int[] a = {1};
                int[] b = a.clone();
                Object c = String[][].class;
                String lone = "\uD800";
                return List.of(new Inner().v, b, c, lone).size();
            }
        }"#,
    ),
];

/// Every class file `javac` makes of [`SOURCES`], by binary name. Compiled once per
/// test run; a missing `javac` fails the tests rather than skipping them.
fn compiled() -> &'static BTreeMap<String, Vec<u8>> {
    static COMPILED: OnceLock<BTreeMap<String, Vec<u8>>> = OnceLock::new();
    COMPILED.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        let out = dir.path().join("out");
        let mut javac = Command::new("javac");
        javac.arg("-d").arg(&out);
        for (path, text) in SOURCES {
            let path = src.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, text).unwrap();
            javac.arg(path);
        }
        let status = javac
            .status()
            .expect("javac (a JDK) is needed to run these tests");
        assert!(status.success(), "javac failed");
        let mut classes = BTreeMap::new();
        collect_classes(&out, &out, &mut classes);
        classes
    })
}

fn collect_classes(root: &Path, dir: &Path, classes: &mut BTreeMap<String, Vec<u8>>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect_classes(root, &path, classes);
        } else if let Some(relative) = path
            .strip_prefix(root)
            .unwrap()
            .to_str()
            .unwrap()
            .strip_suffix(".class")
        {
            classes.insert(relative.replace('/', "."), std::fs::read(&path).unwrap());
        }
    }
}

fn class(name: &str) -> &'static [u8] {
    compiled()
        .get(name)
        .unwrap_or_else(|| panic!("{name} was not compiled"))
}

fn refs(name: &str) -> ClassReferences {
    references(class(name)).unwrap_or_else(|err| panic!("{name}: {err}"))
}

fn member(owner: &str, name: &str, descriptor: &str, kind: MemberKind) -> MemberRef {
    MemberRef {
        owner: owner.to_owned(),
        name: name.to_owned(),
        descriptor: descriptor.to_owned(),
        kind,
    }
}

fn handle(kind: HandleKind, owner: &str, name: &str, descriptor: &str) -> MethodHandleRef {
    MethodHandleRef {
        kind,
        member: member(owner, name, descriptor, MemberKind::Method),
    }
}

fn indy<'r>(refs: &'r ClassReferences, name: &str) -> &'r IndyRef {
    refs.indy
        .iter()
        .find(|site| site.name == name)
        .unwrap_or_else(|| panic!("no call site {name} in {:#?}", refs.indy))
}

const METAFACTORY: &str = "(Ljava/lang/invoke/MethodHandles$Lookup;Ljava/lang/String;Ljava/lang/invoke/MethodType;\
    Ljava/lang/invoke/MethodType;Ljava/lang/invoke/MethodHandle;Ljava/lang/invoke/MethodType;)Ljava/lang/invoke/CallSite;";

#[test]
fn println_through_system_out() {
    let refs = refs("REPL.$JShell$11");
    assert_eq!(refs.this_class, "REPL.$JShell$11");
    assert_eq!(refs.super_class.as_deref(), Some("java.lang.Object"));
    assert!(refs.interfaces.is_empty());
    for class in [
        "REPL.$JShell$11",
        "java.lang.Object",
        "java.lang.System",
        "java.io.PrintStream",
    ] {
        assert!(
            refs.classes.contains(class),
            "{class} in {:?}",
            refs.classes
        );
    }
    assert!(refs.members.contains(&member(
        "java.lang.System",
        "out",
        "Ljava/io/PrintStream;",
        MemberKind::Field
    )));
    assert!(refs.members.contains(&member(
        "java.io.PrintStream",
        "println",
        "(Ljava/lang/String;)V",
        MemberKind::Method
    )));
    assert!(refs.members.contains(&member(
        "java.lang.Object",
        "<init>",
        "()V",
        MemberKind::Method
    )));
    assert!(refs.indy.is_empty() && refs.method_handles.is_empty() && refs.dynamic.is_empty());
}

#[test]
fn lambda_and_method_reference_reach_their_targets() {
    let refs = refs("Lambdas");
    let metafactory = handle(
        HandleKind::InvokeStatic,
        "java.lang.invoke.LambdaMetafactory",
        "metafactory",
        &METAFACTORY.replace(' ', ""),
    );

    let exit = handle(HandleKind::InvokeStatic, "java.lang.System", "exit", "(I)V");
    let accept = indy(&refs, "accept");
    assert_eq!(accept.descriptor, "()Ljava/util/function/IntConsumer;");
    assert_eq!(accept.bootstrap, metafactory);
    assert_eq!(
        accept.static_args,
        [
            ConstantArg::MethodType("(I)V".to_owned()),
            ConstantArg::MethodHandle(exit.clone()),
            ConstantArg::MethodType("(I)V".to_owned()),
        ]
    );
    assert!(refs.method_handles.contains(&exit));
    assert!(refs.members.contains(&exit.member));

    let run = indy(&refs, "run");
    assert_eq!(run.descriptor, "()Ljava/lang/Runnable;");
    assert_eq!(run.bootstrap, metafactory);
    assert!(run.static_args.contains(&ConstantArg::MethodHandle(handle(
        HandleKind::InvokeStatic,
        "Lambdas",
        "lambda$run$0",
        "()V"
    ))));
    assert!(refs.method_handles.contains(&metafactory));
}

#[test]
fn string_concatenation() {
    let refs = refs("Concat");
    let site = indy(&refs, "makeConcatWithConstants");
    assert_eq!(site.descriptor, "(ILjava/lang/String;)Ljava/lang/String;");
    assert_eq!(
        site.bootstrap.member.owner,
        "java.lang.invoke.StringConcatFactory"
    );
    assert_eq!(site.bootstrap.kind, HandleKind::InvokeStatic);
    assert_eq!(
        site.static_args,
        [ConstantArg::String("n=\u{1}\u{1}".to_owned())]
    );
}

#[test]
fn record_object_methods() {
    let refs = refs("Point");
    assert_eq!(refs.super_class.as_deref(), Some("java.lang.Record"));
    let field = |name: &str, descriptor: &str| {
        ConstantArg::MethodHandle(MethodHandleRef {
            kind: HandleKind::GetField,
            member: member("Point", name, descriptor, MemberKind::Field),
        })
    };
    for name in ["toString", "hashCode", "equals"] {
        let site = indy(&refs, name);
        assert_eq!(
            site.bootstrap.member.owner,
            "java.lang.runtime.ObjectMethods"
        );
        assert_eq!(site.bootstrap.member.name, "bootstrap");
        assert_eq!(
            site.static_args,
            [
                ConstantArg::Class("Point".to_owned()),
                ConstantArg::String("x;y".to_owned()),
                field("x", "I"),
                field("y", "Ljava/lang/String;"),
            ]
        );
    }
}

#[test]
fn nested_classes_arrays_and_interfaces() {
    let refs = refs("Nested");
    for class in [
        "Nested$Inner",
        "java.util.Map$Entry",
        "java.lang.String",
        "java.util.List",
    ] {
        assert!(
            refs.classes.contains(class),
            "{class} in {:?}",
            refs.classes
        );
    }
    assert!(
        refs.classes
            .iter()
            .all(|class| !class.contains(['[', '/']) && class != "int"),
        "{:?}",
        refs.classes
    );
    assert!(refs
        .members
        .contains(&member("Nested$Inner", "v", "I", MemberKind::Field)));
    assert!(refs.members.contains(&member(
        "int[]",
        "clone",
        "()Ljava/lang/Object;",
        MemberKind::Method
    )));
    assert!(refs.members.contains(&member(
        "java.util.Map",
        "entrySet",
        "()Ljava/util/Set;",
        MemberKind::InterfaceMethod
    )));
    assert!(refs.members.contains(&member(
        "java.util.Map$Entry",
        "getKey",
        "()Ljava/lang/Object;",
        MemberKind::InterfaceMethod
    )));
    let inner = self::refs("Nested$Inner");
    assert_eq!(inner.this_class, "Nested$Inner");
}

#[test]
fn every_proper_prefix_of_a_real_class_is_an_error() {
    for (name, bytes) in compiled() {
        references(bytes).unwrap();
        for len in 0..bytes.len() {
            assert!(references(&bytes[..len]).is_err(), "{name} cut at {len}");
        }
    }
}

#[test]
fn trailing_bytes_are_an_error() {
    let mut bytes = class("Lambdas").to_vec();
    bytes.push(0);
    assert!(matches!(
        references(&bytes),
        Err(ClassFileError::TrailingBytes { count: 1 })
    ));
}

/// xorshift64: deterministic noise without a dependency.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
}

#[test]
fn random_garbage_never_panics() {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    for _ in 0..10_000 {
        let len = rng.below(600);
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.byte()).collect();
        // Most inputs get a valid header so that they reach the constant pool.
        if rng.below(4) != 0 && bytes.len() >= 8 {
            bytes[..8].copy_from_slice(&[0xCA, 0xFE, 0xBA, 0xBE, 0, 0, 0, 61]);
            // Small constant pools with small indices hit more real entries.
            if bytes.len() >= 10 && rng.below(2) == 0 {
                bytes[8] = 0;
                for byte in bytes.iter_mut().skip(10).step_by(2) {
                    if rng.below(2) == 0 {
                        *byte = 0;
                    }
                }
            }
        }
        let _ = references(&bytes);
    }
}

#[test]
fn mutated_real_classes_never_panic() {
    let mut rng = XorShift(0xD1B5_4A32_D192_ED03);
    let originals: Vec<&Vec<u8>> = compiled().values().collect();
    for _ in 0..10_000 {
        let mut bytes = originals[rng.below(originals.len())].clone();
        for _ in 0..=rng.below(8) {
            let at = rng.below(bytes.len());
            match rng.below(4) {
                0 => bytes[at] = rng.byte(),
                1 => bytes[at] ^= 1 << rng.below(8),
                2 => bytes[at] = [0, 1, 0xFF, 0x7F][rng.below(4)],
                _ => {
                    bytes.remove(at);
                }
            }
        }
        let _ = references(&bytes);
    }
}

// ---------------------------------------------------------------------------
// Hand-made class files

const NO_MEMBERS: [u8; 8] = [0; 8];

/// A constant pool under construction, with the slot numbering javac uses.
struct Cp {
    bytes: Vec<u8>,
    next: u16,
}

impl Cp {
    fn new() -> Self {
        Cp {
            bytes: Vec::new(),
            next: 1,
        }
    }

    fn entry(&mut self, tag: u8, body: &[u8]) -> u16 {
        let index = self.next;
        self.bytes.push(tag);
        self.bytes.extend_from_slice(body);
        self.next += if matches!(tag, 5 | 6) { 2 } else { 1 };
        index
    }

    fn pair(&mut self, tag: u8, a: u16, b: u16) -> u16 {
        self.entry(tag, &[a.to_be_bytes(), b.to_be_bytes()].concat())
    }

    fn utf8_bytes(&mut self, bytes: &[u8]) -> u16 {
        let len = u16::try_from(bytes.len()).unwrap();
        self.entry(1, &[&len.to_be_bytes()[..], bytes].concat())
    }

    fn utf8(&mut self, text: &str) -> u16 {
        self.utf8_bytes(text.as_bytes())
    }

    fn class(&mut self, name: &str) -> u16 {
        let name = self.utf8(name);
        self.entry(7, &name.to_be_bytes())
    }

    fn name_and_type(&mut self, name: &str, descriptor: &str) -> u16 {
        let name = self.utf8(name);
        let descriptor = self.utf8(descriptor);
        self.pair(12, name, descriptor)
    }

    fn member(&mut self, tag: u8, owner: &str, name: &str, descriptor: &str) -> u16 {
        let owner = self.class(owner);
        let name_and_type = self.name_and_type(name, descriptor);
        self.pair(tag, owner, name_and_type)
    }

    fn method_handle(&mut self, kind: u8, reference: u16) -> u16 {
        self.entry(15, &[&[kind][..], &reference.to_be_bytes()].concat())
    }

    fn string(&mut self, text: &str) -> u16 {
        let utf8 = self.utf8(text);
        self.entry(8, &utf8.to_be_bytes())
    }

    /// A class `A extends java/lang/Object` with this pool and `tail` after the
    /// superclass (interfaces, fields, methods, attributes).
    fn finish_with(mut self, tail: &[u8]) -> Vec<u8> {
        let this = self.class("A");
        let superclass = self.class("java/lang/Object");
        let count = self.next;
        self.build(count, this, superclass, tail)
    }

    fn finish(self) -> Vec<u8> {
        self.finish_with(&NO_MEMBERS)
    }

    fn build(&self, count: u16, this: u16, superclass: u16, tail: &[u8]) -> Vec<u8> {
        let mut bytes = vec![0xCA, 0xFE, 0xBA, 0xBE, 0, 0, 0, 61];
        bytes.extend_from_slice(&count.to_be_bytes());
        bytes.extend_from_slice(&self.bytes);
        bytes.extend_from_slice(&0x21u16.to_be_bytes());
        bytes.extend_from_slice(&this.to_be_bytes());
        bytes.extend_from_slice(&superclass.to_be_bytes());
        bytes.extend_from_slice(tail);
        bytes
    }
}

/// No interfaces, fields or methods, and these class attributes.
fn attributes_tail(attributes: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let mut tail = vec![0; 6];
    tail.extend_from_slice(&u16::try_from(attributes.len()).unwrap().to_be_bytes());
    for (name, body) in attributes {
        tail.extend_from_slice(&name.to_be_bytes());
        tail.extend_from_slice(&u32::try_from(body.len()).unwrap().to_be_bytes());
        tail.extend_from_slice(body);
    }
    tail
}

/// A `BootstrapMethods` body.
fn bootstrap_methods(methods: &[(u16, &[u16])]) -> Vec<u8> {
    let mut body = u16::try_from(methods.len()).unwrap().to_be_bytes().to_vec();
    for (handle, args) in methods {
        body.extend_from_slice(&handle.to_be_bytes());
        body.extend_from_slice(&u16::try_from(args.len()).unwrap().to_be_bytes());
        for arg in *args {
            body.extend_from_slice(&arg.to_be_bytes());
        }
    }
    body
}

fn error(bytes: &[u8]) -> ClassFileError {
    match references(bytes) {
        Ok(refs) => panic!("accepted: {refs:#?}"),
        Err(err) => err,
    }
}

#[test]
fn minimal_class() {
    let refs = references(&Cp::new().finish()).unwrap();
    assert_eq!(refs.this_class, "A");
    assert_eq!(refs.super_class.as_deref(), Some("java.lang.Object"));
    assert_eq!(
        refs.classes.iter().collect::<Vec<_>>(),
        ["A", "java.lang.Object"]
    );
}

#[test]
fn size_cap() {
    let err = error(&vec![0; MAX_CLASS_BYTES + 1]);
    assert!(matches!(err, ClassFileError::TooLarge { len, .. } if len == MAX_CLASS_BYTES + 1));
}

#[test]
fn wrong_magic() {
    let mut bytes = Cp::new().finish();
    bytes[0] = 0xCB;
    assert!(matches!(
        error(&bytes),
        ClassFileError::BadMagic { magic: 0xCBFE_BABE }
    ));
    assert!(matches!(
        error(b"PK\x03\x04"),
        ClassFileError::BadMagic { .. }
    ));
}

#[test]
fn versions() {
    let with_version = |major: u16, minor: u16| {
        let mut bytes = Cp::new().finish();
        bytes[4..6].copy_from_slice(&minor.to_be_bytes());
        bytes[6..8].copy_from_slice(&major.to_be_bytes());
        references(&bytes)
    };
    for (major, minor) in [(45, 3), (52, 0), (61, 0), (65, 0), (65, 0xFFFF)] {
        with_version(major, minor).unwrap();
    }
    for (major, minor) in [(66, 0), (44, 0), (61, 1), (0xFFFF, 0)] {
        let err = with_version(major, minor).unwrap_err();
        assert!(matches!(err, ClassFileError::UnsupportedVersion { .. }));
        assert!(
            err.to_string().contains(&format!("{major}.{minor}")),
            "{err}"
        );
    }
}

#[test]
fn bad_constant_pool_index() {
    let mut cp = Cp::new();
    cp.entry(7, &99u16.to_be_bytes());
    assert!(matches!(
        error(&cp.finish()),
        ClassFileError::BadIndex { index: 99 }
    ));

    let mut cp = Cp::new();
    let this = cp.class("A");
    let count = cp.next;
    assert!(matches!(
        error(&cp.build(count, this, count, &NO_MEMBERS)),
        ClassFileError::BadIndex { .. }
    ));
    assert!(matches!(
        error(&cp.build(count, 0, 0, &NO_MEMBERS)),
        ClassFileError::BadIndex { index: 0 }
    ));

    // The slot after a long is not an entry.
    let mut cp = Cp::new();
    let long = cp.entry(5, &[0; 8]);
    cp.entry(8, &(long + 1).to_be_bytes());
    assert!(matches!(error(&cp.finish()), ClassFileError::BadIndex { index } if index == long + 1));
}

#[test]
fn wrong_tag_at_index() {
    let mut cp = Cp::new();
    let int = cp.entry(3, &[0, 0, 0, 7]);
    cp.entry(7, &int.to_be_bytes());
    assert!(matches!(
        error(&cp.finish()),
        ClassFileError::WrongTag {
            expected: "Utf8",
            found: "Integer",
            ..
        }
    ));

    let mut cp = Cp::new();
    let name = cp.utf8("A");
    let superclass = cp.class("java/lang/Object");
    let count = cp.next;
    assert!(matches!(
        error(&cp.build(count, name, superclass, &NO_MEMBERS)),
        ClassFileError::WrongTag {
            expected: "Class",
            found: "Utf8",
            ..
        }
    ));

    // A Methodref whose class is a NameAndType.
    let mut cp = Cp::new();
    let nat = cp.name_and_type("f", "()V");
    cp.pair(10, nat, nat);
    assert!(matches!(
        error(&cp.finish()),
        ClassFileError::WrongTag {
            expected: "Class",
            found: "NameAndType",
            ..
        }
    ));
}

#[test]
fn unknown_tags() {
    for tag in [0, 2, 13, 14, 21, 0xFF] {
        let mut cp = Cp::new();
        cp.entry(tag, &[0, 1, 0, 1]);
        assert!(
            matches!(error(&cp.finish()), ClassFileError::UnknownTag { index: 1, tag: t } if t == tag),
            "{tag}"
        );
    }
}

#[test]
fn long_or_double_in_the_last_slot() {
    for tag in [5, 6] {
        let mut cp = Cp::new();
        let this = cp.class("A");
        let superclass = cp.class("java/lang/Object");
        let wide = cp.entry(tag, &[0; 8]);
        // The count says the pool ends after the first half of the long.
        let bytes = cp.build(wide + 1, this, superclass, &NO_MEMBERS);
        assert!(
            matches!(error(&bytes), ClassFileError::WideConstantAtEnd { index } if index == wide)
        );
    }
}

#[test]
fn invalid_modified_utf8() {
    for bad in [
        &[0x00][..],
        &[0xC3],
        &[0xF0, 0x9F, 0x98, 0x80],
        &[b'a', 0x80],
        &[0xC1, 0x81],
    ] {
        let mut cp = Cp::new();
        cp.utf8_bytes(bad);
        assert!(
            matches!(
                error(&cp.finish()),
                ClassFileError::InvalidUtf8 { index: 1, .. }
            ),
            "{bad:x?}"
        );
    }
    // An unpaired surrogate may be a string constant, not a name.
    let mut cp = Cp::new();
    let lone = cp.utf8_bytes(&[0xED, 0xA0, 0x80]);
    cp.entry(8, &lone.to_be_bytes());
    references(&cp.finish()).unwrap();
    let mut cp = Cp::new();
    let lone = cp.utf8_bytes(&[b'B', 0xED, 0xA0, 0x80]);
    cp.entry(7, &lone.to_be_bytes());
    assert!(
        matches!(error(&cp.finish()), ClassFileError::UnpairedSurrogate { index } if index == lone)
    );
}

#[test]
fn bad_names_and_descriptors() {
    let cases: [(&str, &str, &str, u8); 6] = [
        ("java.lang.System", "exit", "(I)V", 10),
        ("java/lang/System", "exit", "(I)", 10),
        ("java/lang/System", "<clinit>", "()V", 10),
        ("java/lang/System", "<init>", "()I", 10),
        ("java/lang/System", "a/b", "I", 9),
        ("java/lang/System", "out", "()V", 9),
    ];
    for (owner, name, descriptor, tag) in cases {
        let mut cp = Cp::new();
        cp.member(tag, owner, name, descriptor);
        assert!(
            matches!(
                error(&cp.finish()),
                ClassFileError::BadName { .. } | ClassFileError::BadDescriptor { .. }
            ),
            "{owner} {name} {descriptor}"
        );
    }
}

#[test]
fn method_handle_kinds() {
    for kind in [0, 10, 0xFF] {
        let mut cp = Cp::new();
        let exit = cp.member(10, "java/lang/System", "exit", "(I)V");
        cp.method_handle(kind, exit);
        assert!(
            matches!(error(&cp.finish()), ClassFileError::BadHandleKind { kind: k, .. } if k == kind)
        );
    }
    // kind, target tag, target name, fits
    let cases = [
        (1, 10, "exit", false),
        (2, 9, "out", true),
        (5, 9, "out", false),
        (6, 10, "exit", true),
        (6, 11, "exit", true),
        (6, 10, "<init>", false),
        (8, 10, "exit", false),
        (8, 10, "<init>", true),
        (9, 10, "exit", false),
        (9, 11, "exit", true),
    ];
    for (kind, tag, name, fits) in cases {
        let descriptor = if tag == 9 {
            "Ljava/io/PrintStream;"
        } else {
            "(I)V"
        };
        let mut cp = Cp::new();
        let target = cp.member(tag, "java/lang/System", name, descriptor);
        cp.method_handle(kind, target);
        let result = references(&cp.finish());
        if fits {
            let refs = result.unwrap();
            assert_eq!(refs.method_handles.len(), 1);
            assert_eq!(refs.method_handles[0].kind.code(), kind);
            assert_eq!(refs.method_handles[0].member.name, name);
        } else {
            assert!(
                matches!(result, Err(ClassFileError::BadHandleTarget { kind: k, .. }) if k == kind),
                "{kind} {tag} {name}: {result:?}"
            );
        }
    }
}

/// A pool with a method reference to System.exit, LambdaMetafactory-like bootstrap
/// and an invokedynamic using it; returns (pool, bootstrap handle, exit handle,
/// BootstrapMethods name).
fn indy_pool() -> (Cp, u16, u16, u16) {
    let mut cp = Cp::new();
    let factory = cp.member(
        10,
        "java/lang/invoke/LambdaMetafactory",
        "metafactory",
        METAFACTORY,
    );
    let bootstrap = cp.method_handle(6, factory);
    let exit = cp.member(10, "java/lang/System", "exit", "(I)V");
    let exit = cp.method_handle(6, exit);
    let nat = cp.name_and_type("accept", "()Ljava/util/function/IntConsumer;");
    cp.pair(18, 0, nat);
    let attribute = cp.utf8("BootstrapMethods");
    (cp, bootstrap, exit, attribute)
}

#[test]
fn hand_made_invokedynamic() {
    let (cp, bootstrap, exit, attribute) = indy_pool();
    let bytes = cp.finish_with(&attributes_tail(&[(
        attribute,
        bootstrap_methods(&[(bootstrap, &[exit])]),
    )]));
    let refs = references(&bytes).unwrap();
    assert_eq!(refs.indy.len(), 1);
    assert_eq!(refs.indy[0].name, "accept");
    assert_eq!(refs.indy[0].bootstrap.member.name, "metafactory");
    assert_eq!(
        refs.indy[0].static_args,
        [ConstantArg::MethodHandle(handle(
            HandleKind::InvokeStatic,
            "java.lang.System",
            "exit",
            "(I)V"
        ))]
    );
}

#[test]
fn bootstrap_methods_are_checked() {
    // No BootstrapMethods attribute at all.
    let (cp, ..) = indy_pool();
    assert!(matches!(
        error(&cp.finish()),
        ClassFileError::BadBootstrapIndex { index: 0, count: 0 }
    ));

    // The bootstrap method is not a method handle.
    let (cp, _, _, attribute) = indy_pool();
    let bytes = cp.finish_with(&attributes_tail(&[(
        attribute,
        bootstrap_methods(&[(attribute, &[])]),
    )]));
    assert!(matches!(
        error(&bytes),
        ClassFileError::WrongTag {
            expected: "MethodHandle",
            ..
        }
    ));

    // A static argument that is not loadable (a NameAndType) or not there.
    for arg in [4, 999] {
        let (cp, bootstrap, _, attribute) = indy_pool();
        let bytes = cp.finish_with(&attributes_tail(&[(
            attribute,
            bootstrap_methods(&[(bootstrap, &[arg])]),
        )]));
        assert!(
            matches!(
                error(&bytes),
                ClassFileError::WrongTag {
                    expected: "loadable constant",
                    ..
                } | ClassFileError::BadIndex { index: 999 }
            ),
            "{arg}"
        );
    }

    // Attribute length disagreeing with its content, and a second attribute.
    let (cp, bootstrap, exit, attribute) = indy_pool();
    let mut body = bootstrap_methods(&[(bootstrap, &[exit])]);
    body.push(0);
    let bytes = cp.finish_with(&attributes_tail(&[(attribute, body)]));
    assert!(matches!(
        error(&bytes),
        ClassFileError::AttributeLength { extra: 1, .. }
    ));
    let (cp, bootstrap, exit, attribute) = indy_pool();
    let body = bootstrap_methods(&[(bootstrap, &[exit])]);
    let bytes = cp.finish_with(&attributes_tail(&[
        (attribute, body.clone()),
        (attribute, body),
    ]));
    assert!(matches!(
        error(&bytes),
        ClassFileError::DuplicateBootstrapMethods
    ));
}

#[test]
fn dynamic_constants() {
    let mut cp = Cp::new();
    let factory = cp.member(
        10,
        "java/lang/invoke/ConstantBootstraps",
        "invoke",
        "(Ljava/lang/invoke/MethodHandles$Lookup;Ljava/lang/String;Ljava/lang/Class;Ljava/lang/invoke/MethodHandle;[Ljava/lang/Object;)Ljava/lang/Object;",
    );
    let bootstrap = cp.method_handle(6, factory);
    let runtime = cp.member(
        10,
        "java/lang/Runtime",
        "getRuntime",
        "()Ljava/lang/Runtime;",
    );
    let runtime = cp.method_handle(6, runtime);
    let nat = cp.name_and_type("_", "Ljava/lang/Runtime;");
    // Constant 1 uses bootstrap 0 (invoke getRuntime); bootstrap 1 takes constant 1.
    let condy = cp.pair(17, 0, nat);
    let string = cp.string("s");
    let attribute = cp.utf8("BootstrapMethods");
    let body = bootstrap_methods(&[(bootstrap, &[runtime]), (bootstrap, &[condy, string])]);
    let refs = references(&cp.finish_with(&attributes_tail(&[(attribute, body)]))).unwrap();
    assert_eq!(refs.dynamic.len(), 1);
    assert_eq!(refs.dynamic[0].descriptor, "Ljava/lang/Runtime;");
    assert_eq!(
        refs.dynamic[0].static_args,
        [ConstantArg::MethodHandle(handle(
            HandleKind::InvokeStatic,
            "java.lang.Runtime",
            "getRuntime",
            "()Ljava/lang/Runtime;"
        ))]
    );
    assert!(refs
        .method_handles
        .iter()
        .any(|h| h.member.name == "getRuntime"));

    // A dynamic constant that is its own argument is listed once, not followed.
    let mut cp = Cp::new();
    let factory = cp.member(10, "B", "bsm", "()V");
    let bootstrap = cp.method_handle(6, factory);
    let nat = cp.name_and_type("_", "I");
    let condy = cp.pair(17, 0, nat);
    let attribute = cp.utf8("BootstrapMethods");
    let body = bootstrap_methods(&[(bootstrap, &[condy])]);
    let refs = references(&cp.finish_with(&attributes_tail(&[(attribute, body)]))).unwrap();
    assert!(
        matches!(&refs.dynamic[0].static_args[..], [ConstantArg::Dynamic { name, .. }] if name == "_")
    );
}

#[test]
fn modules_and_packages_are_read() {
    let mut cp = Cp::new();
    let name = cp.utf8("java.base");
    cp.entry(19, &name.to_be_bytes());
    let name = cp.utf8("java/lang");
    cp.entry(20, &name.to_be_bytes());
    references(&cp.finish()).unwrap();
}

#[test]
fn counts_larger_than_the_input_are_refused() {
    // constant_pool_count 65535 with nothing after it.
    let bytes = [0xCA, 0xFE, 0xBA, 0xBE, 0, 0, 0, 61, 0xFF, 0xFF];
    assert!(matches!(
        error(&bytes),
        ClassFileError::CountTooLarge { count: 65534, .. }
    ));
    for position in 0..4 {
        let mut tail = NO_MEMBERS;
        tail[position * 2..position * 2 + 2].copy_from_slice(&[0xFF, 0xFF]);
        assert!(
            matches!(
                error(&Cp::new().finish_with(&tail)),
                ClassFileError::CountTooLarge { count: 65535, .. }
            ),
            "{position}"
        );
    }
    // A bootstrap method claiming 65535 arguments.
    let (cp, bootstrap, _, attribute) = indy_pool();
    let body = [[0, 1], bootstrap.to_be_bytes(), [0xFF, 0xFF]].concat();
    let bytes = cp.finish_with(&attributes_tail(&[(attribute, body)]));
    assert!(matches!(
        error(&bytes),
        ClassFileError::CountTooLarge { count: 65535, .. }
    ));
    // An attribute longer than the file.
    let mut tail = attributes_tail(&[(1, vec![])]);
    let len = tail.len();
    tail[len - 4..].copy_from_slice(&[0xFF; 4]);
    assert!(matches!(
        error(&Cp::new().finish_with(&tail)),
        ClassFileError::Truncated { .. }
    ));
}

#[test]
fn fields_and_methods_are_checked() {
    // One method `run()V` with a skipped Code-like attribute, then one bad method.
    let mut cp = Cp::new();
    let name = cp.utf8("run");
    let descriptor = cp.utf8("()V");
    let bad_name = cp.utf8("a.b");
    let code = cp.utf8("Code");
    let method = |name: u16, descriptor: u16| {
        [
            &[0, 1][..],
            &name.to_be_bytes(),
            &descriptor.to_be_bytes(),
            &[0, 1],
            &code.to_be_bytes(),
            &[0, 0, 0, 3, 1, 2, 3],
        ]
        .concat()
    };
    let good = [&[0, 0, 0, 0, 0, 1][..], &method(name, descriptor), &[0, 0]].concat();
    references(
        &Cp {
            bytes: cp.bytes.clone(),
            next: cp.next,
        }
        .finish_with(&good),
    )
    .unwrap();
    let bad = [
        &[0, 0, 0, 0, 0, 1][..],
        &method(bad_name, descriptor),
        &[0, 0],
    ]
    .concat();
    assert!(matches!(
        error(
            &Cp {
                bytes: cp.bytes.clone(),
                next: cp.next
            }
            .finish_with(&bad)
        ),
        ClassFileError::BadName { what: "method", .. }
    ));
    let as_field = [&[0, 0, 0, 1][..], &method(name, descriptor), &[0, 0, 0, 0]].concat();
    assert!(matches!(
        error(&cp.finish_with(&as_field)),
        ClassFileError::BadDescriptor { .. }
    ));
}

#[test]
fn copies_are_bounded() {
    // One 60000-byte name used by 600 member references from distinct classes.
    let mut cp = Cp::new();
    let long_name = cp.utf8(&"x".repeat(60_000));
    let descriptor = cp.utf8("()V");
    let nat = cp.pair(12, long_name, descriptor);
    for i in 0..600 {
        let owner = cp.class(&format!("C{i}"));
        cp.pair(10, owner, nat);
    }
    assert!(matches!(
        error(&cp.finish()),
        ClassFileError::ReferencesTooLarge { .. }
    ));

    // One 60000-byte string passed 20000 times to a bootstrap method.
    let (mut cp, bootstrap, _, attribute) = indy_pool();
    let string = cp.string(&"s".repeat(60_000));
    let args = vec![string; 20_000];
    let bytes = cp.finish_with(&attributes_tail(&[(
        attribute,
        bootstrap_methods(&[(bootstrap, &args)]),
    )]));
    assert!(matches!(
        error(&bytes),
        ClassFileError::ReferencesTooLarge { .. }
    ));
}

#[test]
fn work_on_repeated_long_strings_is_bounded() {
    let long_descriptor = format!("(L{};)V", "x".repeat(60_000));

    // 1000 methods sharing one long descriptor.
    let mut cp = Cp::new();
    let name = cp.utf8("m");
    let descriptor = cp.utf8(&long_descriptor);
    let method = [
        &[0, 1][..],
        &name.to_be_bytes(),
        &descriptor.to_be_bytes(),
        &[0, 0],
    ]
    .concat();
    let methods = method.repeat(1000);
    let tail = [&[0, 0, 0, 0, 0x03, 0xE8][..], &methods, &[0, 0]].concat();
    assert!(matches!(
        error(
            &Cp {
                bytes: cp.bytes.clone(),
                next: cp.next
            }
            .finish_with(&tail)
        ),
        ClassFileError::ReferencesTooLarge { .. }
    ));

    // 1000 unused NameAndType entries sharing it.
    for _ in 0..1000 {
        cp.pair(12, name, descriptor);
    }
    assert!(matches!(
        error(&cp.finish()),
        ClassFileError::ReferencesTooLarge { .. }
    ));
}
