//! The references a Java class file makes, read as hostile input.
//!
//! Access lists are enforced for Java by reading the class files JShell produces
//! before they are loaded (see the access-lists guide): every member reference, every
//! method handle and every `invokedynamic` / dynamic-constant bootstrap with its static
//! arguments. The bytes come from inside the sandbox, so this reader assumes they were
//! written by an attacker: input and output are size-capped, every read is bounds
//! checked, every count is checked against the bytes left before it sizes anything,
//! every constant-pool index is checked for range and tag, nothing recurses, and no
//! input makes it panic (`fuzz/` holds a cargo-fuzz target for it).
//!
//! Code attributes are skipped unread: every instruction that names a class, member or
//! call site does so through the constant pool, and the whole pool is resolved.

#![forbid(unsafe_code)]

mod descriptor;
pub(crate) mod mutf8;
mod pool;
mod reader;
#[cfg(test)]
mod tests;

use std::collections::BTreeSet;

pub use descriptor::{descriptor_types, field_type};

use pool::{Budget, Pool, RawBootstrap};
use reader::Reader;

/// Larger inputs are refused before parsing.
pub const MAX_CLASS_BYTES: usize = 4 * 1024 * 1024;
/// Bound on the bytes of names, descriptors and constants checked or copied into a
/// [`ClassReferences`]: a small class can name one long string from many places, and
/// bootstrap arguments are copied into every call site that uses them.
pub const MAX_REFERENCE_BYTES: usize = 32 * 1024 * 1024;
/// Java 21.
pub const MAX_MAJOR_VERSION: u16 = 65;
/// Java 1.1.
const MIN_MAJOR_VERSION: u16 = 45;
/// From Java 12 on, the minor version is 0, or 65535 for preview features.
const FIRST_MAJOR_WITH_PREVIEW_MINOR: u16 = 56;
const PREVIEW_MINOR_VERSION: u16 = 0xFFFF;
const MAGIC: u32 = 0xCAFE_BABE;
const BOOTSTRAP_METHODS: &str = "BootstrapMethods";
/// Longest name or descriptor quoted in an error.
const MAX_QUOTED_CHARS: usize = 200;

#[derive(Debug, thiserror::Error)]
pub enum ClassFileError {
    #[error("class file is {len} bytes, more than the {max} allowed")]
    TooLarge { len: usize, max: usize },
    #[error("class file ends early: {needed} bytes needed at offset {offset}")]
    Truncated { offset: usize, needed: usize },
    #[error("not a class file: magic is {magic:#010x}")]
    BadMagic { magic: u32 },
    #[error(
        "unsupported class file version {major}.{minor} (supported: {MIN_MAJOR_VERSION} to {MAX_MAJOR_VERSION}, Java 21)"
    )]
    UnsupportedVersion { major: u16, minor: u16 },
    #[error("{count} {what} at offset {offset} cannot fit in the rest of the class file")]
    CountTooLarge {
        what: &'static str,
        count: usize,
        offset: usize,
    },
    #[error("constant pool count is 0")]
    EmptyConstantPool,
    #[error("constant pool entry {index} has unknown tag {tag}")]
    UnknownTag { index: u16, tag: u8 },
    #[error("constant pool entry {index} is a long or double in the last slot")]
    WideConstantAtEnd { index: u16 },
    #[error("constant pool index {index} does not name an entry")]
    BadIndex { index: u16 },
    #[error("constant pool entry {index} is {found}, expected {expected}")]
    WrongTag {
        index: u16,
        expected: &'static str,
        found: &'static str,
    },
    #[error(
        "constant pool entry {index} is not valid modified UTF-8 (at byte {offset} of the string)"
    )]
    InvalidUtf8 { index: u16, offset: usize },
    #[error("constant pool entry {index} has an unpaired surrogate where a name or descriptor is expected")]
    UnpairedSurrogate { index: u16 },
    #[error("invalid {what} name {name:?}")]
    BadName { what: &'static str, name: String },
    #[error("invalid descriptor {descriptor:?}")]
    BadDescriptor { descriptor: String },
    #[error("constant pool entry {index} has method handle kind {kind}, not 1 to 9")]
    BadHandleKind { index: u16, kind: u8 },
    #[error("method handle {index} of kind {kind} cannot refer to {member}")]
    BadHandleTarget {
        index: u16,
        kind: u8,
        member: String,
    },
    #[error("bootstrap method {index} does not exist (the class has {count})")]
    BadBootstrapIndex { index: u16, count: usize },
    #[error("more than one BootstrapMethods attribute")]
    DuplicateBootstrapMethods,
    #[error("{name} attribute at offset {offset} has {extra} bytes after its content")]
    AttributeLength {
        name: &'static str,
        offset: usize,
        extra: usize,
    },
    #[error("{count} bytes after the end of the class file")]
    TrailingBytes { count: usize },
    #[error("class file names more than {max} bytes of references")]
    ReferencesTooLarge { max: usize },
}

impl ClassFileError {
    fn bad_descriptor(descriptor: &str) -> Self {
        ClassFileError::BadDescriptor {
            descriptor: quoted(descriptor),
        }
    }

    fn bad_name(what: &'static str, name: &str) -> Self {
        ClassFileError::BadName {
            what,
            name: quoted(name),
        }
    }
}

/// At most [`MAX_QUOTED_CHARS`] of `text`, for error messages.
fn quoted(text: &str) -> String {
    text.chars().take(MAX_QUOTED_CHARS).collect()
}

type Result<T> = std::result::Result<T, ClassFileError>;

/// Everything a class file refers to, names in binary form (`java.util.Map$Entry`).
/// Where a reference is to an array type (`int[].clone()`, `String[].class`), the type
/// is written in source form (`int[]`, `java.lang.String[]`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ClassReferences {
    /// The class this file defines: `REPL.$JShell$11`.
    pub this_class: String,
    /// `None` only for `java.lang.Object` and `module-info`.
    pub super_class: Option<String>,
    pub interfaces: Vec<String>,
    /// Every `CONSTANT_Class`, arrays unwrapped to their element class, primitive
    /// arrays dropped. Includes `this_class` and its superclass and interfaces.
    pub classes: BTreeSet<String>,
    /// Every `Fieldref`, `Methodref` and `InterfaceMethodref`.
    pub members: BTreeSet<MemberRef>,
    /// Every `CONSTANT_MethodHandle`, in constant-pool order, including the bootstrap
    /// methods and the method-handle arguments below.
    pub method_handles: Vec<MethodHandleRef>,
    /// Every `CONSTANT_InvokeDynamic` (an `invokedynamic` call site), in constant-pool
    /// order.
    pub indy: Vec<IndyRef>,
    /// Every `CONSTANT_Dynamic` (a constant computed by a bootstrap method), in
    /// constant-pool order; `descriptor` is then a field descriptor.
    pub dynamic: Vec<IndyRef>,
}

/// A field or method of another (or this) class.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MemberRef {
    /// Binary name (`java.lang.System`), or an array type in source form (`int[]`).
    pub owner: String,
    pub name: String,
    /// JVM descriptor: `(I)V`, `Ljava/io/PrintStream;`. See [`descriptor_types`] and
    /// [`field_type`] for source forms.
    pub descriptor: String,
    pub kind: MemberKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MemberKind {
    Field,
    Method,
    InterfaceMethod,
}

/// The kind of a method handle (JVMS 5.4.3.5), with its JVM code 1 to 9.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum HandleKind {
    GetField = 1,
    GetStatic = 2,
    PutField = 3,
    PutStatic = 4,
    InvokeVirtual = 5,
    InvokeStatic = 6,
    InvokeSpecial = 7,
    NewInvokeSpecial = 8,
    InvokeInterface = 9,
}

impl HandleKind {
    pub fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            1 => HandleKind::GetField,
            2 => HandleKind::GetStatic,
            3 => HandleKind::PutField,
            4 => HandleKind::PutStatic,
            5 => HandleKind::InvokeVirtual,
            6 => HandleKind::InvokeStatic,
            7 => HandleKind::InvokeSpecial,
            8 => HandleKind::NewInvokeSpecial,
            9 => HandleKind::InvokeInterface,
            _ => return None,
        })
    }

    pub fn code(self) -> u8 {
        self as u8
    }
}

/// A `CONSTANT_MethodHandle`: what `System::exit` and lambdas compile to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MethodHandleRef {
    pub kind: HandleKind,
    pub member: MemberRef,
}

/// A call site (`CONSTANT_InvokeDynamic`) or dynamic constant (`CONSTANT_Dynamic`):
/// the bootstrap method the JVM calls to link it, with its static arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct IndyRef {
    pub name: String,
    pub descriptor: String,
    pub bootstrap: MethodHandleRef,
    pub static_args: Vec<ConstantArg>,
}

/// A static argument of a bootstrap method.
#[derive(Debug, Clone, PartialEq)]
pub enum ConstantArg {
    MethodHandle(MethodHandleRef),
    /// A method descriptor.
    MethodType(String),
    /// Binary name, or an array type in source form.
    Class(String),
    String(String),
    Integer(i32),
    Float(f32),
    Long(i64),
    Double(f64),
    /// A dynamic constant; its own static arguments are in
    /// [`ClassReferences::dynamic`], which lists every dynamic constant.
    Dynamic {
        name: String,
        descriptor: String,
        bootstrap: MethodHandleRef,
    },
}

/// Reads a class file and returns everything it refers to, or the first reason it
/// is malformed. Never panics, whatever `bytes` holds.
pub fn references(bytes: &[u8]) -> Result<ClassReferences> {
    if bytes.len() > MAX_CLASS_BYTES {
        return Err(ClassFileError::TooLarge {
            len: bytes.len(),
            max: MAX_CLASS_BYTES,
        });
    }
    let mut r = Reader::new(bytes);

    let magic = r.u32()?;
    if magic != MAGIC {
        return Err(ClassFileError::BadMagic { magic });
    }
    let minor = r.u16()?;
    let major = r.u16()?;
    check_version(major, minor)?;

    let pool = Pool::parse(&mut r)?;

    let _access_flags = r.u16()?;
    let this_class = r.u16()?;
    let super_class = r.u16()?;
    let interface_count = usize::from(r.u16()?);
    r.check_count("interfaces", interface_count, 2)?;
    let mut interfaces = Vec::with_capacity(interface_count);
    for _ in 0..interface_count {
        interfaces.push(r.u16()?);
    }

    let mut budget = Budget::new();
    read_members(&mut r, &pool, &mut budget, "fields")?;
    read_members(&mut r, &pool, &mut budget, "methods")?;
    let bootstraps = read_class_attributes(&mut r, &pool)?;
    if r.remaining() > 0 {
        return Err(ClassFileError::TrailingBytes {
            count: r.remaining(),
        });
    }

    pool::resolve(
        &pool,
        &bootstraps,
        this_class,
        super_class,
        &interfaces,
        budget,
    )
}

fn check_version(major: u16, minor: u16) -> Result<()> {
    let major_ok = (MIN_MAJOR_VERSION..=MAX_MAJOR_VERSION).contains(&major);
    let minor_ok =
        major < FIRST_MAJOR_WITH_PREVIEW_MINOR || minor == 0 || minor == PREVIEW_MINOR_VERSION;
    if major_ok && minor_ok {
        Ok(())
    } else {
        Err(ClassFileError::UnsupportedVersion { major, minor })
    }
}

/// `field_info` or `method_info` entries (JVMS 4.5, 4.6): names and descriptors are
/// checked, attributes skipped.
fn read_members(
    r: &mut Reader<'_>,
    pool: &Pool,
    budget: &mut Budget,
    what: &'static str,
) -> Result<()> {
    const MIN_SIZE: usize = 8;
    let count = usize::from(r.u16()?);
    r.check_count(what, count, MIN_SIZE)?;
    let methods = what == "methods";
    for _ in 0..count {
        let _access_flags = r.u16()?;
        let name = pool.name(r.u16()?)?;
        let descriptor = pool.name(r.u16()?)?;
        budget.charge(&[name, descriptor])?;
        if methods {
            if !descriptor::is_method_name(name) {
                return Err(ClassFileError::bad_name("method", name));
            }
            if descriptor::parse_method_descriptor(descriptor).is_none() {
                return Err(ClassFileError::bad_descriptor(descriptor));
            }
        } else {
            if !descriptor::is_unqualified_name(name) {
                return Err(ClassFileError::bad_name("field", name));
            }
            if descriptor::parse_field_descriptor(descriptor).is_none() {
                return Err(ClassFileError::bad_descriptor(descriptor));
            }
        }
        skip_attributes(r, pool)?;
    }
    Ok(())
}

fn skip_attributes(r: &mut Reader<'_>, pool: &Pool) -> Result<()> {
    let count = usize::from(r.u16()?);
    r.check_count("attributes", count, 6)?;
    for _ in 0..count {
        pool.utf8(r.u16()?)?;
        let len = r.u32()?;
        r.take(usize::try_from(len).unwrap_or(usize::MAX))?;
    }
    Ok(())
}

/// The class's attributes, of which only `BootstrapMethods` is read.
fn read_class_attributes(r: &mut Reader<'_>, pool: &Pool) -> Result<Vec<RawBootstrap>> {
    let count = usize::from(r.u16()?);
    r.check_count("attributes", count, 6)?;
    let mut bootstraps = None;
    for _ in 0..count {
        let name = pool.utf8(r.u16()?)?;
        let len = r.u32()?;
        let body = r.sub(usize::try_from(len).unwrap_or(usize::MAX))?;
        if name.exact && name.text == BOOTSTRAP_METHODS {
            if bootstraps.is_some() {
                return Err(ClassFileError::DuplicateBootstrapMethods);
            }
            bootstraps = Some(read_bootstrap_methods(body)?);
        }
    }
    Ok(bootstraps.unwrap_or_default())
}

/// The `BootstrapMethods` attribute (JVMS 4.7.23); indices are checked when resolved.
fn read_bootstrap_methods(mut r: Reader<'_>) -> Result<Vec<RawBootstrap>> {
    let count = usize::from(r.u16()?);
    r.check_count("bootstrap methods", count, 4)?;
    let mut bootstraps = Vec::with_capacity(count);
    for _ in 0..count {
        let handle = r.u16()?;
        let arg_count = usize::from(r.u16()?);
        r.check_count("bootstrap arguments", arg_count, 2)?;
        let mut args = Vec::with_capacity(arg_count);
        for _ in 0..arg_count {
            args.push(r.u16()?);
        }
        bootstraps.push(RawBootstrap { handle, args });
    }
    if r.remaining() > 0 {
        return Err(ClassFileError::AttributeLength {
            name: BOOTSTRAP_METHODS,
            offset: r.offset(),
            extra: r.remaining(),
        });
    }
    Ok(bootstraps)
}
