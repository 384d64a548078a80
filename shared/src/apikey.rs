//! API keys: generation (32 random bytes), the visible prefix, and the SHA-256 hash that is all
//! the database ever holds.
use rand::RngCore;
use sha2::{Digest, Sha256};

pub const KEY_PREFIX: &str = "slk_";
/// Characters of a key shown in listings (`slk_` plus eight).
pub const VISIBLE_PREFIX_LEN: usize = 12;

/// A freshly generated key: `key` is shown once and then forgotten.
pub struct NewKey {
    pub key: String,
    pub prefix: String,
    pub hash: String,
}

pub fn generate() -> NewKey {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let key = format!("{KEY_PREFIX}{}", hex::encode(bytes));
    NewKey {
        prefix: key[..VISIBLE_PREFIX_LEN].to_owned(),
        hash: hash(&key),
        key,
    }
}

/// Lower-case hex SHA-256 of the key as presented.
pub fn hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_carry_256_bits_and_a_recognisable_prefix() {
        let k = generate();
        assert!(k.key.starts_with(KEY_PREFIX));
        assert_eq!(k.key.len(), KEY_PREFIX.len() + 64);
        assert_eq!(k.prefix, &k.key[..12]);
        assert_ne!(generate().key, k.key);
    }

    #[test]
    fn hash_is_sha256_hex() {
        assert_eq!(
            hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let k = generate();
        assert_eq!(hash(&k.key), k.hash);
    }
}
