//! Crockford's base32 for linking codes: digits and upper-case letters without `I L O U`, so
//! a code read aloud or typed from a screen survives. Decoding ignores case, spaces and
//! dashes, and reads `I`/`L` as `1` and `O` as `0`. No padding; the unused low bits of the
//! last character must be zero, so every byte string has exactly one encoding.

const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// Encodes `bytes`, five bits per character, most significant first.
pub fn encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let mut buffer: u16 = 0;
    let mut bits = 0;
    for &byte in bytes {
        buffer = (buffer << 8) | u16::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[usize::from((buffer >> bits) & 31)]));
        }
        buffer &= (1 << bits) - 1;
    }
    if bits > 0 {
        out.push(char::from(
            ALPHABET[usize::from((buffer << (5 - bits)) & 31)],
        ));
    }
    out
}

fn value(c: char) -> Option<u16> {
    let c = match c.to_ascii_uppercase() {
        'I' | 'L' => '1',
        'O' => '0',
        c => c,
    };
    ALPHABET
        .iter()
        .position(|&a| char::from(a) == c)
        .and_then(|v| u16::try_from(v).ok())
}

/// Decodes text made by [`encode`] (leniently, see the module documentation); `None` for a
/// character outside the alphabet, an impossible length or non-zero padding bits.
pub fn decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 5 / 8);
    let mut buffer: u16 = 0;
    let mut bits = 0;
    for c in text.chars().filter(|c| *c != '-' && !c.is_whitespace()) {
        buffer = (buffer << 5) | value(c)?;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from((buffer >> bits) & 0xff).ok()?);
        }
        buffer &= (1 << bits) - 1;
    }
    // A whole character of padding, or padding bits set: not something `encode` makes.
    (bits < 5 && buffer == 0).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_length() {
        let data: Vec<u8> = (0u8..=255).collect();
        for len in 0..=64 {
            let text = encode(&data[..len]);
            assert_eq!(decode(&text).as_deref(), Some(&data[..len]), "length {len}");
        }
    }

    #[test]
    fn known_values() {
        assert_eq!(encode(b""), "");
        assert_eq!(encode(&[0xff]), "ZW");
        assert_eq!(encode(b"parley"), "E1GQ4V35F4");
        assert_eq!(decode("e1gq4v35f4").as_deref(), Some(&b"parley"[..]));
        assert_eq!(decode("OI").as_deref(), decode("01").as_deref());
    }

    #[test]
    fn refuses_what_encode_never_makes() {
        assert_eq!(decode("U"), None);
        assert_eq!(decode("ZZ"), None, "padding bits set");
        assert_eq!(decode("Z"), None, "five bits make no byte");
        assert_eq!(decode("ZW0"), None, "a whole padding character");
    }
}
