//! What a snippet uses ([`Reference`]) and whether a list allows it ([`Verdict`]).

use std::fmt;
use std::str::FromStr;

use super::parser::{Cursor, ParseError, Written};
use super::{AccessList, Rule, TypePattern};

/// A method's parameter and return types in Java source form
/// (`int`, `java.lang.String[]`, `java.util.Map$Entry`, `void`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Signature {
    pub params: Vec<String>,
    pub ret: String,
}

impl Signature {
    pub fn new<P: Into<String>>(
        params: impl IntoIterator<Item = P>,
        ret: impl Into<String>,
    ) -> Signature {
        Signature {
            params: params.into_iter().map(Into::into).collect(),
            ret: ret.into(),
        }
    }
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "({}):{}", self.params.join(","), self.ret)
    }
}

/// A thing a snippet uses.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Reference {
    /// A class by binary name (`java.util.Map$Entry`), or a Python module path (`os.path`).
    Class { binary_name: String },
    /// A field (no signature) or a method (with one) of a class, or a Python module's
    /// attribute.
    Member {
        owner: String,
        name: String,
        signature: Option<Signature>,
    },
}

impl Reference {
    /// A class by binary name: `java.util.Map$Entry`.
    pub fn class(binary_name: impl Into<String>) -> Reference {
        Reference::Class {
            binary_name: binary_name.into(),
        }
    }

    /// A Python dotted path: `math`, `os.path`, `builtins.open`.
    pub fn module(path: impl Into<String>) -> Reference {
        Reference::class(path)
    }

    /// A field, or any member without a signature.
    pub fn field(owner: impl Into<String>, name: impl Into<String>) -> Reference {
        Reference::Member {
            owner: owner.into(),
            name: name.into(),
            signature: None,
        }
    }

    /// A method with its parameter and return types in source form; constructors are
    /// named `<init>` and return `void`.
    pub fn method<P: Into<String>>(
        owner: impl Into<String>,
        name: impl Into<String>,
        params: impl IntoIterator<Item = P>,
        ret: impl Into<String>,
    ) -> Reference {
        Reference::Member {
            owner: owner.into(),
            name: name.into(),
            signature: Some(Signature::new(params, ret)),
        }
    }

    /// The name split into segments at `.`, `$` and `#` (empty segments, as in
    /// `Foo$$Lambda`, are kept).
    pub fn segments(&self) -> Vec<&str> {
        const SEPARATORS: [char; 3] = ['.', '$', '#'];
        match self {
            Reference::Class { binary_name } => binary_name.split(SEPARATORS).collect(),
            Reference::Member { owner, name, .. } => owner
                .split(SEPARATORS)
                .chain(name.split(SEPARATORS))
                .collect(),
        }
    }

    /// The method's signature, if the reference is a method.
    pub fn signature(&self) -> Option<&Signature> {
        match self {
            Reference::Member { signature, .. } => signature.as_ref(),
            Reference::Class { .. } => None,
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Class { binary_name } => f.write_str(binary_name),
            Reference::Member {
                owner,
                name,
                signature,
            } => {
                write!(f, "{owner}#{name}")?;
                if let Some(signature) = signature {
                    write!(f, "{signature}")?;
                }
                Ok(())
            }
        }
    }
}

/// Parses the rule syntax without `!` or wildcards: `java.util.Map$Entry`, `os.path`,
/// `java.lang.System#out`, `java.lang.System#exit(int):void`. A method needs its
/// return type, except a constructor (`a.B#<init>(int)`), which returns `void`.
/// Without `#` and a signature the whole name is a class (`java.lang.System.out`);
/// both match the same rules.
impl FromStr for Reference {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Reference, ParseError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(ParseError::EmptyReference);
        }
        let mut cursor = Cursor::new(s);
        let parsed = cursor.rule().map_err(|fail| fail.error)?;
        if !cursor.at_end() {
            return Err(cursor.unexpected_here().error);
        }
        if parsed.deny {
            return Err(ParseError::DenyInReference);
        }
        let whole = cursor.text(parsed.name_start, parsed.name_end);
        let member = |separator: usize| {
            (
                cursor.text(parsed.name_start, separator),
                cursor.text(separator + 1, parsed.name_end),
            )
        };
        match (parsed.params, parsed.ret) {
            (Written::Absent, Written::Absent) => match parsed.member_separator {
                Some(separator) if parsed.hash => {
                    let (owner, name) = member(separator);
                    Ok(Reference::field(owner, name))
                }
                _ => Ok(Reference::class(whole)),
            },
            (Written::Given(params), ret) => {
                let separator = parsed
                    .member_separator
                    .ok_or(ParseError::SignatureWithoutMember)?;
                let (owner, name) = member(separator);
                let params = params
                    .into_iter()
                    .map(|p| match p {
                        TypePattern::Type(t) => Ok(t),
                        TypePattern::Any => Err(ParseError::WildcardInReference),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let ret = match ret {
                    Written::Given(ret) => ret,
                    Written::Absent if name == "<init>" => "void".to_owned(),
                    Written::Absent => return Err(ParseError::IncompleteSignature),
                    Written::Any => return Err(ParseError::WildcardInReference),
                };
                Ok(Reference::method(owner, name, params, ret))
            }
            (Written::Any, _) | (_, Written::Any) => Err(ParseError::WildcardInReference),
            (Written::Absent, Written::Given(_)) => Err(ParseError::IncompleteSignature),
        }
    }
}

/// Whether a reference is allowed, and the rule that decided (`None`: no rule covers
/// it, so it is denied).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict<'a> {
    pub allowed: bool,
    /// `(line, rule text)` of the deciding rule.
    pub rule: Option<(usize, &'a str)>,
}

impl fmt::Display for Verdict<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.allowed { "allowed" } else { "denied" };
        match self.rule {
            Some((line, text)) => write!(f, "{verdict} by line {line} `{text}`"),
            None => write!(f, "{verdict}: no rule covers it"),
        }
    }
}

/// Whether `rule`'s parameter and return types (where given) match `signature`.
/// A rule that gives either only covers methods.
pub(super) fn signature_covers(rule: &Rule, signature: Option<&Signature>) -> bool {
    if rule.params.is_none() && rule.ret.is_none() {
        return true;
    }
    let Some(signature) = signature else {
        return false;
    };
    let params = rule.params.as_ref().is_none_or(|params| {
        params.len() == signature.params.len()
            && params
                .iter()
                .zip(&signature.params)
                .all(|(pattern, ty)| pattern.matches(ty))
    });
    params && rule.ret.as_ref().is_none_or(|ret| *ret == signature.ret)
}

impl AccessList {
    /// Whether the list allows `reference`: the most specific covering rule decides
    /// (more segments, then a fuller signature, then the later line); no covering
    /// rule means denied.
    pub fn check(&self, reference: &Reference) -> Verdict<'_> {
        let segments: Vec<String> = reference
            .segments()
            .into_iter()
            .map(str::to_owned)
            .collect();
        let signature = reference.signature();
        for len in (1..=segments.len()).rev() {
            let Some(candidates) = self.index.get(&segments[..len]) else {
                continue;
            };
            let best = candidates
                .iter()
                .filter_map(|&i| self.rules.get(i))
                .filter(|rule| signature_covers(rule, signature))
                .max_by_key(|rule| (rule.signature_rank(), rule.line));
            if let Some(rule) = best {
                return Verdict {
                    allowed: !rule.deny,
                    rule: Some((rule.line, &rule.text)),
                };
            }
        }
        Verdict {
            allowed: false,
            rule: None,
        }
    }

    /// Shorthand for `check(reference).allowed`.
    pub fn allows(&self, reference: &Reference) -> bool {
        self.check(reference).allowed
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn list(source: &str) -> AccessList {
        AccessList::parse(source, Path::new("test.access")).unwrap()
    }

    fn r(reference: &str) -> Reference {
        reference.parse().unwrap()
    }

    fn allowed(list: &AccessList, reference: &str) -> bool {
        list.check(&r(reference)).allowed
    }

    // One test per row of the guide's table.

    #[test]
    fn table_member_deny_leaves_other_members_of_an_allowed_package_allowed() {
        let list = list("evilcorp.coolib\n!evilcorp.coolib.Library#quit\n");
        let verdict = list.check(&r("evilcorp.coolib.Library#count(int[]):int"));
        assert_eq!(
            verdict,
            Verdict {
                allowed: true,
                rule: Some((1, "evilcorp.coolib"))
            }
        );
    }

    #[test]
    fn table_member_deny_denies_that_member_with_any_signature() {
        let list = list("evilcorp.coolib\n!evilcorp.coolib.Library#quit\n");
        let verdict = list.check(&r("evilcorp.coolib.Library#quit(java.lang.String):void"));
        assert_eq!(
            verdict,
            Verdict {
                allowed: false,
                rule: Some((2, "!evilcorp.coolib.Library#quit"))
            }
        );
        assert!(!allowed(&list, "evilcorp.coolib.Library#quit"));
        assert!(!allowed(&list, "evilcorp.coolib.Library#quit():void"));
    }

    #[test]
    fn table_signature_deny_leaves_other_overloads_allowed() {
        let list = list("java.lang.Thread\n!java.lang.Thread#sleep(long):void\n");
        assert!(allowed(&list, "java.lang.Thread#sleep(long,int):void"));
        assert!(!allowed(&list, "java.lang.Thread#sleep(long):void"));
    }

    #[test]
    fn table_parameter_deny_beats_member_allow_in_either_order() {
        for source in [
            "a.Foo#bar\n!a.Foo#bar(int)\n",
            "!a.Foo#bar(int)\na.Foo#bar\n",
        ] {
            let list = list(source);
            assert!(!allowed(&list, "a.Foo#bar(int):void"), "{source}");
            assert!(allowed(&list, "a.Foo#bar():void"), "{source}");
            assert!(allowed(&list, "a.Foo#bar(long):int"), "{source}");
        }
    }

    #[test]
    fn table_full_signature_allow_allows_exactly_that_method() {
        let list = list("java.lang.Object#equals(java.lang.Object):boolean\n");
        assert!(allowed(
            &list,
            "java.lang.Object#equals(java.lang.Object):boolean"
        ));
        assert!(!allowed(
            &list,
            "java.lang.Object#equals(java.lang.String):boolean"
        ));
        assert!(!allowed(&list, "java.lang.Object#hashCode():int"));
        assert!(!allowed(&list, "java.lang.Object"));
    }

    #[test]
    fn table_subpackage_deny_beats_package_allow_in_either_order() {
        for source in [
            "!java.util.concurrent\njava.util\n",
            "java.util\n!java.util.concurrent\n",
        ] {
            let list = list(source);
            assert!(
                !allowed(&list, "java.util.concurrent.ConcurrentHashMap#<init>()"),
                "{source}"
            );
            assert!(allowed(&list, "java.util.HashMap#<init>()"), "{source}");
        }
    }

    #[test]
    fn table_member_allow_under_class_deny_under_package_allow() {
        let list = list("java.lang\n!java.lang.System\njava.lang.System.out\n");
        assert_eq!(
            list.check(&Reference::field("java.lang.System", "out")),
            Verdict {
                allowed: true,
                rule: Some((3, "java.lang.System.out"))
            }
        );
        assert_eq!(
            list.check(&r("java.lang.System#exit(int):void")),
            Verdict {
                allowed: false,
                rule: Some((2, "!java.lang.System"))
            }
        );
        assert!(allowed(&list, "java.lang.String#length():int"));
    }

    #[test]
    fn table_empty_list_denies_everything() {
        let list = list("");
        for reference in [
            "java.lang.Object",
            "java.lang.Object#hashCode():int",
            "java.lang.System#out",
            "math",
        ] {
            assert_eq!(
                list.check(&r(reference)),
                Verdict {
                    allowed: false,
                    rule: None
                }
            );
        }
        assert_eq!(
            list.check(&r("math")).to_string(),
            "denied: no rule covers it"
        );
    }

    // Beyond the table.

    #[test]
    fn segments_are_whole_words() {
        let list = list("java.lang\n!java.lang.Process\n");
        assert!(allowed(&list, "java.lang.ProcessHandle"));
        assert!(allowed(
            &list,
            "java.lang.ProcessHandle#current():java.lang.ProcessHandle"
        ));
        assert!(!allowed(&list, "java.lang.Process"));
        assert!(!allowed(&list, "java.lang.Process$Foo"));
        assert!(!allowed(&list, "java.lang.Process#destroy():void"));
        assert!(!allowed(&list, "java.lang.Process$Foo#bar"));
        assert!(!allowed(&list, "java.langx.Foo"));
    }

    #[test]
    fn both_member_spellings_match_the_same_references() {
        for source in ["java.lang.System.out\n", "java.lang.System#out\n"] {
            let list = list(source);
            assert!(list.allows(&Reference::field("java.lang.System", "out")));
            assert!(allowed(&list, "java.lang.System.out"));
            assert!(allowed(&list, "java.lang.System#out"));
            assert!(!allowed(&list, "java.lang.System#err"));
            assert!(!allowed(&list, "java.lang.System"));
        }
        let list = list("java.lang.Object.equals(java.lang.Object):boolean\n");
        assert!(allowed(
            &list,
            "java.lang.Object#equals(java.lang.Object):boolean"
        ));
    }

    #[test]
    fn constructors() {
        let list = list("java.io.File#<init>\n!java.io.File#<init>(java.lang.String)\n");
        assert!(allowed(&list, "java.io.File#<init>(java.net.URI)"));
        assert!(allowed(
            &list,
            "java.io.File#<init>(java.io.File,java.lang.String):void"
        ));
        assert!(!allowed(&list, "java.io.File#<init>(java.lang.String)"));
        assert!(!allowed(&list, "java.io.File#exists():boolean"));
        assert!(!allowed(&list, "java.io.File"));
        assert_eq!(
            r("java.io.File#<init>(java.lang.String)"),
            Reference::method("java.io.File", "<init>", ["java.lang.String"], "void")
        );
    }

    #[test]
    fn arrays_in_signatures() {
        let list = list(
            "a.B\n\
             !a.B#c(int[]):void\n\
             !a.B#d(java.lang.String[][],java.util.Map$Entry[])\n",
        );
        assert!(!allowed(&list, "a.B#c(int[]):void"));
        assert!(allowed(&list, "a.B#c(int):void"));
        assert!(allowed(&list, "a.B#c(int[][]):void"));
        assert!(allowed(&list, "a.B#c(int[]):int"));
        assert!(!allowed(
            &list,
            "a.B#d(java.lang.String[][],java.util.Map$Entry[]):int[]"
        ));
        assert!(allowed(
            &list,
            "a.B#d(java.lang.String[],java.util.Map$Entry[]):int[]"
        ));
    }

    #[test]
    fn wildcards() {
        let list = list(
            "a\n\
             !a.B#any(*):int\n\
             !a.B#ret(int):*\n\
             !a.B#first(*,int):void\n",
        );
        assert!(!allowed(&list, "a.B#any():int"));
        assert!(!allowed(&list, "a.B#any(long,long):int"));
        assert!(allowed(&list, "a.B#any():long"));
        assert!(!allowed(&list, "a.B#ret(int):java.lang.Object"));
        assert!(allowed(&list, "a.B#ret(long):int"));
        assert!(!allowed(&list, "a.B#first(java.lang.String,int):void"));
        assert!(allowed(&list, "a.B#first(int):void"));
        assert!(allowed(&list, "a.B#first(int,long):void"));
    }

    #[test]
    fn signature_rules_cover_methods_only() {
        let list = list("a\n!a.B#c(*):int\n!a.B#d:int\n");
        assert!(allowed(&list, "a.B#c"));
        assert!(allowed(&list, "a.B#d"));
        assert!(!allowed(&list, "a.B#d(int):int"));
    }

    #[test]
    fn more_segments_beat_a_fuller_signature() {
        let list = list("!a.B(int):void\na.B#c\n");
        assert!(allowed(&list, "a.B#c(int):void"));
        assert!(!allowed(&list, "a.B#d(int):void"));
    }

    #[test]
    fn both_types_beat_either_beats_neither_whatever_the_order() {
        let list = list(
            "a.B#c(int):void\n\
             !a.B#c(int)\n\
             a.B#c\n",
        );
        assert_eq!(
            list.check(&r("a.B#c(int):void")).rule,
            Some((1, "a.B#c(int):void"))
        );
        assert_eq!(
            list.check(&r("a.B#c(int):int")).rule,
            Some((2, "!a.B#c(int)"))
        );
        assert_eq!(list.check(&r("a.B#c(long):int")).rule, Some((3, "a.B#c")));
    }

    #[test]
    fn equally_specific_rules_later_line_wins() {
        let l = list("!a.B#c:void\na.B#c(int)\n");
        assert!(allowed(&l, "a.B#c(int):void"));
        let l = list("a.B#c(int)\n!a.B#c:void\n");
        assert!(!allowed(&l, "a.B#c(int):void"));
        let l = list("a.B\n!a.B\n");
        assert_eq!(l.check(&r("a.B")).rule, Some((2, "!a.B")));
    }

    #[test]
    fn python_module_paths() {
        let list = list("math\nbuiltins\n!builtins.open\n!os\nio.StringIO\n");
        assert!(list.allows(&Reference::module("math")));
        assert!(list.allows(&Reference::module("math.sqrt")));
        assert!(!list.allows(&Reference::module("mathx")));
        assert!(!list.allows(&Reference::module("os")));
        assert!(!list.allows(&Reference::module("os.path")));
        assert!(!list.allows(&Reference::module("builtins.open")));
        assert!(list.allows(&Reference::field("builtins", "print")));
        assert!(list.allows(&Reference::module("io.StringIO")));
        assert!(!list.allows(&Reference::module("io")));
        assert!(!list.allows(&Reference::module("json")));
    }

    #[test]
    fn nested_and_synthetic_names() {
        let list = list("a.Foo\n!a.Foo$Inner\n");
        assert!(!allowed(&list, "a.Foo$Inner#x"));
        assert!(allowed(&list, "a.Foo$Other"));
        assert!(list.allows(&Reference::class("a.Foo$$Lambda$1")));
        assert_eq!(
            Reference::class("a.Foo$$Lambda").segments(),
            ["a", "Foo", "", "Lambda"]
        );
        assert_eq!(
            Reference::field("java.util.Map$Entry", "x").segments(),
            ["java", "util", "Map", "Entry", "x"]
        );
    }

    #[test]
    fn references_parse_and_display() {
        let cases = [
            ("java.util.Map$Entry", "java.util.Map$Entry"),
            ("os.path", "os.path"),
            ("java.lang.System#out", "java.lang.System#out"),
            ("java.lang.System.out", "java.lang.System.out"),
            (
                "java.lang.System#exit(int):void",
                "java.lang.System#exit(int):void",
            ),
            (
                "java.lang.System.exit(int):void",
                "java.lang.System#exit(int):void",
            ),
            ("a.B#<init>()", "a.B#<init>():void"),
            (
                " java.util.Map$Entry#comparingByKey():java.util.Comparator ",
                "java.util.Map$Entry#comparingByKey():java.util.Comparator",
            ),
        ];
        for (source, display) in cases {
            assert_eq!(r(source).to_string(), display, "{source}");
        }
        let errors = [
            ("", ParseError::EmptyReference),
            ("!a.B", ParseError::DenyInReference),
            ("a.B#c(*):void", ParseError::WildcardInReference),
            ("a.B#c(int,*):void", ParseError::WildcardInReference),
            ("a.B#c(int):*", ParseError::WildcardInReference),
            ("a.B#c(int)", ParseError::IncompleteSignature),
            ("a.B#c:int", ParseError::IncompleteSignature),
            ("a$B(int):void", ParseError::SignatureWithoutMember),
            ("a.B #x", ParseError::Whitespace),
            ("a.B;", ParseError::Unexpected(';')),
        ];
        for (source, error) in errors {
            assert_eq!(source.parse::<Reference>(), Err(error), "{source:?}");
        }
    }

    #[test]
    fn verdict_display() {
        let list = list("java.lang\n");
        assert_eq!(
            list.check(&r("java.lang.String")).to_string(),
            "allowed by line 1 `java.lang`"
        );
    }
}
