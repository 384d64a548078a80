//! Self-service accounts: the rules of an email and a password, registering, and checking a
//! login. Passwords are hashed with argon2id in a bounded number of slots, off the async runtime;
//! a login takes the same path and about the same time for an unknown email as for a wrong
//! password. The HTTP side is `routes::auth`.
use std::sync::OnceLock;

use argon2::password_hash::{PasswordHash, SaltString};
use argon2::Argon2;
use rand::RngCore;
use sluice_http::ApiError;
use sqlx::PgPool;
use uuid::Uuid;

use crate::limits::PasswordSlots;
use crate::store::{self, AccountRecord};

pub const MIN_PASSWORD_CHARS: usize = 12;
/// Hashing is deliberately slow; an unbounded password would make it a lever. Characters, as
/// JSON Schema's `maxLength` counts them (at most 4 KiB of UTF-8).
pub const MAX_PASSWORD_CHARS: usize = 1024;

/// A plausible email: one `@`, a non-empty local part, a dotted domain, no spaces, ≤ 254 bytes.
pub fn valid_email(email: &str) -> bool {
    let email = email.trim();
    if email.len() > 254 || email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return false;
    }
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && local.len() <= 64
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains("..")
}

pub fn check_password(password: &str) -> Result<(), ApiError> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(ApiError::invalid_request(
            "/password",
            format!("must be at least {MIN_PASSWORD_CHARS} characters"),
        ));
    }
    if password.chars().count() > MAX_PASSWORD_CHARS {
        return Err(ApiError::invalid_request(
            "/password",
            format!("must be at most {MAX_PASSWORD_CHARS} characters"),
        ));
    }
    Ok(())
}

/// Argon2 working memory (19 MiB per hash with the default parameters), kept for reuse: freed
/// after every hash, glibc's allocator does not return such blocks, and a login flood grew the
/// process by 19 MiB per concurrent hash without bound. Hashing runs in at most
/// `auth.max_concurrent_password_hashes` slots, so this holds at most that many buffers.
const MAX_POOLED_BUFFERS: usize = 8;

fn with_blocks<T>(count: usize, f: impl FnOnce(&mut [argon2::Block]) -> T) -> T {
    static POOL: std::sync::Mutex<Vec<Vec<argon2::Block>>> = std::sync::Mutex::new(Vec::new());
    let mut blocks = POOL
        .lock()
        .ok()
        .and_then(|mut pool| pool.pop())
        .filter(|b| b.len() == count)
        .unwrap_or_else(|| vec![argon2::Block::default(); count]);
    let out = f(&mut blocks);
    if let Ok(mut pool) = POOL.lock() {
        if pool.len() < MAX_POOLED_BUFFERS {
            pool.push(blocks);
        }
    }
    out
}

/// An argon2id PHC string of the password (the crate's default parameters), with a random salt.
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let params = argon2::Params::default();
    let argon = Argon2::new(
        argon2::Algorithm::Argon2id,
        argon2::Version::V0x13,
        params.clone(),
    );
    let mut out = [0u8; argon2::Params::DEFAULT_OUTPUT_LEN];
    with_blocks(params.block_count(), |blocks| {
        argon.hash_password_into_with_memory(password.as_bytes(), &salt, &mut out, blocks)
    })
    .map_err(|e| anyhow::anyhow!("hashing a password: {e}"))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| anyhow::anyhow!("salt: {e}"))?;
    let output =
        argon2::password_hash::Output::new(&out).map_err(|e| anyhow::anyhow!("hash: {e}"))?;
    Ok(format!(
        "$argon2id$v=19$m={},t={},p={}${}${}",
        params.m_cost(),
        params.t_cost(),
        params.p_cost(),
        salt.as_str(),
        output
    ))
}

/// Checks a password against a PHC string (any argon2 variant and parameters), comparing in
/// constant time.
fn verify_password(password: &str, hash: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    let (Some(expected), Some(salt)) = (parsed.hash, parsed.salt) else {
        return false;
    };
    let Ok(params) = argon2::Params::try_from(&parsed) else {
        return false;
    };
    let Ok(algorithm) = argon2::Algorithm::try_from(parsed.algorithm) else {
        return false;
    };
    let version = parsed
        .version
        .and_then(|v| argon2::Version::try_from(v).ok())
        .unwrap_or_default();
    let mut salt_bytes = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_bytes) else {
        return false;
    };
    let mut out = vec![0u8; expected.len()];
    let argon = Argon2::new(algorithm, version, params.clone());
    let hashed = with_blocks(params.block_count(), |blocks| {
        argon.hash_password_into_with_memory(password.as_bytes(), salt, &mut out, blocks)
    });
    hashed.is_ok() && argon2::password_hash::Output::new(&out).is_ok_and(|o| o == expected)
}

/// A hash to verify against when the email is unknown, so that answer costs the same time.
fn dummy_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| hash_password("not a real password, only for timing").unwrap_or_default())
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::Unexpected(anyhow::anyhow!("password hashing task: {e}")))
}

/// Registers an account under `email` (normalised) once its email and password pass their
/// rules; `EmailTaken` when one exists. Its id and the stored email.
pub async fn register(
    pool: &PgPool,
    slots: &PasswordSlots,
    email: &str,
    password: String,
) -> Result<(Uuid, String), ApiError> {
    if !valid_email(email) {
        return Err(ApiError::invalid_request(
            "/email",
            "not a valid email address",
        ));
    }
    check_password(&password)?;
    let slot = slots.acquire().await?;
    let hash = blocking(move || hash_password(&password)).await??;
    drop(slot);
    let email = store::normalise_email(email);
    let id = store::register_account(pool, &email, &hash)
        .await
        .map_err(ApiError::AccountsUnavailable)?
        .ok_or(ApiError::EmailTaken)?;
    tracing::info!(account_id = %id, "account registered");
    Ok((id, email))
}

/// The account `email` and `password` log in to; `Unauthorized` for an unknown email and a wrong
/// password alike, after the same work.
pub async fn log_in(
    pool: &PgPool,
    slots: &PasswordSlots,
    email: &str,
    password: String,
) -> Result<AccountRecord, ApiError> {
    if password.chars().count() > MAX_PASSWORD_CHARS {
        return Err(ApiError::Unauthorized);
    }
    let account = store::find_account(pool, email)
        .await
        .map_err(ApiError::AccountsUnavailable)?;
    let stored = account
        .as_ref()
        .and_then(|a| a.password_hash.clone())
        .unwrap_or_else(|| dummy_hash().to_owned());
    let slot = slots.acquire().await?;
    let ok = blocking(move || verify_password(&password, &stored)).await?;
    drop(slot);
    account
        .filter(|a| ok && a.password_hash.is_some())
        .ok_or(ApiError::Unauthorized)
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::password_hash::{PasswordHasher, PasswordVerifier};
    use proptest::prelude::*;

    #[test]
    fn emails() {
        for ok in ["a@b.co", "first.last+tag@mail.example.org", " A@B.CO "] {
            assert!(valid_email(ok), "{ok}");
        }
        for bad in [
            "", "a", "a@", "@b.co", "a@b", "a@@b.co", "a b@c.co", "a@.b.co", "a@b.co.", "a@b..co",
        ] {
            assert!(!valid_email(bad), "{bad}");
        }
    }

    #[test]
    fn passwords_are_hashed_with_argon2id_and_verify() {
        // A hash made by the crate's own hasher (accounts made before buffers were reused).
        let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
        let theirs = Argon2::default()
            .hash_password(b"correct horse battery", &salt)
            .unwrap()
            .to_string();
        assert!(verify_password("correct horse battery", &theirs));
        assert!(!verify_password("correct horse batterx", &theirs));
        let h = hash_password("correct horse battery").unwrap();
        assert!(PasswordHash::new(&h).is_ok(), "{h}");
        assert!(Argon2::default()
            .verify_password(b"correct horse battery", &PasswordHash::new(&h).unwrap())
            .is_ok());
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse battery", &h));
        assert!(!verify_password("correct horse batterx", &h));
        assert!(!verify_password("x", "not a hash"));
    }

    proptest! {
        #[test]
        fn short_passwords_are_refused_and_long_enough_ones_accepted(p in ".{0,40}") {
            let n = p.chars().count();
            prop_assert_eq!(check_password(&p).is_ok(), (MIN_PASSWORD_CHARS..=MAX_PASSWORD_CHARS).contains(&n));
        }

        #[test]
        fn email_validation_never_panics_and_needs_an_at(e in ".{0,300}") {
            if valid_email(&e) {
                prop_assert!(e.contains('@'));
                prop_assert!(e.trim().len() <= 254);
            }
        }

        #[test]
        fn well_formed_emails_are_accepted(local in "[a-z0-9._+-]{1,30}", domain in "[a-z0-9-]{1,20}", tld in "[a-z]{2,6}") {
            let email = format!("{}@{}.{}", local, domain, tld);
            prop_assert!(valid_email(&email));
        }
    }
}
