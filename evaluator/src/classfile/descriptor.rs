//! Names and descriptors (JVMS 4.2, 4.3), and their Java source forms.

use super::{ClassFileError, Result};

/// JVMS 4.3.2: an array type has at most 255 dimensions.
const MAX_ARRAY_DIMENSIONS: usize = 255;
/// JVMS 4.3.3: parameters take at most 255 slots (`long` and `double` take two).
const MAX_PARAMETER_SLOTS: usize = 255;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Base<'a> {
    /// Source form: `int`, `boolean`, ...
    Primitive(&'static str),
    /// Internal form: `java/util/Map$Entry`.
    Class(&'a str),
}

/// A field type: `dims` array dimensions around `base`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct FieldType<'a> {
    pub(super) dims: usize,
    pub(super) base: Base<'a>,
}

impl FieldType<'_> {
    /// `int`, `java.lang.String[][]`, `java.util.Map$Entry`.
    pub(super) fn source_form(&self) -> String {
        let mut form = match self.base {
            Base::Primitive(name) => name.to_owned(),
            Base::Class(internal) => binary_name(internal),
        };
        for _ in 0..self.dims {
            form.push_str("[]");
        }
        form
    }

    /// The binary name of the class this type is or holds, if any.
    pub(super) fn element_class(&self) -> Option<String> {
        match self.base {
            Base::Primitive(_) => None,
            Base::Class(internal) => Some(binary_name(internal)),
        }
    }

    fn slots(&self) -> usize {
        match self.base {
            Base::Primitive("long" | "double") if self.dims == 0 => 2,
            _ => 1,
        }
    }
}

/// `java/util/Map$Entry` → `java.util.Map$Entry`.
pub(super) fn binary_name(internal: &str) -> String {
    internal.replace('/', ".")
}

/// A binary class name in internal form (JVMS 4.2.1): `/`-separated non-empty
/// segments without `.`, `;` or `[`.
pub(super) fn is_class_name(internal: &str) -> bool {
    internal
        .split('/')
        .all(|segment| !segment.is_empty() && !segment.contains(['.', ';', '[']))
}

/// A field name (JVMS 4.2.2).
pub(super) fn is_unqualified_name(name: &str) -> bool {
    !name.is_empty() && !name.contains(['.', ';', '[', '/'])
}

/// A method name (JVMS 4.2.2): unqualified, without `<` or `>` except in the two
/// special names.
pub(super) fn is_method_name(name: &str) -> bool {
    name == "<init>"
        || name == "<clinit>"
        || (is_unqualified_name(name) && !name.contains(['<', '>']))
}

/// The field type at the start of `s`, and the rest of `s` after it. Iterative.
fn parse_field_type(s: &str) -> Option<(FieldType<'_>, &str)> {
    let after_dims = s.trim_start_matches('[');
    let dims = s.len() - after_dims.len();
    if dims > MAX_ARRAY_DIMENSIONS {
        return None;
    }
    let primitive = |name| Some((Base::Primitive(name), after_dims.get(1..)?));
    let (base, rest) = match after_dims.as_bytes().first()? {
        b'B' => primitive("byte")?,
        b'C' => primitive("char")?,
        b'D' => primitive("double")?,
        b'F' => primitive("float")?,
        b'I' => primitive("int")?,
        b'J' => primitive("long")?,
        b'S' => primitive("short")?,
        b'Z' => primitive("boolean")?,
        b'L' => {
            let body = after_dims.get(1..)?;
            let semicolon = body.find(';')?;
            let name = body.get(..semicolon)?;
            if !is_class_name(name) {
                return None;
            }
            (Base::Class(name), body.get(semicolon + 1..)?)
        }
        _ => return None,
    };
    Some((FieldType { dims, base }, rest))
}

/// A whole field descriptor (JVMS 4.3.2).
pub(super) fn parse_field_descriptor(descriptor: &str) -> Option<FieldType<'_>> {
    match parse_field_type(descriptor)? {
        (field_type, "") => Some(field_type),
        _ => None,
    }
}

/// A method descriptor (JVMS 4.3.3): parameter types and return type (`None` for
/// `void`).
pub(super) fn parse_method_descriptor(
    descriptor: &str,
) -> Option<(Vec<FieldType<'_>>, Option<FieldType<'_>>)> {
    let mut rest = descriptor.strip_prefix('(')?;
    let mut parameters = Vec::new();
    let mut slots = 0;
    loop {
        if let Some(after) = rest.strip_prefix(')') {
            rest = after;
            break;
        }
        let (parameter, after) = parse_field_type(rest)?;
        slots += parameter.slots();
        if slots > MAX_PARAMETER_SLOTS {
            return None;
        }
        parameters.push(parameter);
        rest = after;
    }
    let result = if rest == "V" {
        None
    } else {
        Some(parse_field_descriptor(rest)?)
    };
    Some((parameters, result))
}

/// What a `CONSTANT_Class` names: a class in internal form, or an array type as a
/// field descriptor (`[I`, `[[Ljava/lang/String;`).
pub(super) fn parse_class_entry(name: &str) -> Option<FieldType<'_>> {
    if name.starts_with('[') {
        parse_field_descriptor(name)
    } else if is_class_name(name) {
        Some(FieldType {
            dims: 0,
            base: Base::Class(name),
        })
    } else {
        None
    }
}

/// A method descriptor's parameter types and return type in Java source form:
/// `(I[Ljava/lang/String;)V` → (`["int", "java.lang.String[]"]`, `"void"`). Nested
/// classes keep their binary names (`java.util.Map$Entry`).
pub fn descriptor_types(descriptor: &str) -> Result<(Vec<String>, String)> {
    let (parameters, result) = parse_method_descriptor(descriptor)
        .ok_or_else(|| ClassFileError::bad_descriptor(descriptor))?;
    let parameters = parameters.iter().map(FieldType::source_form).collect();
    let result = result.map_or_else(|| "void".to_owned(), |result| result.source_form());
    Ok((parameters, result))
}

/// A field descriptor in Java source form: `[[J` → `long[][]`.
pub fn field_type(descriptor: &str) -> Result<String> {
    parse_field_descriptor(descriptor)
        .map(|field_type| field_type.source_form())
        .ok_or_else(|| ClassFileError::bad_descriptor(descriptor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_descriptors_in_source_form() {
        let types = |d| descriptor_types(d).unwrap();
        assert_eq!(
            types("(I[Ljava/lang/String;)V"),
            (
                vec!["int".to_owned(), "java.lang.String[]".to_owned()],
                "void".to_owned()
            )
        );
        assert_eq!(types("()V"), (vec![], "void".to_owned()));
        assert_eq!(
            types("(JDZBCSF)[[I"),
            (
                ["long", "double", "boolean", "byte", "char", "short", "float"]
                    .map(str::to_owned)
                    .to_vec(),
                "int[][]".to_owned()
            )
        );
        assert_eq!(
            types("(Ljava/util/Map$Entry;)Ljava/lang/Object;"),
            (
                vec!["java.util.Map$Entry".to_owned()],
                "java.lang.Object".to_owned()
            )
        );
    }

    #[test]
    fn field_descriptors_in_source_form() {
        assert_eq!(field_type("I").unwrap(), "int");
        assert_eq!(
            field_type("[[Ljava/util/Map$Entry;").unwrap(),
            "java.util.Map$Entry[][]"
        );
        assert_eq!(field_type("LREPL/$JShell$11;").unwrap(), "REPL.$JShell$11");
    }

    #[test]
    fn rejects_malformed_descriptors() {
        for bad in [
            "",
            "(",
            ")V",
            "(I",
            "(I)",
            "I",
            "(V)V",
            "()VV",
            "()II",
            "(L;)V",
            "(Ljava/lang/String)V",
            "([)V",
            "(Ljava.lang.String;)V",
            "(Ljava//String;)V",
            "(L/a;)V",
            "(La/;)V",
            "(La;[)V",
            "()X",
            "(Q)V",
            "(I)V ",
            "()[V",
        ] {
            assert!(descriptor_types(bad).is_err(), "{bad:?}");
        }
        for bad in [
            "",
            "V",
            "[",
            "L;",
            "Ljava/lang/String",
            "II",
            "La[b;",
            "La;b;",
            "[V",
        ] {
            assert!(field_type(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn enforces_jvm_limits() {
        let dims = |n| format!("{}I", "[".repeat(n));
        assert!(field_type(&dims(255)).is_ok());
        assert!(field_type(&dims(256)).is_err());
        let params =
            |ints: usize, longs: usize| format!("({}{})V", "I".repeat(ints), "J".repeat(longs));
        assert!(descriptor_types(&params(255, 0)).is_ok());
        assert!(descriptor_types(&params(256, 0)).is_err());
        assert!(descriptor_types(&params(1, 127)).is_ok());
        assert!(descriptor_types(&params(2, 127)).is_err());
        // Long inputs stay iterative.
        assert!(descriptor_types(&format!("({})V", "Ljava/lang/Object;".repeat(300))).is_err());
        assert!(field_type(&"[".repeat(100_000)).is_err());
    }

    #[test]
    fn names() {
        assert!(is_class_name("java/util/Map$Entry"));
        assert!(is_class_name("module-info"));
        for bad in ["", "/", "a/", "/a", "a//b", "a.b", "a;", "[I"] {
            assert!(!is_class_name(bad), "{bad:?}");
        }
        assert!(
            is_method_name("<init>")
                && is_method_name("<clinit>")
                && is_method_name("lambda$main$0")
        );
        for bad in ["", "<foo>", "a<b", "a/b", "a.b", "a;b", "a[b"] {
            assert!(!is_method_name(bad), "{bad:?}");
        }
        assert!(is_unqualified_name("out") && !is_unqualified_name("a/b"));
    }
}
