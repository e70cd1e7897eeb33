//! Test support for the decoders: deterministic pseudo-random inputs and mutations of valid ones,
//! for checks that no input makes a decoder panic.

/// A xorshift generator: deterministic, so a failure reproduces.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Bytes that stress a JSON decoder: random bytes, JSON punctuation, and `valid` inputs with
/// bytes flipped, inserted, deleted or cut off.
pub(crate) fn inputs(seed: u64, count: usize, valid: &[&[u8]]) -> Vec<Vec<u8>> {
    const ALPHABET: &[u8] = b"{}[]\":,.-+eE0123456789 \n\r\t\\u\0nulltruefalse\xc3\xa9\xff%^~/";
    let mut rng = Rng::new(seed);
    (0..count)
        .map(|_| {
            let mut bytes = match valid.len() {
                0 => Vec::new(),
                n if rng.below(4) > 0 => valid[rng.below(n)].to_vec(),
                _ => Vec::new(),
            };
            for _ in 0..1 + rng.below(8) {
                let at = rng.below(bytes.len() + 1);
                let byte = ALPHABET[rng.below(ALPHABET.len())];
                match rng.below(4) {
                    0 => bytes.insert(at, byte),
                    1 if at < bytes.len() => bytes[at] = byte,
                    2 if at < bytes.len() => {
                        bytes.remove(at);
                    }
                    _ => bytes.truncate(at),
                }
            }
            bytes
        })
        .collect()
}
