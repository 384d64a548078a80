//! Account tokens as every service checks them: any string in `Authorization: Bearer` goes
//! through `Jwt::verify`. Property: no panic, and only a token signed with the secret passes.
#![no_main]
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use secrecy::SecretString;
use sluice_shared::jwt::Jwt;

/// The secret the seed corpus's valid tokens are signed with (fuzz/corpus/jwt_verify).
const SECRET: &str = "fuzz-secret-fuzz-secret-fuzz-secret-0123";

fn jwt() -> &'static Jwt {
    static JWT: OnceLock<Jwt> = OnceLock::new();
    JWT.get_or_init(|| Jwt::new(&SecretString::from(SECRET), 3600))
}

fuzz_target!(|data: &[u8]| {
    if let Ok(token) = std::str::from_utf8(data) {
        let _ = jwt().verify(token);
    }
});
