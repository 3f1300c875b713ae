//! A validating, allocation-free forward scanner over JSON text.
//!
//! The webhook parser runs once per drone webhook inside every Envoy worker. Building a tree
//! (or even serde's raw-value objects) for a 3.5 KB payload of which we read eight fields
//! costs several passes and an allocation per key; this scanner walks the text once, checks
//! it against the JSON grammar as strictly as serde_json does (strings, escapes, control
//! characters, numbers, literals, nesting limit, trailing characters), and hands the caller
//! each object member as a key token and the byte range of its value. Nothing is decoded
//! unless the caller asks for it.
//!
//! The input is `&str`, so UTF-8 has been validated by the caller (one fast pass in `std`).

use super::decode::decode_string;
use std::borrow::Cow;

/// Deepest nesting accepted (serde_json's own limit). Drone's objects nest about 7 levels;
/// without a limit an absurdly nested value would be accepted and then copied into
/// re-deliveries that other decoders refuse.
pub(crate) const MAX_DEPTH: usize = 128;

/// Why the text is not (acceptable) JSON. The message names the problem and the byte offset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct JsonError {
    pub(crate) what: &'static str,
    pub(crate) at: usize,
}

impl std::fmt::Display for JsonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at byte {}", self.what, self.at)
    }
}

/// An object key as it appears in the text (with its quotes).
#[derive(Clone, Copy, Debug)]
pub(crate) struct KeyToken<'a> {
    /// The key's JSON string literal, quotes included.
    raw: &'a str,
    /// The literal contains a backslash (the scanner saw it, so decoding need not look).
    escaped: bool,
}

impl<'a> KeyToken<'a> {
    /// The key's text. Keys without escapes (all of drone's) are borrowed; in an escaped one a
    /// lone surrogate is refused, as serde_json refuses it.
    pub(crate) fn decode(&self) -> Result<Cow<'a, str>, JsonError> {
        if !self.escaped {
            // The scanner checked the literal: quotes at both ends, none inside.
            let inner = self.raw.get(1..self.raw.len().saturating_sub(1));
            if let Some(inner) = inner {
                return Ok(Cow::Borrowed(inner));
            }
        }
        decode_string(self.raw).ok_or(JsonError {
            what: "invalid escape in key",
            at: 0,
        })
    }
}

/// `bytes` as little-endian 64-bit words, and the bytes after the last whole word. Each word
/// is one 64-bit load (`copy_from_slice` into an array was an out-of-line call per word in
/// the size-optimised module).
#[inline]
pub(crate) fn le_words(bytes: &[u8]) -> (impl Iterator<Item = u64> + '_, &[u8]) {
    let chunks = bytes.chunks_exact(8);
    let rest = chunks.remainder();
    let words = chunks.map(|c| u64::from_le_bytes(<[u8; 8]>::try_from(c).unwrap_or_default()));
    (words, rest)
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// The eight bytes at `i` as one little-endian word (one 64-bit load), if there are eight.
#[inline(always)]
fn word_at(b: &[u8], i: usize) -> Option<u64> {
    b.get(i..i.wrapping_add(8))
        .and_then(|w| <[u8; 8]>::try_from(w).ok())
        .map(u64::from_le_bytes)
}

/// The high bit of each byte of `w` that ends a string's plain run: `"`, `\\` or a control
/// character (SWAR: the classic "has a zero byte" bit trick, exact for the lowest match).
#[inline(always)]
fn stops(w: u64) -> u64 {
    let quote = w ^ (ONES * u64::from(b'"'));
    let backslash = w ^ (ONES * u64::from(b'\\'));
    ((quote.wrapping_sub(ONES) & !quote)
        | (backslash.wrapping_sub(ONES) & !backslash)
        | (w.wrapping_sub(ONES * 0x20) & !w))
        & HIGH
}

/// Index of the first byte of `bytes` that ends a string's plain run: `"`, `\\` or a control
/// character. Strings are most of a drone payload, so this looks at eight bytes per step.
#[cfg(test)]
fn string_special(bytes: &[u8]) -> Option<usize> {
    let i = plain_run(bytes, 0);
    (i < bytes.len()).then_some(i)
}

/// From `i`, the index of the first byte that ends a string's plain run (`bytes.len()` if
/// none does).
#[inline(always)]
fn plain_run(b: &[u8], mut i: usize) -> usize {
    while let Some(w) = word_at(b, i) {
        let found = stops(w);
        if found != 0 {
            return i + (found.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while let Some(&c) = b.get(i) {
        if c == b'"' || c == b'\\' || c < 0x20 {
            return i;
        }
        i += 1;
    }
    i
}

/// The error `what` at byte `at`.
#[cold]
#[inline(never)]
fn fail<T>(what: &'static str, at: usize) -> Result<T, JsonError> {
    Err(JsonError { what, at })
}

/// The string whose opening quote is at `i - 1`: the index after its closing quote, and
/// whether it has an escape. Control characters and malformed escapes are errors, as in
/// serde_json.
#[inline(always)]
fn string_end(b: &[u8], mut i: usize) -> Result<(usize, bool), JsonError> {
    // Most strings have no escape: their end is the first stop byte.
    i = plain_run(b, i);
    if b.get(i) == Some(&b'"') {
        return Ok((i + 1, false));
    }
    escaped_string_end(b, i)
}

/// [`string_end`] from the first stop byte that is not the closing quote.
#[inline(never)]
fn escaped_string_end(b: &[u8], mut i: usize) -> Result<(usize, bool), JsonError> {
    let mut escaped = false;
    loop {
        match b.get(i) {
            Some(b'"') => return Ok((i + 1, escaped)),
            Some(b'\\') => {
                escaped = true;
                match b.get(i + 1) {
                    Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => i += 2,
                    Some(b'u') => {
                        let hex = b.get(i + 2..i + 6);
                        if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                            return fail("invalid \\u escape", i + 1);
                        }
                        i += 6;
                    }
                    _ => return fail("invalid escape", i + 1),
                }
            }
            Some(_) => return fail("control character in string", i),
            None => return fail("unterminated string", b.len()),
        }
        i = plain_run(b, i);
    }
}

/// From `i`, the index of the first byte that is not an ASCII digit. Eight bytes per step
/// (drone's numbers are mostly ten-digit timestamps): a byte is a digit when its high nibble
/// is 3 and its low nibble plus 6 does not carry into the high one.
#[inline(always)]
fn digits_end(b: &[u8], mut i: usize) -> usize {
    const HIGH_NIBBLES: u64 = 0xf0f0_f0f0_f0f0_f0f0;
    while let Some(w) = word_at(b, i) {
        let not_digit = ((w & HIGH_NIBBLES) ^ (ONES * 0x30))
            | (((w & !HIGH_NIBBLES).wrapping_add(ONES * 6)) & HIGH_NIBBLES);
        if not_digit != 0 {
            return i + (not_digit.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while let Some(&c) = b.get(i) {
        if c.wrapping_sub(b'0') >= 10 {
            break;
        }
        i += 1;
    }
    i
}

/// The number at `i`: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`; the index after it.
#[inline(always)]
fn number_end(b: &[u8], mut i: usize) -> Result<usize, JsonError> {
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    match b.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => i = digits_end(b, i + 1),
        _ => return fail("invalid number", i),
    }
    if matches!(b.get(i), Some(b'.' | b'e' | b'E')) {
        return fraction_end(b, i);
    }
    Ok(i)
}

/// The rest of a number from its `.`, `e` or `E` at `i`.
#[inline(never)]
fn fraction_end(b: &[u8], mut i: usize) -> Result<usize, JsonError> {
    if b.get(i) == Some(&b'.') {
        let end = digits_end(b, i + 1);
        if end == i + 1 {
            return fail("invalid number", end);
        }
        i = end;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let end = digits_end(b, i);
        if end == i {
            return fail("invalid number", end);
        }
        i = end;
    }
    Ok(i)
}

/// The number or literal at `i` (its one caller, [`skip_value`], takes strings itself): the
/// index after it.
#[inline(always)]
fn scalar_end(b: &[u8], i: usize) -> Result<usize, JsonError> {
    match b.get(i) {
        Some(b'-' | b'0'..=b'9') => number_end(b, i),
        Some(b't') => literal_end(b, i, b"true"),
        Some(b'f') => literal_end(b, i, b"false"),
        Some(b'n') => literal_end(b, i, b"null"),
        _ => fail("expected a value", i),
    }
}

#[inline(always)]
fn literal_end(b: &[u8], i: usize, word: &[u8]) -> Result<usize, JsonError> {
    if b.get(i..i + word.len()) == Some(word) {
        Ok(i + word.len())
    } else {
        fail("invalid literal", i)
    }
}

/// From `i`, the index after JSON whitespace (space, tab, CR, LF; nothing else).
#[inline(never)]
fn ws_end(b: &[u8], mut i: usize) -> usize {
    while matches!(b.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

/// Whether `c` is JSON whitespace.
#[inline(always)]
fn is_ws(c: Option<&u8>) -> bool {
    matches!(c, Some(b' ' | b'\t' | b'\n' | b'\r'))
}

/// The value starting at `i` (no whitespace before it), validated and skipped: the index
/// after it. `depth` as in [`Scanner::value`]. One tight loop over the bytes: the scanner's
/// hot path, as most of a webhook is values nobody decodes. Drone's bodies are compact, so
/// whitespace is looked for only where the expected byte is not found.
fn skip_value(b: &[u8], mut i: usize, depth: usize) -> Result<usize, JsonError> {
    // Bit i: the container at relative level i+1 is an object (else an array). Two words
    // rather than a u128, whose shifts are library calls in wasm.
    let mut objects = [0u64; 2];
    let mut level = 0usize;
    loop {
        // A value is expected at `i`.
        match b.get(i) {
            Some(b'"') => i = string_end(b, i + 1)?.0,
            Some(open @ (b'{' | b'[')) => {
                i += 1;
                level += 1;
                if depth + level > MAX_DEPTH {
                    return fail("nested too deeply", i);
                }
                let is_object = *open == b'{';
                set_bit(&mut objects, level - 1, is_object);
                if is_ws(b.get(i)) {
                    i = ws_end(b, i);
                }
                let close = if is_object { b'}' } else { b']' };
                if b.get(i) == Some(&close) {
                    i += 1;
                    level -= 1;
                } else {
                    if is_object {
                        i = member_key_end(b, i)?;
                    }
                    continue;
                }
            }
            Some(c) if is_ws(Some(c)) => {
                i = ws_end(b, i);
                continue;
            }
            _ => i = scalar_end(b, i)?,
        }
        // After a value: close containers or move to the next element.
        loop {
            if level == 0 {
                return Ok(i);
            }
            let in_object = bit(&objects, level - 1);
            match b.get(i) {
                Some(b',') => {
                    i += 1;
                    if in_object {
                        i = member_key_end(b, i)?;
                    }
                    break;
                }
                Some(b'}') if in_object => {
                    i += 1;
                    level -= 1;
                }
                Some(b']') if !in_object => {
                    i += 1;
                    level -= 1;
                }
                c if is_ws(c) => i = ws_end(b, i),
                _ => return fail("expected `,` or a closing bracket", i),
            }
        }
    }
}

/// A member's key at `i` (whitespace before it allowed) and its `:` (whitespace around it
/// allowed): the index after the `:`.
#[inline(always)]
fn member_key_end(b: &[u8], mut i: usize) -> Result<usize, JsonError> {
    if b.get(i) != Some(&b'"') {
        i = ws_end(b, i);
        if b.get(i) != Some(&b'"') {
            return fail("expected a string", i);
        }
    }
    i = string_end(b, i + 1)?.0;
    if b.get(i) != Some(&b':') {
        i = ws_end(b, i);
        if b.get(i) != Some(&b':') {
            return fail("expected `:`", i);
        }
    }
    Ok(i + 1)
}

/// Sets bit `i` of a 128-bit set to `on` (bits past 127 are ignored).
#[inline]
fn set_bit(set: &mut [u64; 2], i: usize, on: bool) {
    if let Some(word) = set.get_mut(i / 64) {
        let mask = 1u64 << (i % 64);
        if on {
            *word |= mask;
        } else {
            *word &= !mask;
        }
    }
}

/// Bit `i` of a 128-bit set (false past 127).
#[inline]
fn bit(set: &[u64; 2], i: usize) -> bool {
    set.get(i / 64).is_some_and(|w| w & (1u64 << (i % 64)) != 0)
}

/// The scanner: a position in `text`.
pub(crate) struct Scanner<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Scanner<'a> {
    pub(crate) fn new(text: &'a str) -> Self {
        Scanner { text, pos: 0 }
    }

    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    #[inline]
    fn peek(&self) -> Option<u8> {
        self.bytes().get(self.pos).copied()
    }

    fn err<T>(&self, what: &'static str) -> Result<T, JsonError> {
        Err(JsonError { what, at: self.pos })
    }

    /// Skips JSON whitespace (space, tab, CR, LF; nothing else). Drone's bodies are compact
    /// (`json.Marshal`), so the common case, no whitespace at all, is one inlined comparison.
    #[inline]
    pub(crate) fn ws(&mut self) {
        if matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.skip_ws();
        }
    }

    #[inline(never)]
    fn skip_ws(&mut self) {
        let rest = self.bytes().get(self.pos..).unwrap_or_default();
        self.pos += rest
            .iter()
            .position(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
            .unwrap_or(rest.len());
    }

    #[inline]
    fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    /// `text[start..self.pos]`.
    #[inline]
    fn since(&self, start: usize) -> &'a str {
        self.text.get(start..self.pos).unwrap_or_default()
    }

    /// Only whitespace may follow the value just scanned.
    pub(crate) fn end(&mut self) -> Result<(), JsonError> {
        self.ws();
        if self.pos == self.text.len() {
            Ok(())
        } else {
            self.err("trailing characters")
        }
    }

    /// [`Scanner::string`], also saying whether the literal has an escape.
    #[inline]
    fn string_escaped(&mut self) -> Result<(&'a str, bool), JsonError> {
        let start = self.pos;
        if !self.eat(b'"') {
            return self.err("expected a string");
        }
        let (end, escaped) = string_end(self.bytes(), self.pos).inspect_err(|e| self.pos = e.at)?;
        self.pos = end;
        Ok((self.since(start), escaped))
    }

    /// A member's key and the `:` after it (whitespace around both skipped).
    #[inline]
    fn key(&mut self) -> Result<KeyToken<'a>, JsonError> {
        self.ws();
        let (raw, escaped) = self.string_escaped()?;
        self.ws();
        if !self.eat(b':') {
            return self.err("expected `:`");
        }
        Ok(KeyToken { raw, escaped })
    }

    /// Skips one whole value (after whitespace) and returns its text. `depth` is the nesting
    /// of the container holding it (0 at the top): containers inside may reach
    /// [`MAX_DEPTH`]. Iterative, so hostile nesting costs neither stack nor recursion.
    pub(crate) fn value(&mut self, depth: usize) -> Result<&'a str, JsonError> {
        self.ws();
        let start = self.pos;
        let b = self.bytes();
        // Scalars, most members' values, without the containers' loop.
        let end = match b.get(start) {
            Some(b'"') => string_end(b, start + 1).map(|(end, _)| end),
            Some(b'0'..=b'9') => number_end(b, start),
            _ => skip_value(b, start, depth),
        };
        match end {
            Ok(end) => {
                self.pos = end;
                Ok(self.since(start))
            }
            Err(e) => {
                self.pos = e.at;
                Err(e)
            }
        }
    }

    /// Starts an object (after whitespace). Returns `false` if the next value is not one (the
    /// position is then unchanged, ready for [`Scanner::value`]).
    pub(crate) fn begin_object(&mut self) -> bool {
        self.ws();
        self.eat(b'{')
    }

    /// The next member's key of an object opened by [`Scanner::begin_object`] (after which
    /// the caller scans the value), or `None` at its closing brace. `first` is true for the
    /// first call on this object.
    pub(crate) fn next_key(&mut self, first: bool) -> Result<Option<KeyToken<'a>>, JsonError> {
        self.ws();
        if self.eat(b'}') {
            return Ok(None);
        }
        if !first && !self.eat(b',') {
            return self.err("expected `,` or `}`");
        }
        self.key().map(Some)
    }

    /// [`Scanner::next_key`], skipping the members not in `wanted`: a member whose key has no
    /// escape and is not in `wanted` has its value checked (at `depth`, the nesting of this
    /// object's members) and skipped, and `prev_end` set to where that value ended. Returns the
    /// next key that is in `wanted` or has an escape (for the caller to decode), or `None` at
    /// the closing brace. One loop over the bytes: most members of drone's objects are skipped.
    pub(crate) fn next_key_among(
        &mut self,
        mut first: bool,
        wanted: &[&str],
        depth: usize,
        prev_end: &mut usize,
    ) -> Result<Option<KeyToken<'a>>, JsonError> {
        let b = self.bytes();
        let mut i = self.pos;
        let found = loop {
            if is_ws(b.get(i)) {
                i = ws_end(b, i);
            }
            if b.get(i) == Some(&b'}') {
                i += 1;
                break None;
            }
            if !first {
                if b.get(i) != Some(&b',') {
                    break Some(fail("expected `,` or `}`", i));
                }
                i += 1;
            }
            first = false;
            if b.get(i) != Some(&b'"') {
                i = ws_end(b, i);
                if b.get(i) != Some(&b'"') {
                    break Some(fail("expected a string", i));
                }
            }
            let key_start = i;
            let (key_end, escaped) = match string_end(b, i + 1) {
                Ok(end) => end,
                Err(e) => break Some(Err(e)),
            };
            i = key_end;
            if b.get(i) != Some(&b':') {
                i = ws_end(b, i);
                if b.get(i) != Some(&b':') {
                    break Some(fail("expected `:`", i));
                }
            }
            i += 1;
            let inner = b.get(key_start + 1..key_end - 1).unwrap_or_default();
            if escaped || wanted.iter().any(|k| k.as_bytes() == inner) {
                let raw = self.text.get(key_start..key_end).unwrap_or_default();
                break Some(Ok(KeyToken { raw, escaped }));
            }
            if is_ws(b.get(i)) {
                i = ws_end(b, i);
            }
            let end = match b.get(i) {
                Some(b'"') => string_end(b, i + 1).map(|(end, _)| end),
                Some(b'0'..=b'9') => number_end(b, i),
                _ => skip_value(b, i, depth),
            };
            match end {
                Ok(end) => i = end,
                Err(e) => break Some(Err(e)),
            }
            *prev_end = i;
        };
        match found {
            None => {
                self.pos = i;
                Ok(None)
            }
            Some(Ok(key)) => {
                self.pos = i;
                Ok(Some(key))
            }
            Some(Err(e)) => {
                self.pos = e.at;
                Err(e)
            }
        }
    }

    /// The elements of `text`, which must be exactly one JSON array (whitespace around it
    /// allowed), each as its raw text.
    pub(crate) fn array_items(text: &'a str) -> Result<Vec<&'a str>, JsonError> {
        let mut s = Scanner::new(text);
        s.ws();
        if !s.eat(b'[') {
            return s.err("expected an array");
        }
        let mut items = Vec::new();
        s.ws();
        if !s.eat(b']') {
            loop {
                items.push(s.value(1)?);
                s.ws();
                if s.eat(b']') {
                    break;
                }
                if !s.eat(b',') {
                    return s.err("expected `,` or `]`");
                }
            }
        }
        s.end()?;
        Ok(items)
    }

    /// Moves past `copy` if the text at the position (after whitespace) is `copy` byte for
    /// byte; the value there then has the verdict `copy` had (when it was scanned at the same
    /// or a deeper nesting). Compares eight bytes per step.
    pub(crate) fn skip_copy(&mut self, copy: &str) -> bool {
        self.ws();
        let here = self
            .bytes()
            .get(self.pos..self.pos.saturating_add(copy.len()));
        let same = here.is_some_and(|here| {
            let (a, a_rest) = le_words(here);
            let (b, b_rest) = le_words(copy.as_bytes());
            a_rest == b_rest && a.zip(b).all(|(x, y)| x == y)
        });
        if same {
            self.pos += copy.len();
        }
        same
    }

    /// Byte offset of the current position.
    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    /// The text from byte `start` to the current position.
    pub(crate) fn text_since(&self, start: usize) -> &'a str {
        self.since(start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The scanner's verdict on a whole text must be serde_json's.
    fn agrees(text: &str) {
        let ours = {
            let mut s = Scanner::new(text);
            s.value(0).and_then(|v| s.end().map(|()| v.len()))
        };
        let theirs = serde_json::from_str::<&serde_json::value::RawValue>(text);
        let deep = crate::core::json::nesting_depth(text) > MAX_DEPTH;
        assert_eq!(
            ours.is_ok(),
            theirs.is_ok() && !deep,
            "{text:?}: ours {ours:?}, serde {theirs:?}"
        );
        if let (Ok(n), Ok(raw)) = (ours, theirs) {
            assert_eq!(n, raw.get().len(), "{text:?}");
        }
    }

    /// The error's text is what operators read in a log line's `why=` (through
    /// `ParseError::Json`): the problem and the byte it was found at.
    #[test]
    fn an_error_names_the_problem_and_its_byte() {
        let err = Scanner::new("[1,]").value(0).err();
        let text = err.as_ref().map(ToString::to_string);
        assert_eq!(
            text.as_deref(),
            Some("expected a value at byte 3"),
            "{err:?}"
        );
    }

    /// A bad escape is reported at the byte after its backslash (the `u` of a short or
    /// non-hex `\u`), the byte an operator reading `why=` looks at.
    #[test]
    fn an_escape_error_names_the_byte_after_its_backslash() {
        for (text, want) in [
            (r#""ab\x""#, "invalid escape at byte 4"),
            (r#""ab\u12g4""#, "invalid \\u escape at byte 4"),
            (r#""ab\u12""#, "invalid \\u escape at byte 4"),
        ] {
            let err = Scanner::new(text).value(0).err();
            assert_eq!(err.map(|e| e.to_string()).as_deref(), Some(want), "{text}");
        }
    }

    /// `skip_copy` moves past text equal to the copy byte for byte (after whitespace), in
    /// whole words and the bytes after the last, and nowhere else: a copy that differs in
    /// any byte, or runs past the end, leaves the value to be scanned.
    #[test]
    fn a_copy_is_skipped_only_when_every_byte_is_the_same() {
        let copy = r#"{"number":101,"status":"running"}"#; // 4 words and 1 byte
        let text = format!(" {copy},1");
        let mut s = Scanner::new(&text);
        assert!(s.skip_copy(copy));
        assert_eq!(s.pos(), 1 + copy.len());
        assert!(s.eat(b','));
        for at in [2, copy.len() - 1] {
            let mut other = copy.as_bytes().to_vec();
            other[at] ^= 1;
            let other = String::from_utf8(other).unwrap();
            let mut s = Scanner::new(&text);
            assert!(!s.skip_copy(&other), "byte {at}");
            assert_eq!(s.pos(), 1, "byte {at}");
        }
        let mut s = Scanner::new(&text[..copy.len()]);
        assert!(!s.skip_copy(copy));
        assert_eq!(s.pos(), 1);
    }

    /// A container is closed by its own bracket only, in the skipping loop as in serde:
    /// `]` does not close an object nor `}` an array, at any level.
    #[test]
    fn a_container_is_closed_by_its_own_bracket_only() {
        for text in ["[1}", r#"{"a":1]"#, r#"[{"a":1]]"#, r#"{"a":[1}}"#] {
            assert!(Scanner::new(text).value(0).is_err(), "{text}");
            assert!(serde_json::from_str::<serde_json::Value>(text).is_err());
        }
        for text in ["[1]", r#"{"a":1}"#, r#"[{"a":1}]"#, r#"{"a":[1]}"#] {
            assert_eq!(Scanner::new(text).value(0), Ok(text), "{text}");
        }
    }

    /// `next_key_among` hands back the wanted keys of an object, spaced in any way JSON
    /// allows, and checks and skips every other member itself; a member out of place is an
    /// error there as anywhere.
    #[test]
    fn next_key_among_hands_back_the_wanted_keys_however_the_object_is_spaced() {
        let members = |text: &'static str| -> Result<Vec<(String, &'static str)>, JsonError> {
            let mut s = Scanner::new(text);
            assert!(s.begin_object());
            let (mut first, mut prev_end, mut got) = (true, s.pos(), Vec::new());
            while let Some(k) = s.next_key_among(first, &["b", "d"], 1, &mut prev_end)? {
                first = false;
                let name = k.decode()?.into_owned();
                got.push((name, s.value(1)?));
                prev_end = s.pos();
            }
            s.end()?;
            Ok(got)
        };
        let want = vec![("b".to_string(), r#""x""#), ("d".to_string(), r#"{"e":3}"#)];
        for text in [
            r#"{"a":1,"b":"x","c":[2],"d":{"e":3}}"#,
            " { \"a\" : 1 ,\n\"b\"\t:\"x\" , \"c\" :[2] , \"d\": {\"e\":3} } ",
            "{\"a\":1 , \"b\" :\"x\",\"c\" : [2],\"d\" :{\"e\":3}}",
        ] {
            assert_eq!(members(text), Ok(want.clone()), "{text}");
        }
        for text in [r#"{"a" 1}"#, r#"{1:2}"#, r#"{"a":1 "b":2}"#, r#"{"b":1,}"#] {
            assert!(members(text).is_err(), "{text}");
        }
    }

    #[test]
    fn grammar_matches_serde() {
        let cases = [
            "0",
            "-0",
            "1",
            "-1",
            "01",
            "1.",
            "1.5",
            ".5",
            "1e5",
            "1E+5",
            "1e-5",
            "1e",
            "-",
            "--1",
            "1.5e",
            "123456789012345678901234567890",
            "true",
            "false",
            "null",
            "tru",
            "nul",
            "truex",
            "\"\"",
            "\"a\"",
            "\"\\\"\"",
            "\"\\u00e9\"",
            "\"\\u00g9\"",
            "\"\\x\"",
            "\"\\ud800\"",
            "\"a\tb\"",
            "\"a",
            "[]",
            "[1,2]",
            "[1,]",
            "[,1]",
            "[1 2]",
            "{}",
            "{\"a\":1}",
            "{\"a\":1,}",
            "{\"a\"1}",
            "{\"a\":}",
            "{1:1}",
            "{\"a\":[{\"b\":[]}]}",
            "[{]",
            "{]",
            "[}",
            " [ 1 , { \"a\" : null } ] ",
            "",
            "   ",
            "[1]]",
            "{}x",
            "\u{feff}{}",
            "[\"é\",\"日本\"]",
        ];
        for c in cases {
            agrees(c);
        }
        agrees(&format!("{}{}", "[".repeat(128), "]".repeat(128)));
        agrees(&format!("{}{}", "[".repeat(129), "]".repeat(129)));
        agrees(&format!("{}1{}", "{\"a\":".repeat(128), "}".repeat(128)));
        agrees(&format!("{}1{}", "{\"a\":".repeat(129), "}".repeat(129)));
        agrees(&"[".repeat(100_000));
    }

    #[test]
    fn mutations_of_a_drone_payload_match_serde() {
        let text =
            drone_model::fixtures::text(drone_model::fixtures::WEBHOOK_BUILD_UPDATED_SUCCESS)
                .to_string();
        agrees(&text);
        let mut rng = crate::core::backoff::Rng::new(7);
        let alphabet = b"{}[]\":,\\ 0123456789-+.eEtrufalsn\t\nx";
        for _ in 0..20_000 {
            let mut b = text.clone().into_bytes();
            crate::core::json::mutate(&mut rng, &mut b, alphabet);
            if let Ok(t) = String::from_utf8(b) {
                agrees(&t);
            }
        }
    }

    #[test]
    fn string_special_finds_the_first_stop_byte() {
        let naive = |b: &[u8]| b.iter().position(|&c| c == b'"' || c == b'\\' || c < 0x20);
        let mut rng = crate::core::backoff::Rng::new(3);
        let alphabet = [
            b'a', b'"', b'\\', 0x1f, 0x20, 0x00, 0x21, 0x7f, 0x80, 0xff, b'!', b']',
        ];
        for len in 0..40 {
            for _ in 0..2_000 {
                let b: Vec<u8> = (0..len)
                    .map(|_| {
                        if rng.next_u64() % 4 == 0 {
                            alphabet[(rng.next_u64() % alphabet.len() as u64) as usize]
                        } else {
                            (rng.next_u64() % 256) as u8
                        }
                    })
                    .collect();
                assert_eq!(string_special(&b), naive(&b), "{b:?}");
            }
        }
    }

    #[test]
    fn digits_end_finds_the_first_byte_that_is_not_a_digit() {
        let naive = |b: &[u8]| {
            b.iter()
                .position(|c| !c.is_ascii_digit())
                .unwrap_or(b.len())
        };
        let mut rng = crate::core::backoff::Rng::new(5);
        let alphabet = [
            b'0',
            b'9',
            b'5',
            b'/',
            b':',
            0x30 | 0x80,
            0x3a,
            0xff,
            0x00,
            b'e',
        ];
        for len in 0..40 {
            for _ in 0..2_000 {
                let b: Vec<u8> = (0..len)
                    .map(|_| {
                        if rng.next_u64() % 8 == 0 {
                            alphabet[(rng.next_u64() % alphabet.len() as u64) as usize]
                        } else if rng.next_u64() % 8 == 0 {
                            (rng.next_u64() % 256) as u8
                        } else {
                            b'0' + (rng.next_u64() % 10) as u8
                        }
                    })
                    .collect();
                assert_eq!(digits_end(&b, 0), naive(&b), "{b:?}");
            }
        }
    }

    #[test]
    fn members_and_arrays() {
        let text = r#" { "a" : 1 , "b\u0063" : [true] , "d": {"e":"f"} } "#;
        let mut s = Scanner::new(text);
        assert!(s.begin_object());
        let mut seen = Vec::new();
        let mut first = true;
        while let Some(k) = s.next_key(first).unwrap() {
            first = false;
            let v = s.value(1).unwrap();
            seen.push((k.decode().unwrap().into_owned(), v));
        }
        s.end().unwrap();
        assert_eq!(
            seen,
            vec![
                ("a".to_string(), "1"),
                ("bc".to_string(), "[true]"),
                ("d".to_string(), r#"{"e":"f"}"#)
            ]
        );
        assert_eq!(
            Scanner::array_items(r#" [1, "a" ,{"b":[]} ] "#).unwrap(),
            vec!["1", r#""a""#, r#"{"b":[]}"#]
        );
        assert_eq!(Scanner::array_items("[]").unwrap(), Vec::<&str>::new());
        for bad in ["[1,]", "[", "{}", "[1] x", "[,]", "[1 2]"] {
            assert!(Scanner::array_items(bad).is_err(), "{bad}");
        }
    }
}
