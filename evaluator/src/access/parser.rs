//! The access-list grammar.
//!
//! ```text
//! line      = ws* ( "#" any* | rule ( ws+ ( "#" any* )? )? )?
//! rule      = "!"? name signature?
//! name      = ident ( ("." | "$") ident )* ( ("." | "#") "<init>" | "#" ident ( "$" ident )* )?
//! signature = params ( ":" return )? | ":" return
//! params    = "(" ( "*" | ( type-or-* ( "," type-or-* )* )? ) ")"
//! return    = "*" | type | "void"
//! type      = primitive "[]"* | ident ( ("." | "$") ident )+ "[]"*
//! ident     = ( alphanumeric | "_" )+
//! ```
//!
//! A rule has no whitespace inside; a trailing comment is `#` after whitespace.
//! `(*)` and `:*` mean "any" and are the same as leaving the part out. A lone `*` in a
//! longer parameter list matches any one type. Types other than primitives must be
//! qualified (`java.lang.String`, not `String`), since descriptors always are and an
//! unqualified type would silently never match. Columns are 1-based and count
//! characters.

use std::fmt;
use std::path::{Path, PathBuf};

use super::{AccessList, Rule, TypePattern};

const PRIMITIVES: [&str; 9] = [
    "boolean", "byte", "char", "short", "int", "long", "float", "double", "void",
];

/// What is wrong at a position of a rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("expected a name")]
    ExpectedName,
    #[error("expected a type")]
    ExpectedType,
    #[error("expected `]`")]
    ExpectedBracket,
    #[error("unexpected `{0}`")]
    Unexpected(char),
    #[error("whitespace inside a rule")]
    Whitespace,
    #[error("unclosed parameter list")]
    UnclosedParameters,
    #[error("only `<init>` is written with angle brackets")]
    SpecialName,
    #[error("unqualified type `{0}`")]
    UnqualifiedType(String),
    #[error("`void` is only a return type")]
    VoidParameter,
    #[error("a signature needs a class and a member")]
    SignatureWithoutMember,
    #[error("text after the rule (comments start with `#`)")]
    TrailingText,
    #[error("empty reference")]
    EmptyReference,
    #[error("`!` is not allowed in a reference")]
    DenyInReference,
    #[error("`*` is not allowed in a reference")]
    WildcardInReference,
    #[error("a method reference needs parameter and return types")]
    IncompleteSignature,
}

/// A syntax error at a file, line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub file: PathBuf,
    /// 1-based.
    pub line: usize,
    /// 1-based, in characters.
    pub column: usize,
    pub error: ParseError,
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.error
        )
    }
}

/// Every syntax error of a refused list, in line order (never empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseErrors {
    file: PathBuf,
    errors: Vec<SyntaxError>,
}

impl ParseErrors {
    /// The list's file.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// The errors, in line order.
    pub fn errors(&self) -> &[SyntaxError] {
        &self.errors
    }
}

impl fmt::Display for ParseErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ParseErrors {}

impl<'a> IntoIterator for &'a ParseErrors {
    type Item = &'a SyntaxError;
    type IntoIter = std::slice::Iter<'a, SyntaxError>;

    fn into_iter(self) -> Self::IntoIter {
        self.errors.iter()
    }
}

pub(super) fn parse(source: &str, file: &Path) -> Result<AccessList, ParseErrors> {
    let source = source.strip_prefix('\u{feff}').unwrap_or(source);
    let mut rules = Vec::new();
    let mut errors = Vec::new();
    for (i, line) in source.lines().enumerate() {
        let mut cursor = Cursor::new(line);
        match parse_line(&mut cursor) {
            Ok(None) => {}
            Ok(Some(parsed)) => rules.push(Rule {
                line: i + 1,
                text: cursor.text(parsed.start, parsed.end),
                deny: parsed.deny,
                segments: parsed.segments,
                params: parsed.params.into_option(),
                ret: parsed.ret.into_option(),
            }),
            Err(fail) => errors.push(SyntaxError {
                file: file.to_owned(),
                line: i + 1,
                column: fail.pos + 1,
                error: fail.error,
            }),
        }
    }
    if errors.is_empty() {
        Ok(AccessList::new(file.to_owned(), rules))
    } else {
        Err(ParseErrors {
            file: file.to_owned(),
            errors,
        })
    }
}

/// One part of a signature as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Written<T> {
    Absent,
    /// `(*)` or `:*`.
    Any,
    Given(T),
}

impl<T> Written<T> {
    fn into_option(self) -> Option<T> {
        match self {
            Written::Given(t) => Some(t),
            Written::Absent | Written::Any => None,
        }
    }
}

/// A rule as written, with character positions into its line.
#[derive(Debug)]
pub(super) struct Parsed {
    pub start: usize,
    pub end: usize,
    pub deny: bool,
    pub segments: Vec<String>,
    /// Position of the `#` or `.` before the last segment, and the end of the name.
    pub member_separator: Option<usize>,
    pub name_start: usize,
    pub name_end: usize,
    pub hash: bool,
    pub params: Written<Vec<TypePattern>>,
    pub ret: Written<String>,
}

#[derive(Debug)]
pub(super) struct Fail {
    pub pos: usize,
    pub error: ParseError,
}

#[derive(Debug)]
pub(super) struct Cursor {
    chars: Vec<char>,
    pos: usize,
}

impl Cursor {
    pub(super) fn new(line: &str) -> Cursor {
        Cursor {
            chars: line.chars().collect(),
            pos: 0,
        }
    }

    pub(super) fn text(&self, start: usize, end: usize) -> String {
        self.chars
            .get(start..end)
            .map(|s| s.iter().collect())
            .unwrap_or_default()
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn peek_at(&self, n: usize) -> Option<char> {
        self.chars.get(self.pos + n).copied()
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn skip_whitespace(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    fn fail(&self, error: ParseError) -> Fail {
        Fail {
            pos: self.pos,
            error,
        }
    }

    /// Fails with `expected` at the current position, or with [`ParseError::Whitespace`]
    /// when the current character is whitespace.
    fn expected(&self, expected: ParseError) -> Fail {
        match self.peek() {
            Some(c) if c.is_whitespace() => self.fail(ParseError::Whitespace),
            _ => self.fail(expected),
        }
    }

    fn ident(&mut self, expected: ParseError) -> Result<String, Fail> {
        let start = self.pos;
        while self.peek().is_some_and(is_ident_char) {
            self.pos += 1;
        }
        if self.pos == start {
            return Err(self.expected(expected));
        }
        Ok(self.text(start, self.pos))
    }

    /// `<init>`, at a `<`.
    fn special_name(&mut self) -> Result<String, Fail> {
        const INIT: &str = "<init>";
        let matches = INIT
            .chars()
            .enumerate()
            .all(|(i, c)| self.peek_at(i) == Some(c));
        if !matches {
            return Err(self.fail(ParseError::SpecialName));
        }
        self.pos += INIT.chars().count();
        Ok(INIT.to_owned())
    }

    fn member(&mut self) -> Result<Vec<String>, Fail> {
        if self.peek() == Some('<') {
            return Ok(vec![self.special_name()?]);
        }
        let mut segments = vec![self.ident(ParseError::ExpectedName)?];
        while self.eat('$') {
            segments.push(self.ident(ParseError::ExpectedName)?);
        }
        Ok(segments)
    }

    fn name(&mut self, parsed: &mut Parsed) -> Result<(), Fail> {
        parsed.name_start = self.pos;
        parsed.segments.push(self.ident(ParseError::ExpectedName)?);
        loop {
            match self.peek() {
                Some('.') => {
                    parsed.member_separator = Some(self.pos);
                    self.pos += 1;
                    if self.peek() == Some('<') {
                        parsed.segments.push(self.special_name()?);
                        break;
                    }
                    parsed.segments.push(self.ident(ParseError::ExpectedName)?);
                }
                Some('$') => {
                    self.pos += 1;
                    parsed.segments.push(self.ident(ParseError::ExpectedName)?);
                }
                Some('#') => {
                    parsed.member_separator = Some(self.pos);
                    parsed.hash = true;
                    self.pos += 1;
                    parsed.segments.extend(self.member()?);
                    break;
                }
                _ => break,
            }
        }
        parsed.name_end = self.pos;
        Ok(())
    }

    fn type_name(&mut self, allow_void: bool) -> Result<String, Fail> {
        let start = self.pos;
        let mut qualified = false;
        self.ident(ParseError::ExpectedType)?;
        while matches!(self.peek(), Some('.' | '$')) {
            self.pos += 1;
            self.ident(ParseError::ExpectedType)?;
            qualified = true;
        }
        let base = self.text(start, self.pos);
        let mut dimensions = 0;
        while self.eat('[') {
            if !self.eat(']') {
                return Err(self.expected(ParseError::ExpectedBracket));
            }
            dimensions += 1;
        }
        let at_start = |error| Fail { pos: start, error };
        if !qualified && !PRIMITIVES.contains(&base.as_str()) {
            return Err(at_start(ParseError::UnqualifiedType(base)));
        }
        if base == "void" && (!allow_void || dimensions > 0) {
            return Err(at_start(ParseError::VoidParameter));
        }
        Ok(self.text(start, self.pos))
    }

    fn params(&mut self) -> Result<Written<Vec<TypePattern>>, Fail> {
        let open = self.pos;
        self.pos += 1; // '('
        if self.peek() == Some('*') && self.peek_at(1) == Some(')') {
            self.pos += 2;
            return Ok(Written::Any);
        }
        let mut params = Vec::new();
        if self.eat(')') {
            return Ok(Written::Given(params));
        }
        loop {
            if self.peek().is_none() {
                return Err(Fail {
                    pos: open,
                    error: ParseError::UnclosedParameters,
                });
            }
            if self.eat('*') {
                params.push(TypePattern::Any);
            } else {
                params.push(TypePattern::Type(self.type_name(false)?));
            }
            match self.peek() {
                Some(',') => self.pos += 1,
                Some(')') => {
                    self.pos += 1;
                    return Ok(Written::Given(params));
                }
                None => {
                    return Err(Fail {
                        pos: open,
                        error: ParseError::UnclosedParameters,
                    })
                }
                Some(c) if c.is_whitespace() => return Err(self.fail(ParseError::Whitespace)),
                Some(c) => return Err(self.fail(ParseError::Unexpected(c))),
            }
        }
    }

    fn ret(&mut self) -> Result<Written<String>, Fail> {
        self.pos += 1; // ':'
        if self.eat('*') {
            return Ok(Written::Any);
        }
        Ok(Written::Given(self.type_name(true)?))
    }

    /// A rule or reference, from the current position to its end (not past it).
    pub(super) fn rule(&mut self) -> Result<Parsed, Fail> {
        let mut parsed = Parsed {
            start: self.pos,
            end: self.pos,
            deny: false,
            segments: Vec::new(),
            member_separator: None,
            name_start: self.pos,
            name_end: self.pos,
            hash: false,
            params: Written::Absent,
            ret: Written::Absent,
        };
        parsed.deny = self.eat('!');
        self.name(&mut parsed)?;
        let signature_at = self.pos;
        if self.peek() == Some('(') {
            parsed.params = self.params()?;
        }
        if self.peek() == Some(':') {
            parsed.ret = self.ret()?;
        }
        let has_signature = parsed.params != Written::Absent || parsed.ret != Written::Absent;
        if has_signature && parsed.segments.len() < 2 {
            return Err(Fail {
                pos: signature_at,
                error: ParseError::SignatureWithoutMember,
            });
        }
        parsed.end = self.pos;
        Ok(parsed)
    }

    pub(super) fn at_end(&self) -> bool {
        self.pos >= self.chars.len()
    }

    pub(super) fn unexpected_here(&self) -> Fail {
        match self.peek() {
            Some(c) if c.is_whitespace() => self.fail(ParseError::Whitespace),
            Some(c) => self.fail(ParseError::Unexpected(c)),
            None => self.fail(ParseError::ExpectedName),
        }
    }
}

fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

fn parse_line(cursor: &mut Cursor) -> Result<Option<Parsed>, Fail> {
    cursor.skip_whitespace();
    match cursor.peek() {
        None | Some('#') => return Ok(None),
        _ => {}
    }
    let parsed = cursor.rule()?;
    match cursor.peek() {
        None => {}
        Some(c) if c.is_whitespace() => {
            cursor.skip_whitespace();
            if !matches!(cursor.peek(), None | Some('#')) {
                return Err(cursor.fail(ParseError::TrailingText));
            }
        }
        Some(c) => return Err(cursor.fail(ParseError::Unexpected(c))),
    }
    Ok(Some(parsed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(source: &str) -> Result<AccessList, ParseErrors> {
        AccessList::parse(source, Path::new("lists/test.access"))
    }

    fn one(source: &str) -> Rule {
        let list = parse(source).unwrap();
        assert_eq!(list.rules().len(), 1, "{source}");
        list.rules()[0].clone()
    }

    fn segs(rule: &Rule) -> Vec<&str> {
        rule.segments().iter().map(String::as_str).collect()
    }

    fn ty(t: &str) -> TypePattern {
        TypePattern::Type(t.to_owned())
    }

    /// The single error of a one-line list, as `file:line:column: message`.
    fn error(source: &str) -> String {
        let errors = parse(source).unwrap_err();
        assert_eq!(errors.errors().len(), 1, "{errors}");
        errors.errors()[0].to_string()
    }

    #[test]
    fn comments_blank_lines_and_whitespace() {
        let list = parse(
            "# a comment\n\
             \n   \t\n\
             \t  # an indented comment\n\
             \u{20}\u{20}java.util   # trailing comment\n\
             !java.util.concurrent\t#tab before\n\
             java.text\t \r\n\
             java.time#comment-looking member\n",
        );
        // The last line is an error: a member followed by text.
        let errors = list.unwrap_err();
        assert_eq!(errors.errors().len(), 1);
        assert_eq!(
            errors.errors()[0].to_string(),
            "lists/test.access:8:18: unexpected `-`"
        );

        let list = parse(
            "\u{feff}# a comment\n\
             \n   \t\n\
             \t  # an indented comment\n\
             \u{20}\u{20}java.util   # trailing comment\n\
             !java.util.concurrent\t#tab before\r\n\
             java.text\t \r\n\
             java.time#now\n",
        )
        .unwrap();
        let rules: Vec<_> = list
            .rules()
            .iter()
            .map(|r| (r.line(), r.text(), r.is_deny()))
            .collect();
        assert_eq!(
            rules,
            [
                (5, "java.util", false),
                (6, "!java.util.concurrent", true),
                (7, "java.text", false),
                (8, "java.time#now", false),
            ]
        );
        assert_eq!(segs(&list.rules()[3]), ["java", "time", "now"]);
    }

    #[test]
    fn empty_source_is_an_empty_list() {
        assert!(parse("").unwrap().is_empty());
        assert!(parse("# only\n  # comments\n\n").unwrap().is_empty());
    }

    #[test]
    fn packages_classes_and_nested_classes() {
        assert_eq!(segs(&one("java.util")), ["java", "util"]);
        assert_eq!(segs(&one("java.util.List")), ["java", "util", "List"]);
        assert_eq!(
            segs(&one("java.util.Map$Entry")),
            ["java", "util", "Map", "Entry"]
        );
        assert_eq!(segs(&one("a.Outer$1")), ["a", "Outer", "1"]);
        let rule = one("!java.lang.Process");
        assert!(rule.is_deny());
        assert_eq!(rule.text(), "!java.lang.Process");
        assert_eq!(rule.signature_rank(), 0);
    }

    #[test]
    fn both_member_spellings_have_the_same_segments() {
        let hash = one("java.lang.System#out");
        let dot = one("java.lang.System.out");
        assert_eq!(segs(&hash), ["java", "lang", "System", "out"]);
        assert_eq!(hash.segments(), dot.segments());
        assert_eq!(
            one("java.lang.Object#equals(java.lang.Object)").segments(),
            one("java.lang.Object.equals(java.lang.Object)").segments()
        );
        assert_eq!(
            segs(&one("a.Foo#lambda$main$0")),
            ["a", "Foo", "lambda", "main", "0"]
        );
    }

    #[test]
    fn constructors() {
        let rule = one("java.io.File#<init>");
        assert_eq!(segs(&rule), ["java", "io", "File", "<init>"]);
        assert_eq!(rule.specificity(), (4, 0));
        assert_eq!(one("java.io.File.<init>").segments(), rule.segments());
        let rule = one("!java.util.Formatter#<init>(java.io.File,java.lang.String)");
        assert_eq!(
            rule.params(),
            Some(&[ty("java.io.File"), ty("java.lang.String")][..])
        );
        assert_eq!(rule.return_type(), None);
        assert_eq!(one("a.B#<init>()").params(), Some(&[][..]));
    }

    #[test]
    fn signatures_and_wildcards() {
        let full = one("java.lang.Object#equals(java.lang.Object):boolean");
        assert_eq!(full.params(), Some(&[ty("java.lang.Object")][..]));
        assert_eq!(full.return_type(), Some("boolean"));
        assert_eq!(full.signature_rank(), 2);

        // `(*)` and `:*` are the same as leaving the part out.
        for source in [
            "java.lang.Object#equals(*):boolean",
            "java.lang.Object#equals:boolean",
        ] {
            let rule = one(source);
            assert_eq!(rule.params(), None, "{source}");
            assert_eq!(rule.return_type(), Some("boolean"), "{source}");
            assert_eq!(rule.signature_rank(), 1, "{source}");
        }
        for source in [
            "java.lang.Object#equals(java.lang.Object):*",
            "java.lang.Object#equals(java.lang.Object)",
        ] {
            let rule = one(source);
            assert_eq!(rule.params(), Some(&[ty("java.lang.Object")][..]));
            assert_eq!(rule.return_type(), None, "{source}");
            assert_eq!(rule.signature_rank(), 1, "{source}");
        }
        let any = one("java.lang.Object#equals(*):*");
        assert_eq!((any.params(), any.return_type()), (None, None));
        assert_eq!(any.signature_rank(), 0);

        let mixed = one("a.B#c(*,int):void");
        assert_eq!(mixed.params(), Some(&[TypePattern::Any, ty("int")][..]));
        assert_eq!(mixed.return_type(), Some("void"));
    }

    #[test]
    fn array_and_nested_types_in_signatures() {
        let rule = one("a.B#c(int[],java.lang.String[][],java.util.Map$Entry):long[]");
        assert_eq!(
            rule.params(),
            Some(
                &[
                    ty("int[]"),
                    ty("java.lang.String[][]"),
                    ty("java.util.Map$Entry")
                ][..]
            )
        );
        assert_eq!(rule.return_type(), Some("long[]"));
    }

    #[test]
    fn python_module_paths() {
        assert_eq!(segs(&one("math")), ["math"]);
        assert_eq!(segs(&one("os.path")), ["os", "path"]);
        let rule = one("!builtins.open");
        assert!(rule.is_deny());
        assert_eq!(segs(&rule), ["builtins", "open"]);
        assert_eq!(
            segs(&one("!builtins.__import__")),
            ["builtins", "__import__"]
        );
        assert_eq!(segs(&one("_thread")), ["_thread"]);
    }

    #[test]
    fn syntax_errors_have_file_line_and_column() {
        let cases = [
            ("!", "1:2: expected a name"),
            ("! java.util", "1:2: whitespace inside a rule"),
            ("!!java.util", "1:2: expected a name"),
            ("java..util", "1:6: expected a name"),
            ("java.util.", "1:11: expected a name"),
            ("java. util", "1:6: whitespace inside a rule"),
            ("java.util#", "1:11: expected a name"),
            ("java.util$#x", "1:11: expected a name"),
            ("  java.util.List;", "1:17: unexpected `;`"),
            ("java.util.List<java.lang.String>", "1:15: unexpected `<`"),
            ("a.B#c#d", "1:6: unexpected `#`"),
            ("a.B#c.d", "1:6: unexpected `.`"),
            (
                "a.B#<clinit>",
                "1:5: only `<init>` is written with angle brackets",
            ),
            ("a.B$<init>", "1:5: expected a name"),
            ("a.B#<init>.x", "1:11: unexpected `.`"),
            (
                "java.util.List java.util.Map",
                "1:16: text after the rule (comments start with `#`)",
            ),
            ("a.B#c(int", "1:6: unclosed parameter list"),
            ("a.B#c(", "1:6: unclosed parameter list"),
            ("a.B#c(int,)", "1:11: expected a type"),
            ("a.B#c(,int)", "1:7: expected a type"),
            ("a.B#c(int, long)", "1:11: whitespace inside a rule"),
            ("a.B#c(int;long)", "1:10: unexpected `;`"),
            ("a.B#c(String)", "1:7: unqualified type `String`"),
            ("a.B#c:String", "1:7: unqualified type `String`"),
            ("a.B#c(void)", "1:7: `void` is only a return type"),
            ("a.B#c:void[]", "1:7: `void` is only a return type"),
            ("a.B#c(int[)", "1:11: expected `]`"),
            ("a.B#c(java.lang.)", "1:17: expected a type"),
            ("a.B#c(int...)", "1:11: expected a type"),
            ("a.B#c:", "1:7: expected a type"),
            ("a.B#c(int)x", "1:11: unexpected `x`"),
            ("java(int)", "1:5: a signature needs a class and a member"),
            ("math:int", "1:5: a signature needs a class and a member"),
            (".java", "1:1: expected a name"),
            ("*", "1:1: expected a name"),
        ];
        for (source, expected) in cases {
            assert_eq!(
                error(source),
                format!("lists/test.access:{expected}"),
                "{source:?}"
            );
        }
    }

    #[test]
    fn every_error_is_reported_and_the_list_is_refused() {
        let errors = parse(
            "java.util\n\
             java..lang\n\
             # fine\n\
             !java.util.concurrent\n\
             a.B#c(String)\n\
             \u{e9}t\u{e9}.x;\n",
        )
        .unwrap_err();
        let lines: Vec<_> = errors.errors().iter().map(|e| (e.line, e.column)).collect();
        assert_eq!(lines, [(2, 6), (5, 7), (6, 6)]);
        assert_eq!(errors.file(), Path::new("lists/test.access"));
        assert_eq!(
            errors.to_string(),
            "lists/test.access:2:6: expected a name; \
             lists/test.access:5:7: unqualified type `String`; \
             lists/test.access:6:6: unexpected `;`"
        );
        assert_eq!((&errors).into_iter().count(), 3);
    }

    #[test]
    fn load_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.access");
        std::fs::write(&path, "java.util\n\njava..x\n").unwrap();
        let err = AccessList::load(&path).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("{}:3:6: expected a name", path.display())
        );

        std::fs::write(&path, "java.util\n").unwrap();
        let list = AccessList::load(&path).unwrap();
        assert_eq!(list.file(), path);
        assert_eq!(list.rules().len(), 1);

        let missing = dir.path().join("missing.access");
        let err = AccessList::load(&missing).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("cannot read access list {}", missing.display())
        );
        assert!(std::error::Error::source(&err).is_some());
    }
}
