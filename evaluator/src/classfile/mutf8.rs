//! Modified UTF-8 (JVMS 4.4.7) decoding that rejects malformed input and never panics.

/// A decoded `CONSTANT_Utf8`. Modified UTF-8 encodes UTF-16 code units, so it can
/// hold unpaired surrogates, which a Rust string cannot: `text` then has U+FFFD in
/// their place and `exact` is false. Such text may be a string literal (Java allows
/// `"\uD800"`), never a name or descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Utf8Text {
    pub(crate) text: String,
    pub(crate) exact: bool,
}

/// Decodes modified UTF-8, or returns the offset of the first invalid byte.
///
/// Accepted: one-byte forms `0x01..=0x7F`; two-byte forms for U+0080..=U+07FF and
/// `C0 80` for U+0000; three-byte forms for U+0800..=U+FFFF (surrogates included, as
/// modified UTF-8 writes supplementary characters as surrogate pairs). Rejected:
/// `0x00`, four-byte forms, stray continuation bytes, truncated sequences and other
/// overlong forms.
pub(crate) fn decode(bytes: &[u8]) -> Result<Utf8Text, usize> {
    if bytes.iter().all(|&b| (0x01..0x80).contains(&b)) {
        if let Ok(text) = std::str::from_utf8(bytes) {
            return Ok(Utf8Text {
                text: text.to_owned(),
                exact: true,
            });
        }
    }
    let mut units: Vec<u16> = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b0) = bytes.get(i) {
        let continuation = |at: usize| -> Result<u16, usize> {
            match bytes.get(at) {
                Some(&b) if b & 0xC0 == 0x80 => Ok(u16::from(b & 0x3F)),
                _ => Err(at),
            }
        };
        match b0 {
            0x01..=0x7F => {
                units.push(u16::from(b0));
                i += 1;
            }
            0xC0..=0xDF => {
                let unit = (u16::from(b0 & 0x1F) << 6) | continuation(i + 1)?;
                if unit != 0 && unit < 0x80 {
                    return Err(i);
                }
                units.push(unit);
                i += 2;
            }
            0xE0..=0xEF => {
                let unit = (u16::from(b0 & 0x0F) << 12)
                    | (continuation(i + 1)? << 6)
                    | continuation(i + 2)?;
                if unit < 0x800 {
                    return Err(i);
                }
                units.push(unit);
                i += 3;
            }
            _ => return Err(i),
        }
    }
    Ok(match String::from_utf16(&units) {
        Ok(text) => Utf8Text { text, exact: true },
        Err(_) => Utf8Text {
            text: String::from_utf16_lossy(&units),
            exact: false,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact(bytes: &[u8]) -> String {
        let decoded = decode(bytes).unwrap();
        assert!(decoded.exact, "{bytes:x?}");
        decoded.text
    }

    #[test]
    fn decodes_the_forms_javac_writes() {
        assert_eq!(exact(b""), "");
        assert_eq!(exact(b"java/lang/String"), "java/lang/String");
        assert_eq!(exact(&[0xC0, 0x80]), "\0");
        assert_eq!(exact(&[0xC3, 0xA9]), "é");
        assert_eq!(exact(&[0xE2, 0x82, 0xAC]), "€");
        // U+1F600 as the surrogate pair D83D DE00, three bytes each.
        assert_eq!(exact(&[0xED, 0xA0, 0xBD, 0xED, 0xB8, 0x80]), "😀");
    }

    #[test]
    fn unpaired_surrogates_are_kept_apart() {
        let lone = decode(&[b'a', 0xED, 0xA0, 0x80]).unwrap();
        assert!(!lone.exact);
        assert_eq!(lone.text, "a\u{FFFD}");
        let low_first = decode(&[0xED, 0xB8, 0x80, 0xED, 0xA0, 0xBD]).unwrap();
        assert!(!low_first.exact);
    }

    #[test]
    fn rejects_malformed_input() {
        assert_eq!(decode(&[0x00]), Err(0));
        assert_eq!(decode(b"ab\x80"), Err(2));
        assert_eq!(decode(&[0xC3]), Err(1));
        assert_eq!(decode(&[0xE2, 0x82]), Err(2));
        assert_eq!(decode(&[0xE2, 0x41, 0x82]), Err(1));
        // Four-byte standard UTF-8 is not modified UTF-8.
        assert_eq!(decode("😀".as_bytes()), Err(0));
        assert_eq!(decode(&[0xF8]), Err(0));
        // Overlong forms other than C0 80.
        assert_eq!(decode(&[0xC1, 0x81]), Err(0));
        assert_eq!(decode(&[0xE0, 0x81, 0x81]), Err(0));
        assert_eq!(decode(&[0xE0, 0x80, 0x80]), Err(0));
    }
}
