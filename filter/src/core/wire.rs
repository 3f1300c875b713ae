//! A tiny binary encoding for what the filter stores in shared data and sends through the
//! shared queue: little-endian integers and length-prefixed strings. Reading is defensive
//! (every input is fuzzed): short or trailing bytes are errors, never panics.

pub fn put_u8(out: &mut Vec<u8>, v: u8) {
    out.push(v);
}

pub fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

pub fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// A string with a u16 length (truncated to 65535 bytes at a char boundary).
pub fn put_str16(out: &mut Vec<u8>, s: &str) {
    let mut len = s.len().min(u16::MAX as usize);
    while !s.is_char_boundary(len) {
        len -= 1;
    }
    out.extend_from_slice(&(len as u16).to_le_bytes());
    out.extend_from_slice(s.as_bytes().get(..len).unwrap_or_default());
}

/// A string with a u32 length.
pub fn put_str32(out: &mut Vec<u8>, s: &str) {
    let len = u32::try_from(s.len()).unwrap_or(u32::MAX);
    put_u32(out, len);
    out.extend_from_slice(s.as_bytes().get(..len as usize).unwrap_or_default());
}

pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    #[inline(never)] // one copy in the module, not one per call site (BENCHMARKS.md, 7)
    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.buf.len() < n {
            return None;
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Some(head)
    }

    #[inline(never)] // one copy in the module, not one per call site (BENCHMARKS.md, 7)
    pub fn u8(&mut self) -> Option<u8> {
        self.take(1)?.first().copied()
    }

    pub fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.take(2)?.try_into().ok()?))
    }

    pub fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    #[inline(never)] // one copy in the module, not one per call site (BENCHMARKS.md, 7)
    pub fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    pub fn str16(&mut self) -> Option<String> {
        let n = self.u16()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }

    pub fn str32(&mut self) -> Option<String> {
        let n = self.u32()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }

    /// Reads a value's magic: `Some(true)` for the current layout, `Some(false)` for the
    /// previous one (still read), `None` for anything else.
    pub fn magic(&mut self, magic: &Magic) -> Option<bool> {
        match self.take(4)? {
            m if m == magic.current => Some(true),
            m if m == magic.previous => Some(false),
            _ => None,
        }
    }

    /// Reads a u32 count, then that many items with `item`. A count the rest of the buffer
    /// cannot hold (each item takes at least `min_bytes`) is refused before allocating.
    /// Inlined: the module has a size budget, and each caller's copy is smaller than a call.
    #[inline(always)]
    pub fn list<T>(
        &mut self,
        min_bytes: usize,
        mut item: impl FnMut(&mut Self) -> Option<T>,
    ) -> Option<Vec<T>> {
        let count = self.u32()? as usize;
        if count > self.remaining() / min_bytes.max(1) {
            return None;
        }
        let mut out = Vec::with_capacity(count);
        for _ in 0..count {
            out.push(item(self)?);
        }
        Some(out)
    }
}

/// The 4-byte magics of a versioned value: the layout written, and the one before it, which
/// readers still accept during a rolling upgrade.
pub struct Magic {
    pub current: [u8; 4],
    pub previous: [u8; 4],
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_short_input() {
        let mut out = Vec::new();
        put_u8(&mut out, 7);
        put_u32(&mut out, 70_000);
        put_u64(&mut out, u64::MAX);
        put_str16(&mut out, "héllo");
        put_str32(&mut out, "");
        let mut r = Reader::new(&out);
        assert_eq!(r.u8(), Some(7));
        assert_eq!(r.u32(), Some(70_000));
        assert_eq!(r.u64(), Some(u64::MAX));
        assert_eq!(r.str16().as_deref(), Some("héllo"));
        assert_eq!(r.str32().as_deref(), Some(""));
        assert!(r.is_empty());
        for cut in 0..out.len() {
            let mut r = Reader::new(&out[..cut]);
            let ok = r.u8().is_some()
                && r.u32().is_some()
                && r.u64().is_some()
                && r.str16().is_some()
                && r.str32().is_some();
            assert!(!ok, "cut {cut}");
        }
    }

    #[test]
    fn magics_and_lists() {
        let magic = Magic {
            current: *b"TST2",
            previous: *b"TST1",
        };
        for (bytes, want) in [
            (&b"TST2"[..], Some(true)),
            (b"TST1", Some(false)),
            (b"TST3", None),
            (b"TST", None),
        ] {
            assert_eq!(Reader::new(bytes).magic(&magic), want);
        }
        let mut out = Vec::new();
        put_u32(&mut out, 3);
        for v in [7u64, 8, 9] {
            put_u64(&mut out, v);
        }
        assert_eq!(Reader::new(&out).list(8, Reader::u64), Some(vec![7, 8, 9]));
        // One item short, and a count the buffer cannot hold at 9 bytes an item.
        assert_eq!(
            Reader::new(&out[..out.len() - 1]).list(8, Reader::u64),
            None
        );
        assert_eq!(Reader::new(&out).list(9, Reader::u64), None);
        let mut huge = Vec::new();
        put_u32(&mut huge, u32::MAX);
        assert_eq!(Reader::new(&huge).list(0, Reader::u8), None);
    }

    #[test]
    fn long_strings_truncate_at_char_boundaries() {
        let s = "é".repeat(40_000);
        let mut out = Vec::new();
        put_str16(&mut out, &s);
        let mut r = Reader::new(&out);
        let back = r.str16().unwrap();
        // The longest prefix of whole characters within 65535 bytes, and nothing after it.
        assert_eq!(back.len(), 65_534);
        assert!(s.starts_with(&back));
        assert!(r.is_empty());
    }
}
