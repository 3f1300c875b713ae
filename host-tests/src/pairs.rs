//! proxy-wasm header-map serialization (spec "Serialization", cpp-host `pairs_util.cc`):
//! `u32 N`, N × (`u32 key_len`, `u32 val_len`), then per pair `key 0x00 value 0x00`.

/// Envoy drops plugin-sent maps above these limits to an *empty* map
/// (cpp-host `include/proxy-wasm/limits.h`).
pub(crate) const MAX_PAIRS: usize = 1024;
pub(crate) const MAX_PAIRS_BYTES: usize = 1024 * 1024;

pub(crate) fn serialize(pairs: &[(String, String)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        4 + pairs
            .iter()
            .map(|(k, v)| k.len() + v.len() + 10)
            .sum::<usize>(),
    );
    out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (k, v) in pairs {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k.as_bytes());
        out.push(0);
        out.extend_from_slice(v.as_bytes());
        out.push(0);
    }
    out
}

/// Parses a plugin-sent map. Malformed or over-limit input gives an empty map, like Envoy's
/// `toPairs`. Bytes are decoded as (lossy) UTF-8.
pub(crate) fn deserialize(bytes: &[u8]) -> Vec<(String, String)> {
    parse(bytes).unwrap_or_default()
}

fn parse(bytes: &[u8]) -> Option<Vec<(String, String)>> {
    if bytes.len() < 4 || bytes.len() > MAX_PAIRS_BYTES {
        return None;
    }
    let u32_at = |at: usize| -> Option<usize> {
        let b = bytes.get(at..at + 4)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let n = u32_at(0)?;
    if n > MAX_PAIRS {
        return None;
    }
    let mut data = 4 + n * 8;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let klen = u32_at(4 + i * 8)?;
        let vlen = u32_at(8 + i * 8)?;
        let key = bytes.get(data..data + klen)?;
        data += klen + 1;
        let val = bytes.get(data..data + vlen)?;
        data += vlen + 1;
        out.push((
            String::from_utf8_lossy(key).into_owned(),
            String::from_utf8_lossy(val).into_owned(),
        ));
    }
    (data <= bytes.len()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_example() {
        let m = vec![
            ("a".to_string(), "1".to_string()),
            ("b".into(), "22".into()),
        ];
        let bytes = serialize(&m);
        let expected: Vec<u8> = vec![
            2, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, b'a', 0, b'1', 0, b'b', 0,
            b'2', b'2', 0,
        ];
        assert_eq!(bytes, expected);
        assert_eq!(deserialize(&bytes), m);
        assert!(deserialize(&[]).is_empty());
        assert!(deserialize(&[0]).is_empty());
        assert!(deserialize(&bytes[..bytes.len() - 2]).is_empty());
    }
}
