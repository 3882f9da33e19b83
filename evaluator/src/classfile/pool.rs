//! The constant pool (JVMS 4.4): read structurally, then resolved entry by entry into
//! [`ClassReferences`], checking every index for range and tag on the way.

use std::mem;

use super::descriptor::{
    binary_name, is_method_name, is_unqualified_name, parse_class_entry, parse_field_descriptor,
    parse_method_descriptor, Base, FieldType,
};
use super::mutf8::{self, Utf8Text};
use super::reader::Reader;
use super::{
    ClassFileError, ClassReferences, ConstantArg, HandleKind, IndyRef, MemberKind, MemberRef,
    MethodHandleRef, Result, MAX_REFERENCE_BYTES,
};

/// The smallest constant-pool entry (a tag and a `u2`) is three bytes.
const MIN_ENTRY_SIZE: usize = 3;
/// What each item is charged against [`MAX_REFERENCE_BYTES`] besides its strings.
const ITEM_COST: usize = mem::size_of::<MemberRef>();

#[derive(Debug)]
pub(super) enum Entry {
    /// Index 0, and the slot after a long or double.
    Unusable,
    Utf8(Utf8Text),
    Integer(i32),
    Float(f32),
    Long(i64),
    Double(f64),
    Class {
        name: u16,
    },
    String {
        utf8: u16,
    },
    Member {
        kind: MemberKind,
        class: u16,
        name_and_type: u16,
    },
    NameAndType {
        name: u16,
        descriptor: u16,
    },
    MethodHandle {
        kind: HandleKind,
        reference: u16,
    },
    MethodType {
        descriptor: u16,
    },
    Dynamic {
        bootstrap: u16,
        name_and_type: u16,
    },
    InvokeDynamic {
        bootstrap: u16,
        name_and_type: u16,
    },
    Module {
        name: u16,
    },
    Package {
        name: u16,
    },
}

impl Entry {
    fn describe(&self) -> &'static str {
        match self {
            Entry::Unusable => "unusable",
            Entry::Utf8(_) => "Utf8",
            Entry::Integer(_) => "Integer",
            Entry::Float(_) => "Float",
            Entry::Long(_) => "Long",
            Entry::Double(_) => "Double",
            Entry::Class { .. } => "Class",
            Entry::String { .. } => "String",
            Entry::Member {
                kind: MemberKind::Field,
                ..
            } => "Fieldref",
            Entry::Member {
                kind: MemberKind::Method,
                ..
            } => "Methodref",
            Entry::Member {
                kind: MemberKind::InterfaceMethod,
                ..
            } => "InterfaceMethodref",
            Entry::NameAndType { .. } => "NameAndType",
            Entry::MethodHandle { .. } => "MethodHandle",
            Entry::MethodType { .. } => "MethodType",
            Entry::Dynamic { .. } => "Dynamic",
            Entry::InvokeDynamic { .. } => "InvokeDynamic",
            Entry::Module { .. } => "Module",
            Entry::Package { .. } => "Package",
        }
    }
}

/// One entry of the `BootstrapMethods` attribute, unresolved.
#[derive(Debug)]
pub(super) struct RawBootstrap {
    pub(super) handle: u16,
    pub(super) args: Vec<u16>,
}

#[derive(Debug)]
pub(super) struct Pool {
    entries: Vec<Entry>,
}

impl Pool {
    /// Reads `constant_pool_count` and the entries; every `Utf8` is decoded here.
    pub(super) fn parse(r: &mut Reader<'_>) -> Result<Self> {
        let count = usize::from(r.u16()?);
        if count == 0 {
            return Err(ClassFileError::EmptyConstantPool);
        }
        r.check_count("constant pool entries", count - 1, MIN_ENTRY_SIZE)?;
        let mut entries = Vec::with_capacity(count);
        entries.push(Entry::Unusable);
        while entries.len() < count {
            // Below `count`, which came from a u16.
            let index = u16::try_from(entries.len()).unwrap_or(u16::MAX);
            let entry = read_entry(r, index)?;
            let wide = matches!(entry, Entry::Long(_) | Entry::Double(_));
            entries.push(entry);
            if wide {
                if entries.len() >= count {
                    return Err(ClassFileError::WideConstantAtEnd { index });
                }
                entries.push(Entry::Unusable);
            }
        }
        Ok(Pool { entries })
    }

    fn get(&self, index: u16) -> Result<&Entry> {
        match self.entries.get(usize::from(index)) {
            None | Some(Entry::Unusable) => Err(ClassFileError::BadIndex { index }),
            Some(entry) => Ok(entry),
        }
    }

    fn wrong_tag(&self, index: u16, expected: &'static str) -> ClassFileError {
        match self.get(index) {
            Ok(entry) => ClassFileError::WrongTag {
                index,
                expected,
                found: entry.describe(),
            },
            Err(err) => err,
        }
    }

    pub(super) fn utf8(&self, index: u16) -> Result<&Utf8Text> {
        match self.get(index)? {
            Entry::Utf8(text) => Ok(text),
            _ => Err(self.wrong_tag(index, "Utf8")),
        }
    }

    /// A `Utf8` used as a name or descriptor, which must decode exactly.
    pub(super) fn name(&self, index: u16) -> Result<&str> {
        let text = self.utf8(index)?;
        if text.exact {
            Ok(&text.text)
        } else {
            Err(ClassFileError::UnpairedSurrogate { index })
        }
    }

    /// The type a `CONSTANT_Class` names.
    fn class(&self, index: u16) -> Result<FieldType<'_>> {
        let Entry::Class { name } = self.get(index)? else {
            return Err(self.wrong_tag(index, "Class"));
        };
        let name = self.name(*name)?;
        parse_class_entry(name).ok_or_else(|| ClassFileError::bad_name("class", name))
    }

    fn name_and_type(&self, index: u16) -> Result<(&str, &str)> {
        let Entry::NameAndType { name, descriptor } = self.get(index)? else {
            return Err(self.wrong_tag(index, "NameAndType"));
        };
        Ok((self.name(*name)?, self.name(*descriptor)?))
    }

    fn indices(&self) -> impl Iterator<Item = (u16, &Entry)> {
        (0..=u16::MAX).zip(&self.entries)
    }
}

fn read_entry(r: &mut Reader<'_>, index: u16) -> Result<Entry> {
    let tag = r.u8()?;
    Ok(match tag {
        1 => {
            let len = usize::from(r.u16()?);
            let bytes = r.take(len)?;
            Entry::Utf8(
                mutf8::decode(bytes)
                    .map_err(|offset| ClassFileError::InvalidUtf8 { index, offset })?,
            )
        }
        3 => Entry::Integer(r.u32()?.cast_signed()),
        4 => Entry::Float(f32::from_bits(r.u32()?)),
        5 => Entry::Long(r.u64()?.cast_signed()),
        6 => Entry::Double(f64::from_bits(r.u64()?)),
        7 => Entry::Class { name: r.u16()? },
        8 => Entry::String { utf8: r.u16()? },
        9..=11 => Entry::Member {
            kind: match tag {
                9 => MemberKind::Field,
                10 => MemberKind::Method,
                _ => MemberKind::InterfaceMethod,
            },
            class: r.u16()?,
            name_and_type: r.u16()?,
        },
        12 => Entry::NameAndType {
            name: r.u16()?,
            descriptor: r.u16()?,
        },
        15 => {
            let kind = r.u8()?;
            Entry::MethodHandle {
                kind: HandleKind::from_code(kind)
                    .ok_or(ClassFileError::BadHandleKind { index, kind })?,
                reference: r.u16()?,
            }
        }
        16 => Entry::MethodType {
            descriptor: r.u16()?,
        },
        17 => Entry::Dynamic {
            bootstrap: r.u16()?,
            name_and_type: r.u16()?,
        },
        18 => Entry::InvokeDynamic {
            bootstrap: r.u16()?,
            name_and_type: r.u16()?,
        },
        19 => Entry::Module { name: r.u16()? },
        20 => Entry::Package { name: r.u16()? },
        _ => return Err(ClassFileError::UnknownTag { index, tag }),
    })
}

/// A bootstrap method with its static arguments, and what copying them costs.
#[derive(Debug)]
struct Bootstrap {
    handle: MethodHandleRef,
    args: Vec<ConstantArg>,
    cost: usize,
}

/// Bytes of names and descriptors checked or copied so far, against
/// [`MAX_REFERENCE_BYTES`]: each step that scans or copies a string is charged for it,
/// so neither the output nor the work can grow much beyond that bound, however often
/// a hostile class names the same long string.
#[derive(Debug)]
pub(super) struct Budget {
    left: usize,
}

impl Budget {
    pub(super) fn new() -> Self {
        Budget {
            left: MAX_REFERENCE_BYTES,
        }
    }

    /// Charges [`ITEM_COST`] plus the lengths of `strings`, and returns the charge.
    pub(super) fn charge(&mut self, strings: &[&str]) -> Result<usize> {
        let cost = strings
            .iter()
            .map(|s| s.len())
            .fold(ITEM_COST, usize::saturating_add);
        self.charge_cost(cost)?;
        Ok(cost)
    }

    fn charge_cost(&mut self, cost: usize) -> Result<()> {
        self.left = self
            .left
            .checked_sub(cost)
            .ok_or(ClassFileError::ReferencesTooLarge {
                max: MAX_REFERENCE_BYTES,
            })?;
        Ok(())
    }
}

/// Resolves constant-pool entries.
struct Resolver<'p> {
    pool: &'p Pool,
    raw_bootstraps: &'p [RawBootstrap],
    budget: Budget,
}

impl Resolver<'_> {
    fn charge(&mut self, strings: &[&str]) -> Result<usize> {
        self.budget.charge(strings)
    }

    fn charge_cost(&mut self, cost: usize) -> Result<()> {
        self.budget.charge_cost(cost)
    }

    /// A class or array type in the form [`ClassReferences`] uses.
    fn type_name(&mut self, index: u16) -> Result<String> {
        let name = self.pool.class(index)?.source_form();
        self.charge(&[&name])?;
        Ok(name)
    }

    /// A class that must not be an array: this class, its superclass, interfaces.
    fn plain_class(&mut self, index: u16) -> Result<String> {
        let class = self.pool.class(index)?;
        match class {
            FieldType {
                dims: 0,
                base: Base::Class(internal),
            } => {
                self.charge(&[internal])?;
                Ok(binary_name(internal))
            }
            _ => Err(ClassFileError::bad_name("class", &class.source_form())),
        }
    }

    fn member(&mut self, index: u16) -> Result<MemberRef> {
        let Entry::Member {
            kind,
            class,
            name_and_type,
        } = self.pool.get(index)?
        else {
            return Err(self
                .pool
                .wrong_tag(index, "Fieldref, Methodref or InterfaceMethodref"));
        };
        let owner = self.type_name(*class)?;
        let (name, descriptor) = self.pool.name_and_type(*name_and_type)?;
        match kind {
            MemberKind::Field => {
                if !is_unqualified_name(name) {
                    return Err(ClassFileError::bad_name("field", name));
                }
                if parse_field_descriptor(descriptor).is_none() {
                    return Err(ClassFileError::bad_descriptor(descriptor));
                }
            }
            MemberKind::Method | MemberKind::InterfaceMethod => {
                // JVMS 4.4.2: the only special name a reference may use is <init>,
                // and it returns void.
                if !is_method_name(name) || name == "<clinit>" {
                    return Err(ClassFileError::bad_name("method", name));
                }
                match parse_method_descriptor(descriptor) {
                    Some((_, None)) => {}
                    Some((_, Some(_))) if name != "<init>" => {}
                    _ => return Err(ClassFileError::bad_descriptor(descriptor)),
                }
            }
        }
        self.charge(&[name, descriptor])?;
        Ok(MemberRef {
            owner,
            name: name.to_owned(),
            descriptor: descriptor.to_owned(),
            kind: *kind,
        })
    }

    /// A `CONSTANT_MethodHandle`, its target checked against its kind (JVMS 4.4.8).
    fn method_handle(&mut self, index: u16) -> Result<MethodHandleRef> {
        let Entry::MethodHandle { kind, reference } = self.pool.get(index)? else {
            return Err(self.pool.wrong_tag(index, "MethodHandle"));
        };
        let kind = *kind;
        let member = self.member(*reference)?;
        let fits = match kind {
            HandleKind::GetField
            | HandleKind::GetStatic
            | HandleKind::PutField
            | HandleKind::PutStatic => member.kind == MemberKind::Field,
            HandleKind::InvokeVirtual => {
                member.kind == MemberKind::Method && member.name != "<init>"
            }
            HandleKind::NewInvokeSpecial => {
                member.kind == MemberKind::Method && member.name == "<init>"
            }
            HandleKind::InvokeStatic | HandleKind::InvokeSpecial => {
                member.kind != MemberKind::Field && member.name != "<init>"
            }
            HandleKind::InvokeInterface => {
                member.kind == MemberKind::InterfaceMethod && member.name != "<init>"
            }
        };
        if !fits {
            return Err(ClassFileError::BadHandleTarget {
                index,
                kind: kind.code(),
                member: format!(
                    "{} {}.{}{}",
                    describe(member.kind),
                    member.owner,
                    member.name,
                    member.descriptor
                ),
            });
        }
        self.charge_cost(ITEM_COST)?;
        Ok(MethodHandleRef { kind, member })
    }

    fn raw_bootstrap(&self, bootstrap: u16) -> Result<&RawBootstrap> {
        self.raw_bootstraps
            .get(usize::from(bootstrap))
            .ok_or(ClassFileError::BadBootstrapIndex {
                index: bootstrap,
                count: self.raw_bootstraps.len(),
            })
    }

    /// A static argument (a loadable constant, JVMS 4.4). A dynamic constant is
    /// resolved one level deep: its own arguments are listed where it is.
    fn constant_arg(&mut self, index: u16) -> Result<(ConstantArg, usize)> {
        let left_before = self.budget.left;
        self.charge_cost(ITEM_COST)?;
        let arg = match self.pool.get(index)? {
            Entry::Integer(value) => ConstantArg::Integer(*value),
            Entry::Float(value) => ConstantArg::Float(*value),
            Entry::Long(value) => ConstantArg::Long(*value),
            Entry::Double(value) => ConstantArg::Double(*value),
            Entry::Class { .. } => ConstantArg::Class(self.type_name(index)?),
            Entry::String { utf8 } => {
                let text = &self.pool.utf8(*utf8)?.text;
                self.charge(&[text])?;
                ConstantArg::String(text.clone())
            }
            Entry::MethodHandle { .. } => ConstantArg::MethodHandle(self.method_handle(index)?),
            Entry::MethodType { descriptor } => {
                ConstantArg::MethodType(self.method_type(*descriptor)?)
            }
            Entry::Dynamic {
                bootstrap,
                name_and_type,
            } => {
                let (name, descriptor) = self.dynamic_name_and_type(*name_and_type)?;
                let handle = self.raw_bootstrap(*bootstrap)?.handle;
                ConstantArg::Dynamic {
                    name,
                    descriptor,
                    bootstrap: self.method_handle(handle)?,
                }
            }
            _ => return Err(self.pool.wrong_tag(index, "loadable constant")),
        };
        Ok((arg, left_before.saturating_sub(self.budget.left)))
    }

    fn method_type(&mut self, descriptor: u16) -> Result<String> {
        let descriptor = self.pool.name(descriptor)?;
        if parse_method_descriptor(descriptor).is_none() {
            return Err(ClassFileError::bad_descriptor(descriptor));
        }
        self.charge(&[descriptor])?;
        Ok(descriptor.to_owned())
    }

    /// Name and field descriptor of a `CONSTANT_Dynamic`.
    fn dynamic_name_and_type(&mut self, index: u16) -> Result<(String, String)> {
        let (name, descriptor) = self.pool.name_and_type(index)?;
        if !is_unqualified_name(name) {
            return Err(ClassFileError::bad_name("dynamic constant", name));
        }
        if parse_field_descriptor(descriptor).is_none() {
            return Err(ClassFileError::bad_descriptor(descriptor));
        }
        self.charge(&[name, descriptor])?;
        Ok((name.to_owned(), descriptor.to_owned()))
    }

    /// Name and method descriptor of a `CONSTANT_InvokeDynamic`.
    fn call_site_name_and_type(&mut self, index: u16) -> Result<(String, String)> {
        let (name, descriptor) = self.pool.name_and_type(index)?;
        if !is_method_name(name) || name.starts_with('<') {
            return Err(ClassFileError::bad_name("call site", name));
        }
        if parse_method_descriptor(descriptor).is_none() {
            return Err(ClassFileError::bad_descriptor(descriptor));
        }
        self.charge(&[name, descriptor])?;
        Ok((name.to_owned(), descriptor.to_owned()))
    }

    /// Every bootstrap method, used or not, resolved once.
    fn bootstraps(&mut self) -> Result<Vec<Bootstrap>> {
        let raw_bootstraps = self.raw_bootstraps;
        let mut bootstraps = Vec::with_capacity(raw_bootstraps.len());
        for raw in raw_bootstraps {
            let handle = self.method_handle(raw.handle)?;
            let mut cost = ITEM_COST;
            let mut args = Vec::with_capacity(raw.args.len());
            for &arg in &raw.args {
                let (arg, arg_cost) = self.constant_arg(arg)?;
                cost = cost.saturating_add(arg_cost);
                args.push(arg);
            }
            bootstraps.push(Bootstrap { handle, args, cost });
        }
        Ok(bootstraps)
    }

    /// A call site or dynamic constant with a copy of its bootstrap method.
    fn linked(
        &mut self,
        bootstraps: &[Bootstrap],
        bootstrap: u16,
        name: String,
        descriptor: String,
    ) -> Result<IndyRef> {
        let found =
            bootstraps
                .get(usize::from(bootstrap))
                .ok_or(ClassFileError::BadBootstrapIndex {
                    index: bootstrap,
                    count: bootstraps.len(),
                })?;
        self.charge_cost(found.cost)?;
        Ok(IndyRef {
            name,
            descriptor,
            bootstrap: found.handle.clone(),
            static_args: found.args.clone(),
        })
    }
}

fn describe(kind: MemberKind) -> &'static str {
    match kind {
        MemberKind::Field => "field",
        MemberKind::Method => "method",
        MemberKind::InterfaceMethod => "interface method",
    }
}

/// Resolves and checks every entry of `pool` and the class header indices.
pub(super) fn resolve(
    pool: &Pool,
    raw_bootstraps: &[RawBootstrap],
    this_class: u16,
    super_class: u16,
    interfaces: &[u16],
    budget: Budget,
) -> Result<ClassReferences> {
    let mut resolver = Resolver {
        pool,
        raw_bootstraps,
        budget,
    };
    let bootstraps = resolver.bootstraps()?;
    let mut refs = ClassReferences {
        this_class: resolver.plain_class(this_class)?,
        super_class: match super_class {
            0 => None,
            index => Some(resolver.plain_class(index)?),
        },
        ..ClassReferences::default()
    };
    for &interface in interfaces {
        let interface = resolver.plain_class(interface)?;
        refs.interfaces.push(interface);
    }

    for (index, entry) in pool.indices() {
        match entry {
            Entry::Unusable
            | Entry::Utf8(_)
            | Entry::Integer(_)
            | Entry::Float(_)
            | Entry::Long(_)
            | Entry::Double(_) => {}
            Entry::Class { .. } => {
                if let Some(class) = pool.class(index)?.element_class() {
                    resolver.charge(&[&class])?;
                    refs.classes.insert(class);
                }
            }
            Entry::String { utf8 } => {
                pool.utf8(*utf8)?;
            }
            Entry::Member { .. } => {
                let member = resolver.member(index)?;
                refs.members.insert(member);
            }
            Entry::NameAndType { name, descriptor } => {
                let name = pool.name(*name)?;
                let descriptor = pool.name(*descriptor)?;
                resolver.charge(&[name, descriptor])?;
                // Not knowing whether a field or method uses it, check it as
                // whichever its descriptor says.
                let (name_ok, descriptor_ok) = if descriptor.starts_with('(') {
                    (
                        is_method_name(name),
                        parse_method_descriptor(descriptor).is_some(),
                    )
                } else {
                    (
                        is_unqualified_name(name),
                        parse_field_descriptor(descriptor).is_some(),
                    )
                };
                if !name_ok {
                    return Err(ClassFileError::bad_name("member", name));
                }
                if !descriptor_ok {
                    return Err(ClassFileError::bad_descriptor(descriptor));
                }
            }
            Entry::MethodHandle { .. } => {
                let handle = resolver.method_handle(index)?;
                refs.method_handles.push(handle);
            }
            Entry::MethodType { descriptor } => {
                resolver.method_type(*descriptor)?;
            }
            Entry::Dynamic {
                bootstrap,
                name_and_type,
            } => {
                let (name, descriptor) = resolver.dynamic_name_and_type(*name_and_type)?;
                let linked = resolver.linked(&bootstraps, *bootstrap, name, descriptor)?;
                refs.dynamic.push(linked);
            }
            Entry::InvokeDynamic {
                bootstrap,
                name_and_type,
            } => {
                let (name, descriptor) = resolver.call_site_name_and_type(*name_and_type)?;
                let linked = resolver.linked(&bootstraps, *bootstrap, name, descriptor)?;
                refs.indy.push(linked);
            }
            Entry::Module { name } | Entry::Package { name } => {
                pool.name(*name)?;
            }
        }
    }
    Ok(refs)
}
