//! The lists shipped in `access-lists/`: they parse, the linter finds nothing in them,
//! and they decide as intended.

use std::path::PathBuf;

use sha2::{Digest, Sha256};

use super::*;

fn path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../access-lists")
        .join(name)
}

fn load(name: &str) -> AccessList {
    AccessList::load(&path(name)).unwrap_or_else(|e| panic!("{e}"))
}

fn r(reference: &str) -> Reference {
    reference.parse().unwrap()
}

fn assert_verdicts(list: &AccessList, cases: &[(&str, bool)]) {
    for &(reference, allowed) in cases {
        let verdict = list.check(&r(reference));
        assert_eq!(verdict.allowed, allowed, "{reference}: {verdict}");
    }
}

#[test]
fn java_default_parses_and_lints_clean() {
    let list = load("java-default.access");
    assert!(list.rules().len() > 50);
    assert_eq!(lint(&list), []);
}

#[test]
fn python_default_parses_and_lints_clean() {
    let list = load("python-default.access");
    assert!(list.rules().len() > 50);
    assert_eq!(lint(&list), []);
}

#[test]
fn java_default_verdicts() {
    let list = load("java-default.access");
    assert_verdicts(
        &list,
        &[
            ("java.lang.System#exit(int):void", false),
            ("java.lang.System.out", true),
            ("java.lang.System#out", true),
            ("java.lang.System#err", true),
            ("java.lang.System#in", true),
            ("java.lang.System#nanoTime():long", true),
            (
                "java.lang.System#arraycopy(java.lang.Object,int,java.lang.Object,int,int):void",
                true,
            ),
            ("java.lang.System#getenv(java.lang.String):java.lang.String", false),
            ("java.lang.System#setOut(java.io.PrintStream):void", false),
            ("java.lang.System#loadLibrary(java.lang.String):void", false),
            ("java.lang.System$Logger", false),
            ("java.util.ArrayList#<init>()", true),
            ("java.util.Map$Entry#getKey():java.lang.Object", true),
            ("java.util.concurrent.ConcurrentHashMap#<init>()", false),
            ("java.util.concurrent.ForkJoinPool#commonPool():java.util.concurrent.ForkJoinPool", false),
            ("java.util.concurrent.atomic.AtomicInteger#<init>()", false),
            ("java.util.stream.IntStream#range(int,int):java.util.stream.IntStream", true),
            ("java.util.function.Function", true),
            ("java.util.regex.Pattern#compile(java.lang.String):java.util.regex.Pattern", true),
            ("java.lang.ProcessHandle#current():java.lang.ProcessHandle", false),
            ("java.lang.ProcessHandle$Info", false),
            ("java.lang.ProcessBuilder$Redirect", false),
            ("java.lang.Process#destroy():void", false),
            ("java.lang.Runtime#getRuntime():java.lang.Runtime", false),
            ("java.lang.Thread#currentThread():java.lang.Thread", false),
            ("java.lang.Thread$Builder", false),
            ("java.lang.ThreadGroup", false),
            ("java.lang.Object#getClass():java.lang.Class", true),
            ("java.lang.Class#getName():java.lang.String", true),
            ("java.lang.Class#forName(java.lang.String):java.lang.Class", false),
            (
                "java.lang.Class#getDeclaredMethod(java.lang.String,java.lang.Class[]):java.lang.reflect.Method",
                false,
            ),
            ("java.lang.Class#getMethods():java.lang.reflect.Method[]", false),
            ("java.lang.Class#newInstance():java.lang.Object", false),
            ("java.lang.reflect.Method#invoke(java.lang.Object,java.lang.Object[]):java.lang.Object", false),
            ("java.lang.invoke.MethodHandles#lookup():java.lang.invoke.MethodHandles$Lookup", false),
            ("java.lang.ClassLoader#getSystemClassLoader():java.lang.ClassLoader", false),
            ("java.lang.foreign.Linker#nativeLinker():java.lang.foreign.Linker", false),
            ("java.lang.String#length():int", true),
            ("java.lang.Math#sqrt(double):double", true),
            ("java.lang.StringBuilder#<init>()", true),
            ("java.util.Formatter#<init>()", true),
            ("java.util.Formatter#<init>(java.lang.Appendable)", true),
            ("java.util.Formatter#<init>(java.lang.String)", false),
            ("java.util.Formatter#<init>(java.io.File)", false),
            ("java.util.Formatter#<init>(java.io.OutputStream,java.lang.String)", false),
            ("java.util.Timer#<init>()", false),
            ("java.util.ServiceLoader#load(java.lang.Class):java.util.ServiceLoader", false),
            ("java.util.logging.Logger#getLogger(java.lang.String):java.util.logging.Logger", true),
            ("java.util.logging.FileHandler#<init>(java.lang.String)", false),
            ("java.util.zip.ZipFile", false),
            ("java.util.jar.JarFile", false),
            ("java.util.prefs.Preferences", false),
            ("java.time.LocalDate#now():java.time.LocalDate", true),
            ("java.math.BigInteger#<init>(java.lang.String)", true),
            ("java.text.NumberFormat", true),
            ("java.nio.charset.StandardCharsets#UTF_8", true),
            ("java.io.PrintStream#println(java.lang.String):void", true),
            ("java.io.PrintStream#printf(java.lang.String,java.lang.Object[]):java.io.PrintStream", true),
            ("java.io.PrintStream#<init>(java.lang.String)", false),
            ("java.io.File#<init>(java.lang.String)", false),
            ("java.nio.file.Files", false),
            ("java.net.Socket", false),
            ("sun.misc.Unsafe", false),
            ("jdk.internal.misc.Unsafe", false),
            ("com.sun.jna.Native", false),
        ],
    );
}

/// Nothing in java-default instantiates or invokes classes named by data; each way in
/// the audit of what it allows found is closed (see the list's header).
#[test]
fn java_default_allows_no_reflective_factory() {
    let list = load("java-default.access");
    assert_eq!(lint::reflective_factories(&list), []);
    assert_verdicts(
        &list,
        &[
            // The logging configuration names the classes LogManager instantiates.
            ("java.util.logging.LogManager#getLogManager():java.util.logging.LogManager", false),
            ("java.util.logging.LogManager#readConfiguration(java.io.InputStream):void", false),
            ("java.util.logging.LogManager#updateConfiguration(java.util.function.Function):void", false),
            ("java.util.logging.LogManager#<init>()", false),
            ("java.util.logging.Logger#getLogger(java.lang.String,java.lang.String):java.util.logging.Logger", false),
            ("java.util.logging.Logger#getAnonymousLogger(java.lang.String):java.util.logging.Logger", false),
            (
                "java.util.logging.Logger#logrb(java.util.logging.Level,java.lang.String,java.lang.String,java.lang.String,java.lang.String,java.lang.Object[]):void",
                false,
            ),
            ("java.util.logging.Level#<init>(java.lang.String,int,java.lang.String)", false),
            // Logging itself still works.
            ("java.util.logging.Logger#getLogger(java.lang.String):java.util.logging.Logger", true),
            ("java.util.logging.Logger#info(java.lang.String):void", true),
            (
                "java.util.logging.Logger#logrb(java.util.logging.Level,java.util.ResourceBundle,java.lang.String,java.lang.Object[]):void",
                true,
            ),
            ("java.util.logging.Level#<init>(java.lang.String,int)", true),
            ("java.util.logging.Handler#setLevel(java.util.logging.Level):void", true),
            // Tools and bundles by name.
            ("java.util.spi.ToolProvider#findFirst(java.lang.String):java.util.Optional", false),
            ("java.util.ResourceBundle#getBundle(java.lang.String):java.util.ResourceBundle", false),
            (
                "java.util.ResourceBundle$Control#newBundle(java.lang.String,java.util.Locale,java.lang.String,java.lang.ClassLoader,boolean):java.util.ResourceBundle",
                false,
            ),
            ("java.util.ResourceBundle#getString(java.lang.String):java.lang.String", true),
            // System properties through the boxes.
            ("java.lang.Integer#getInteger(java.lang.String):java.lang.Integer", false),
            ("java.lang.Long#getLong(java.lang.String,long):java.lang.Long", false),
            ("java.lang.Boolean#getBoolean(java.lang.String):boolean", false),
            ("java.lang.Integer#parseInt(java.lang.String):int", true),
            ("java.lang.Boolean#parseBoolean(java.lang.String):boolean", true),
            // Module finders and nominal descriptors.
            ("java.lang.module.ModuleFinder#ofSystem():java.lang.module.ModuleFinder", false),
            ("java.lang.constant.ClassDesc#of(java.lang.String):java.lang.constant.ClassDesc", false),
            (
                "java.lang.Enum$EnumDesc#resolveConstantDesc(java.lang.invoke.MethodHandles$Lookup):java.lang.Enum",
                false,
            ),
            ("java.lang.Enum#name():java.lang.String", true),
            // Outside the allowed packages, explicitly.
            ("java.io.ObjectInputStream#readObject():java.lang.Object", false),
            ("java.beans.Beans#instantiate(java.lang.ClassLoader,java.lang.String):java.lang.Object", false),
            ("javax.naming.InitialContext#<init>()", false),
            ("javax.script.ScriptEngineManager#<init>()", false),
            ("java.sql.DriverManager#getConnection(java.lang.String):java.sql.Connection", false),
            ("jdk.dynalink.DynamicLinkerFactory#<init>()", false),
            ("jdk.jshell.JShell#create():jdk.jshell.JShell", false),
            // Lookups among the JDK's own providers of one type stay allowed.
            ("java.nio.charset.Charset#forName(java.lang.String):java.nio.charset.Charset", true),
            ("java.time.chrono.Chronology#of(java.lang.String):java.time.chrono.Chronology", true),
            ("java.util.random.RandomGenerator#of(java.lang.String):java.util.random.RandomGenerator", true),
        ],
    );
}

#[test]
fn python_default_verdicts() {
    let list = load("python-default.access");
    let cases = [
        ("math", true),
        ("math.sqrt", true),
        ("collections.abc", true),
        ("json.loads", true),
        ("time.sleep", true),
        ("os", false),
        ("os.path", false),
        ("os.system", false),
        ("posixpath", false),
        ("subprocess", false),
        ("builtins.open", false),
        ("builtins.__import__", false),
        ("builtins.eval", false),
        ("builtins.exec", false),
        ("builtins.compile", false),
        ("builtins.breakpoint", false),
        ("builtins.print", true),
        ("builtins.input", true),
        ("builtins.getattr", true),
        ("io.StringIO", true),
        ("io.BytesIO", true),
        ("io.open", false),
        ("io.FileIO", false),
        ("io", false),
        ("_io", false),
        ("sys.stdout", true),
        ("sys.exit", true),
        ("sys.version_info", true),
        ("sys.modules", false),
        ("sys._getframe", false),
        ("sys.addaudithook", false),
        ("sys", false),
        ("importlib.import_module", false),
        ("ctypes", false),
        ("pickle.loads", false),
        ("numpy", true),
        ("numpy.ctypeslib", true),
    ];
    for (path, allowed) in cases {
        let verdict = list.check(&Reference::module(path));
        assert_eq!(verdict.allowed, allowed, "{path}: {verdict}");
    }
    assert!(list.allows(&Reference::field("builtins", "print")));
    assert!(!list.allows(&Reference::field("builtins", "open")));
}

/// jsheets' own list, copied unchanged (MIT) below a header in
/// `access-lists/jsheets-original.access`, parses as it is.
#[test]
fn jsheets_original_list_parses_unchanged() {
    const MARKER: &str = "# ---- original content follows ----\n";
    let source = std::fs::read_to_string(path("jsheets-original.access")).unwrap();
    let (_, original) = source.split_once(MARKER).unwrap();
    // The content as published: 581 bytes, sha256 of the file at the recorded commit.
    assert_eq!(original.len(), 581);
    assert_eq!(
        format!("{:x}", Sha256::digest(original.as_bytes())),
        "b5710345cbc731c50335d12615ac21ffb776321af680dcc0021e4639f83607d8"
    );

    let list = load("jsheets-original.access");
    let rules: Vec<&str> = list.rules().iter().map(Rule::text).collect();
    let expected: Vec<&str> = original.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(rules, expected);
    assert_eq!(rules.len(), 28);
    assert_eq!(lint(&list), []);
    // The original parses on its own too, without the header.
    let bare = AccessList::parse(original, Path::new("accessGraph.txt")).unwrap();
    assert_eq!(bare.rules().len(), 28);
}

/// With the guide's semantics jsheets' list means what it says, and its holes show.
#[test]
fn jsheets_original_list_verdicts_and_holes() {
    let list = load("jsheets-original.access");
    assert_verdicts(
        &list,
        &[
            ("java.lang.System#exit(int):void", false),
            ("java.lang.System.out", true),
            ("java.util.ArrayList#<init>()", true),
            ("java.util.concurrent.ConcurrentHashMap#<init>()", false),
            ("java.io.PrintStream#println(java.lang.String):void", true),
            ("java.io.PrintStream#printf(java.lang.String,java.lang.Object[]):java.io.PrintStream", false),
            // Holes that java-default.access closes.
            ("java.lang.ProcessHandle#current():java.lang.ProcessHandle", true),
            ("java.lang.Class#forName(java.lang.String):java.lang.Class", true),
            ("java.lang.ClassLoader#getSystemClassLoader():java.lang.ClassLoader", true),
            ("java.util.Formatter#<init>(java.lang.String)", true),
            ("java.util.zip.ZipFile", true),
            ("java.lang.System#in", false),
        ],
    );
    // The linter warns about the factories it allows.
    let factories: Vec<String> = lint::reflective_factories(&list)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert!(
        factories
            .iter()
            .any(|f| f.contains("java.lang.Class#forName")),
        "{factories:#?}"
    );
    for factory in [
        "java.util.ServiceLoader#load",
        "java.util.spi.ToolProvider#findFirst",
        "java.util.logging.LogManager#readConfiguration",
        "java.util.ResourceBundle#getBundle",
        "java.lang.ClassLoader#loadClass",
    ] {
        assert!(
            factories.iter().any(|f| f.contains(factory)),
            "{factory}: {factories:#?}"
        );
    }
    let default = load("java-default.access");
    for hole in [
        "java.lang.ProcessHandle#current():java.lang.ProcessHandle",
        "java.lang.Class#forName(java.lang.String):java.lang.Class",
        "java.util.Formatter#<init>(java.lang.String)",
        "java.util.zip.ZipFile",
    ] {
        assert!(!default.allows(&r(hole)), "{hole}");
    }
}
