//! FNV-1a (64-bit): a small, stable, dependency-free hash for recording which weights and inputs
//! a result was computed from. Not cryptographic; it guards against mix-ups, not attackers.

pub struct Fnv64(u64);

impl Default for Fnv64 {
    fn default() -> Self {
        Self::new()
    }
}

impl Fnv64 {
    pub fn new() -> Self {
        Fnv64(0xcbf2_9ce4_8422_2325)
    }

    pub fn bytes(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= b as u64;
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    pub fn f32s(&mut self, values: &[f32]) {
        for v in values {
            self.bytes(&v.to_le_bytes());
        }
    }

    pub fn finish(&self) -> u64 {
        self.0
    }
}

/// Hex FNV-1a of f32 values (inputs, states) in little-endian byte order.
pub fn of_f32(values: &[f32]) -> String {
    let mut h = Fnv64::new();
    h.f32s(values);
    format!("{:016x}", h.finish())
}

#[cfg(test)]
mod tests {
    #[test]
    fn matches_the_published_fnv1a_vectors() {
        let hash = |s: &str| {
            let mut h = super::Fnv64::new();
            h.bytes(s.as_bytes());
            h.finish()
        };
        assert_eq!(hash(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(hash("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(hash("foobar"), 0x8594_4171_f739_67e8);
    }
}
