//! Passwords (bcrypt, `$2b$`) and tokens (JWT HS256 with the claims `username`, `id`, `exp`).

use axum::http::header::AUTHORIZATION;
use axum::http::HeaderMap;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::error::AppError;

/// The claims of both token kinds, exactly as the original server writes them.
#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub username: String,
    pub id: i64,
    pub exp: i64,
}

/// The two token kinds: signed with different secrets, so one is never accepted as the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    Access,
    Refresh,
}

/// Token and password settings.
#[derive(Clone)]
pub struct Auth {
    access_secret: String,
    refresh_secret: String,
    access_minutes: i64,
    refresh_minutes: i64,
    bcrypt_cost: u32,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("bcrypt_cost", &self.bcrypt_cost)
            .finish_non_exhaustive()
    }
}

/// `{"access_token", "refresh_token", "token_type": "bearer"}`.
#[derive(Debug, Serialize)]
pub struct TokenPair {
    pub access_token: String,
    pub refresh_token: String,
    pub token_type: &'static str,
}

impl Auth {
    /// Settings from the configuration.
    pub fn new(config: &crate::config::Config) -> Auth {
        Auth {
            access_secret: config.access_secret.clone(),
            refresh_secret: config.refresh_secret.clone(),
            access_minutes: config.access_minutes,
            refresh_minutes: config.refresh_minutes,
            bcrypt_cost: config.bcrypt_cost,
        }
    }

    fn secret(&self, kind: TokenKind) -> &[u8] {
        match kind {
            TokenKind::Access => self.access_secret.as_bytes(),
            TokenKind::Refresh => self.refresh_secret.as_bytes(),
        }
    }

    /// A new access and refresh token for a user.
    ///
    /// # Errors
    ///
    /// 500 if signing fails (it does not with HS256 and a secret).
    pub fn token_pair(&self, id: i64, username: &str) -> Result<TokenPair, AppError> {
        Ok(TokenPair {
            access_token: self.token(TokenKind::Access, id, username, self.access_minutes)?,
            refresh_token: self.token(TokenKind::Refresh, id, username, self.refresh_minutes)?,
            token_type: "bearer",
        })
    }

    fn token(
        &self,
        kind: TokenKind,
        id: i64,
        username: &str,
        minutes: i64,
    ) -> Result<String, AppError> {
        let exp = chrono::Utc::now().timestamp() + minutes * 60;
        let claims = Claims {
            username: username.to_owned(),
            id,
            exp,
        };
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(self.secret(kind)),
        )
        .map_err(|error| {
            tracing::error!(%error, "cannot sign a token");
            AppError::new(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "Internal Server Error",
            )
        })
    }

    /// Checks a token: HS256 only, signed with this kind's secret, not expired.
    ///
    /// # Errors
    ///
    /// 401 "Token expired" or "Invalid token".
    pub fn verify(&self, kind: TokenKind, token: &str) -> Result<Claims, AppError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp"]);
        jsonwebtoken::decode::<Claims>(
            token,
            &DecodingKey::from_secret(self.secret(kind)),
            &validation,
        )
        .map(|data| data.claims)
        .map_err(|error| match error.kind() {
            ErrorKind::ExpiredSignature => AppError::unauthorized("Token expired"),
            _ => AppError::unauthorized("Invalid token"),
        })
    }

    /// The access token's claims from `Authorization: Bearer …`.
    ///
    /// # Errors
    ///
    /// 401 "Not authenticated" without a bearer token, else as [`verify`](Self::verify).
    pub fn bearer(&self, headers: &HeaderMap) -> Result<Claims, AppError> {
        let token = headers
            .get(AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| {
                let (scheme, token) = value.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .filter(|token| !token.is_empty())
            .ok_or_else(|| AppError::unauthorized("Not authenticated"))?;
        self.verify(TokenKind::Access, token)
    }

    /// Hashes a password with bcrypt (`$2b$`), off the async threads.
    ///
    /// # Errors
    ///
    /// 500 if hashing fails.
    pub async fn hash_password(&self, password: String) -> Result<String, AppError> {
        let cost = self.bcrypt_cost;
        tokio::task::spawn_blocking(move || bcrypt::hash(password, cost))
            .await?
            .map_err(|error| {
                tracing::error!(%error, "bcrypt failed");
                AppError::new(
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                    "Internal Server Error",
                )
            })
    }

    /// Checks a password against a bcrypt hash, off the async threads. A malformed hash is a
    /// mismatch.
    ///
    /// # Errors
    ///
    /// 500 if the blocking task fails.
    pub async fn password_matches(&self, password: String, hash: String) -> Result<bool, AppError> {
        Ok(
            tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash).unwrap_or(false))
                .await?,
        )
    }
}
