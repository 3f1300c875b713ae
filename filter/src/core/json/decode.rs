//! Decoding the JSON values the scanner hands over as raw text: strings and `u64` numbers,
//! with serde_json's verdicts.

use std::borrow::Cow;

/// Decodes a JSON string value (quotes included); `None` if `raw` is not a string. Unescaped
/// strings are borrowed. Escapes follow serde_json: `\uXXXX` surrogates must pair up.
///
/// Our own code rather than serde_json's: its errors format their messages eagerly, and the
/// one for a float where an integer was expected pulls float formatting (~15 KB) into the
/// module.
pub(crate) fn decode_string(raw: &str) -> Option<Cow<'_, str>> {
    let inner = raw.strip_prefix('"')?.strip_suffix('"')?;
    if !inner.contains('\\') {
        return (!inner.contains('"')).then_some(Cow::Borrowed(inner));
    }
    let mut out = String::with_capacity(inner.len());
    let mut rest = inner;
    while let Some(i) = rest.find('\\') {
        let (plain, esc) = rest.split_at(i);
        if plain.contains('"') {
            return None;
        }
        out.push_str(plain);
        let mut chars = esc.chars();
        chars.next(); // the backslash
        let c = match chars.next()? {
            '"' => '"',
            '\\' => '\\',
            '/' => '/',
            'b' => '\u{8}',
            'f' => '\u{c}',
            'n' => '\n',
            'r' => '\r',
            't' => '\t',
            'u' => {
                let hi = hex4(chars.as_str())?;
                chars = chars.as_str().get(4..)?.chars();
                match hi {
                    0xD800..=0xDBFF => {
                        let tail = chars.as_str().strip_prefix("\\u")?;
                        let lo = hex4(tail)?;
                        if !(0xDC00..=0xDFFF).contains(&lo) {
                            return None;
                        }
                        chars = tail.get(4..)?.chars();
                        char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00))?
                    }
                    _ => char::from_u32(hi)?,
                }
            }
            _ => return None,
        };
        out.push(c);
        rest = chars.as_str();
    }
    if rest.contains('"') {
        return None;
    }
    out.push_str(rest);
    Some(Cow::Owned(out))
}

/// The value of four hex digits at the start of `s`.
fn hex4(s: &str) -> Option<u32> {
    let digits = s.get(..4)?;
    if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(digits, 16).ok()
}

/// Decodes a JSON number that must be a `u64`, with serde_json's verdicts: digits only (no
/// sign, not even `-0`, no fraction or exponent), no leading zero, no overflow.
pub(crate) fn decode_u64(raw: &str) -> Option<u64> {
    let bytes = raw.as_bytes();
    if bytes.is_empty()
        || !bytes.iter().all(u8::is_ascii_digit)
        || (bytes.len() > 1 && bytes.first() == Some(&b'0'))
    {
        return None;
    }
    bytes.iter().try_fold(0u64, |n, &b| {
        n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_and_numbers_decode_as_serde_json_does() {
        assert_eq!(decode_string(r#""x\"y""#).as_deref(), Some("x\"y"));
        assert_eq!(decode_string(r#""plain""#).as_deref(), Some("plain"));
        assert_eq!(decode_string("1"), None);
        assert_eq!(decode_string(r#""\ud800""#), None);
        assert_eq!(decode_u64("18446744073709551615"), Some(u64::MAX));
        assert_eq!(decode_u64("18446744073709551616"), None);
        assert_eq!(decode_u64("1.0"), None);
        assert_eq!(decode_u64("-1"), None);
        assert_eq!(decode_u64("\"1\""), None);
        assert_eq!(decode_u64("0"), Some(0));
        assert_eq!(decode_u64("-0"), None);
        assert_eq!(decode_u64("01"), None);
        for raw in [
            r#""\ud800\udc00""#,
            r#""\uD83D\uDE00x""#,
            r#""\udc00""#,
            r#""\ud800x""#,
            r#""\ud800\u0041""#,
            r#""a\u00e9\n\t\/\\\"\b\f\r""#,
            r#""\u0000""#,
            r#""\u12""#,
            r#""\q""#,
            r#""é\u65e5本""#,
            r#""\ud800\ud800""#,
            r#""""#,
        ] {
            assert_eq!(
                decode_string(raw).map(Cow::into_owned),
                serde_json::from_str::<String>(raw).ok(),
                "{raw}"
            );
        }
    }
}
