//! JVM internal names and descriptors in the access list's source form, for checking
//! class files.
//!
//! `java/util/Map$Entry` becomes `java.util.Map$Entry`, the method descriptor
//! `(I[Ljava/lang/String;)V` becomes `(int,java.lang.String[]):void`. The input comes
//! from class files produced inside the sandbox, so it is treated as hostile: every
//! access is bounds checked, nothing panics, lengths and array dimensions are capped at
//! the JVM's own limits, and names are validated (JVMS 4.2, 4.3). Names containing `#`
//! are refused as well, since `#` separates segments in access lists.

use super::matcher::{Reference, Signature};

/// The longest descriptor or name a class file can hold (a `u2` length).
pub const MAX_LENGTH: usize = 65535;
/// The most array dimensions the JVM allows.
pub const MAX_ARRAY_DIMENSIONS: usize = 255;
/// The most parameters a method can have (each takes at least one of 255 slots).
pub const MAX_PARAMETERS: usize = 255;

/// Why a name or descriptor is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DescriptorError {
    #[error("longer than {MAX_LENGTH} bytes")]
    TooLong,
    #[error("invalid descriptor `{0}`")]
    Invalid(String),
    #[error("invalid class name `{0}`")]
    ClassName(String),
    #[error("invalid member name `{0}`")]
    MemberName(String),
}

/// `java/util/Map$Entry` → `java.util.Map$Entry`.
///
/// Array classes (`[I`) are not class names; use [`field_type`] for them.
pub fn binary_name(internal: &str) -> Result<String, DescriptorError> {
    if internal.len() > MAX_LENGTH {
        return Err(DescriptorError::TooLong);
    }
    let valid = !internal.is_empty()
        && internal
            .split('/')
            .all(|part| !part.is_empty() && !part.contains(['.', ';', '[', '#']));
    if !valid {
        return Err(DescriptorError::ClassName(internal.to_owned()));
    }
    Ok(internal.replace('/', "."))
}

/// A field descriptor (`[Ljava/lang/String;`) → its source type (`java.lang.String[]`).
///
/// The grammar lives in one place, the class-file reader's descriptor parser.
pub fn field_type(descriptor: &str) -> Result<String, DescriptorError> {
    if descriptor.len() > MAX_LENGTH {
        return Err(DescriptorError::TooLong);
    }
    crate::classfile::field_type(descriptor)
        .map_err(|_| DescriptorError::Invalid(descriptor.to_owned()))
}

/// A method descriptor (`(I[Ljava/lang/String;)V`) → its source signature
/// (`int`, `java.lang.String[]`; `void`).
pub fn method_signature(descriptor: &str) -> Result<Signature, DescriptorError> {
    if descriptor.len() > MAX_LENGTH {
        return Err(DescriptorError::TooLong);
    }
    let (params, ret) = crate::classfile::descriptor_types(descriptor)
        .map_err(|_| DescriptorError::Invalid(descriptor.to_owned()))?;
    Ok(Signature { params, ret })
}

fn member_name(name: &str) -> Result<&str, DescriptorError> {
    let special = name == "<init>" || name == "<clinit>";
    let valid = name.len() <= MAX_LENGTH
        && !name.is_empty()
        && (special || !name.contains(['.', ';', '[', '/', '<', '>', '#']));
    if valid {
        Ok(name)
    } else {
        Err(DescriptorError::MemberName(name.to_owned()))
    }
}

impl Reference {
    /// A class from its internal name (`java/util/Map$Entry`).
    pub fn from_internal_class(internal: &str) -> Result<Reference, DescriptorError> {
        Ok(Reference::class(binary_name(internal)?))
    }

    /// A member from a `Fieldref`/`Methodref`: the owner's internal name, the member
    /// name and its descriptor. A method descriptor (starting with `(`) gives a method
    /// reference with its signature; a field descriptor gives a field reference (after
    /// validating it).
    pub fn from_jvm(
        owner: &str,
        name: &str,
        descriptor: &str,
    ) -> Result<Reference, DescriptorError> {
        let owner = binary_name(owner)?;
        let name = member_name(name)?;
        if descriptor.starts_with('(') {
            let signature = method_signature(descriptor)?;
            Ok(Reference::Member {
                owner,
                name: name.to_owned(),
                signature: Some(signature),
            })
        } else {
            field_type(descriptor)?;
            Ok(Reference::field(owner, name))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_names_become_binary_names() {
        assert_eq!(
            binary_name("java/util/Map$Entry").unwrap(),
            "java.util.Map$Entry"
        );
        assert_eq!(binary_name("Foo").unwrap(), "Foo");
        assert_eq!(binary_name("a/Foo$$Lambda$1").unwrap(), "a.Foo$$Lambda$1");
        for bad in ["", "/a", "a/", "a//b", "a.b", "[I", "a;b", "a/b#c"] {
            assert_eq!(
                binary_name(bad),
                Err(DescriptorError::ClassName(bad.to_owned())),
                "{bad:?}"
            );
        }
        assert_eq!(
            binary_name(&"a".repeat(MAX_LENGTH + 1)),
            Err(DescriptorError::TooLong)
        );
    }

    #[test]
    fn field_descriptors() {
        let cases = [
            ("I", "int"),
            ("Z", "boolean"),
            ("J", "long"),
            ("[B", "byte[]"),
            ("Ljava/lang/String;", "java.lang.String"),
            ("[[Ljava/lang/String;", "java.lang.String[][]"),
            ("Ljava/util/Map$Entry;", "java.util.Map$Entry"),
            ("L\u{e9}t\u{e9}/X;", "\u{e9}t\u{e9}.X"),
        ];
        for (descriptor, ty) in cases {
            assert_eq!(field_type(descriptor).unwrap(), ty, "{descriptor}");
        }
        let bad = [
            ("", DescriptorError::Invalid("".into())),
            ("V", DescriptorError::Invalid("V".into())),
            ("X", DescriptorError::Invalid("X".into())),
            ("[", DescriptorError::Invalid("[".into())),
            ("II", DescriptorError::Invalid("II".into())),
            (
                "Ljava/lang/String",
                DescriptorError::Invalid("Ljava/lang/String".into()),
            ),
            ("L;", DescriptorError::Invalid("L;".into())),
            (
                "Ljava.lang.String;",
                DescriptorError::Invalid("Ljava.lang.String;".into()),
            ),
        ];
        for (descriptor, error) in bad {
            assert_eq!(field_type(descriptor), Err(error), "{descriptor:?}");
        }
        let deep = format!("{}I", "[".repeat(MAX_ARRAY_DIMENSIONS));
        assert!(field_type(&deep).is_ok());
        let too_deep = format!("{}I", "[".repeat(MAX_ARRAY_DIMENSIONS + 1));
        assert!(field_type(&too_deep).is_err());
    }

    #[test]
    fn method_descriptors() {
        assert_eq!(
            method_signature("(I[Ljava/lang/String;)V").unwrap(),
            Signature::new(["int", "java.lang.String[]"], "void")
        );
        assert_eq!(
            method_signature("()Ljava/util/Map$Entry;").unwrap(),
            Signature::new(Vec::<String>::new(), "java.util.Map$Entry")
        );
        assert_eq!(
            method_signature("(JD[[ZLjava/lang/Object;)[I")
                .unwrap()
                .to_string(),
            "(long,double,boolean[][],java.lang.Object):int[]"
        );
        let bad = [
            ("", DescriptorError::Invalid("".into())),
            ("I", DescriptorError::Invalid("I".into())),
            ("(", DescriptorError::Invalid("(".into())),
            ("(I", DescriptorError::Invalid("(I".into())),
            ("()", DescriptorError::Invalid("()".into())),
            ("(V)V", DescriptorError::Invalid("(V)V".into())),
            ("()[V", DescriptorError::Invalid("()[V".into())),
            ("()VV", DescriptorError::Invalid("()VV".into())),
            (
                "(Ljava/lang/String)V",
                DescriptorError::Invalid("(Ljava/lang/String)V".into()),
            ),
        ];
        for (descriptor, error) in bad {
            assert_eq!(method_signature(descriptor), Err(error), "{descriptor:?}");
        }
        let many = format!("({})V", "I".repeat(MAX_PARAMETERS));
        assert_eq!(
            method_signature(&many).unwrap().params.len(),
            MAX_PARAMETERS
        );
        let too_many = format!("({})V", "I".repeat(MAX_PARAMETERS + 1));
        assert!(method_signature(&too_many).is_err());
        let long = format!("(L{};)V", "a".repeat(MAX_LENGTH));
        assert_eq!(method_signature(&long), Err(DescriptorError::TooLong));
    }

    #[test]
    fn hostile_descriptors_never_panic() {
        // Every prefix and every single-byte corruption of some valid descriptors.
        let valid = [
            "(I[Ljava/lang/String;)V",
            "([[JLa/B$C;Z)La/B;",
            "(L\u{e9}/\u{e9};)[D",
        ];
        let alphabet = ['(', ')', '[', 'L', ';', '/', 'V', 'I', '\u{e9}', 'a'];
        for descriptor in valid {
            for (i, _) in descriptor.char_indices() {
                let _ = method_signature(&descriptor[..i]);
                let _ = field_type(&descriptor[..i]);
                for c in alphabet {
                    let mut mutated = descriptor.to_owned();
                    mutated.replace_range(
                        i..i + descriptor[i..].chars().next().map_or(0, char::len_utf8),
                        &c.to_string(),
                    );
                    let _ = method_signature(&mutated);
                    let _ = field_type(&mutated);
                }
            }
        }
    }

    #[test]
    fn references_from_the_constant_pool() {
        assert_eq!(
            Reference::from_jvm("java/lang/System", "exit", "(I)V").unwrap(),
            Reference::method("java.lang.System", "exit", ["int"], "void")
        );
        assert_eq!(
            Reference::from_jvm("java/lang/System", "out", "Ljava/io/PrintStream;").unwrap(),
            Reference::field("java.lang.System", "out")
        );
        assert_eq!(
            Reference::from_jvm("java/util/ArrayList", "<init>", "()V")
                .unwrap()
                .to_string(),
            "java.util.ArrayList#<init>():void"
        );
        assert_eq!(
            Reference::from_internal_class("java/util/Map$Entry").unwrap(),
            Reference::class("java.util.Map$Entry")
        );
        assert_eq!(
            Reference::from_jvm("[I", "clone", "()Ljava/lang/Object;"),
            Err(DescriptorError::ClassName("[I".into()))
        );
        for name in ["", "a.b", "<foo>", "a#b", "a/b"] {
            assert_eq!(
                Reference::from_jvm("a/B", name, "()V"),
                Err(DescriptorError::MemberName(name.into())),
                "{name:?}"
            );
        }
        assert!(Reference::from_jvm("a/B", "x", "V").is_err());
    }
}
