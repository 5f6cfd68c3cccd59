//! Where randomness comes from. Tokens need the OS CSPRNG; tests need repeatable bytes.

use std::sync::Mutex;

/// A source of random bytes.
pub trait Entropy: Send + Sync + 'static {
    fn fill(&self, buf: &mut [u8]) -> Result<(), EntropyError>;
}

/// The random source could not deliver: no key can be issued safely.
#[derive(Debug, thiserror::Error)]
#[error("the random number generator failed: {0}")]
pub struct EntropyError(pub String);

/// The operating system's CSPRNG. The only source a deployment should use.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsEntropy;

impl Entropy for OsEntropy {
    fn fill(&self, buf: &mut [u8]) -> Result<(), EntropyError> {
        getrandom::fill(buf).map_err(|e| EntropyError(e.to_string()))
    }
}

/// Repeatable bytes from a seed (splitmix64). For tests and benchmarks only: not secret.
#[derive(Debug)]
pub struct SeededEntropy(Mutex<u64>);

impl SeededEntropy {
    pub fn new(seed: u64) -> Self {
        Self(Mutex::new(seed))
    }
}

impl Entropy for SeededEntropy {
    fn fill(&self, buf: &mut [u8]) -> Result<(), EntropyError> {
        let mut state = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for chunk in buf.chunks_mut(8) {
            *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = *state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
        }
        Ok(())
    }
}

/// Replays fixed bytes, then falls back to a seeded stream: for tests that pin a token.
#[derive(Debug)]
pub struct ScriptedEntropy {
    script: Mutex<std::collections::VecDeque<Vec<u8>>>,
    rest: SeededEntropy,
}

impl ScriptedEntropy {
    pub fn new(script: impl IntoIterator<Item = Vec<u8>>) -> Self {
        Self {
            script: Mutex::new(script.into_iter().collect()),
            rest: SeededEntropy::new(1),
        }
    }
}

impl Entropy for ScriptedEntropy {
    fn fill(&self, buf: &mut [u8]) -> Result<(), EntropyError> {
        let next = {
            let mut s = self.script.lock().unwrap_or_else(|p| p.into_inner());
            match s.front() {
                Some(b) if b.len() == buf.len() => s.pop_front(),
                _ => None,
            }
        };
        match next {
            Some(bytes) => {
                buf.copy_from_slice(&bytes);
                Ok(())
            }
            None => self.rest.fill(buf),
        }
    }
}
