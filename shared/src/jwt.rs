//! Account tokens: HS256 JWTs the api signs at login and every service checks. Only HS256 is
//! accepted: `alg: none`, any other algorithm, a bad signature or a past `exp` fail.
use chrono::{DateTime, Utc};
use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Claims {
    /// The account id.
    pub sub: String,
    pub email: String,
    pub iat: i64,
    pub exp: i64,
}

#[derive(Clone)]
pub struct Jwt {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl: chrono::Duration,
}

impl Jwt {
    pub fn new(secret: &SecretString, ttl_secs: u64) -> Self {
        let bytes = secret.expose_secret().as_bytes();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Self {
            encoding: EncodingKey::from_secret(bytes),
            decoding: DecodingKey::from_secret(bytes),
            validation,
            ttl: chrono::Duration::seconds(ttl_secs as i64),
        }
    }

    /// A token for the account, and when it expires.
    pub fn issue(
        &self,
        account_id: &str,
        email: &str,
        now: DateTime<Utc>,
    ) -> anyhow::Result<(String, DateTime<Utc>)> {
        let exp = now + self.ttl;
        let claims = Claims {
            sub: account_id.to_owned(),
            email: email.to_owned(),
            iat: now.timestamp(),
            exp: exp.timestamp(),
        };
        Ok((
            encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)?,
            exp,
        ))
    }

    /// The claims of a valid token; `None` for anything else.
    pub fn verify(&self, token: &str) -> Option<Claims> {
        decode::<Claims>(token, &self.decoding, &self.validation)
            .ok()
            .map(|d| d.claims)
    }
}

/// The account id of a request's `Authorization: Bearer <jwt>`, if the token is valid.
pub fn bearer_account(req: &actix_web::HttpRequest, jwt: &Jwt) -> Option<uuid::Uuid> {
    let token = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")?
        .trim();
    jwt.verify(token)?.sub.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt() -> Jwt {
        Jwt::new(&SecretString::from("k".repeat(32)), 3600)
    }

    fn b64(s: &str) -> String {
        use std::fmt::Write;
        // base64url without padding, enough for the tests' JSON.
        const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let b = s.as_bytes();
        let mut out = String::new();
        for chunk in b.chunks(3) {
            let n =
                chunk.iter().fold(0u32, |acc, x| (acc << 8) | *x as u32) << (8 * (3 - chunk.len()));
            for i in 0..=chunk.len() {
                let _ = out.write_char(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    }

    #[test]
    fn a_token_round_trips() {
        let (t, exp) = jwt().issue("acc", "a@b.c", Utc::now()).unwrap();
        let c = jwt().verify(&t).unwrap();
        assert_eq!(c.sub, "acc");
        assert_eq!(c.exp, exp.timestamp());
    }

    #[test]
    fn expired_tampered_foreign_and_unsigned_tokens_fail() {
        let (old, _) = jwt()
            .issue("acc", "a@b.c", Utc::now() - chrono::Duration::hours(2))
            .unwrap();
        assert!(jwt().verify(&old).is_none());

        let (t, _) = jwt().issue("acc", "a@b.c", Utc::now()).unwrap();
        let other = Jwt::new(&SecretString::from("z".repeat(32)), 3600);
        assert!(other.verify(&t).is_none());

        let parts: Vec<&str> = t.split('.').collect();
        let exp = Utc::now().timestamp() + 3600;
        let forged = b64(&format!(
            r#"{{"sub":"victim","email":"x","iat":0,"exp":{exp}}}"#
        ));
        assert!(jwt()
            .verify(&format!("{}.{}.{}", parts[0], forged, parts[2]))
            .is_none());

        let none = format!("{}.{}.", b64(r#"{"alg":"none","typ":"JWT"}"#), forged);
        assert!(jwt().verify(&none).is_none());

        let hs512 = encode(
            &Header::new(Algorithm::HS512),
            &Claims {
                sub: "acc".into(),
                email: "x".into(),
                iat: 0,
                exp,
            },
            &EncodingKey::from_secret("k".repeat(32).as_bytes()),
        )
        .unwrap();
        assert!(jwt().verify(&hs512).is_none());
        assert!(jwt().verify("garbage").is_none());
    }
}
