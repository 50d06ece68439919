//! One error type for every handler: a status and the `{"detail": …}` the client sees.
//! Internal failures are logged with their cause and answered with a clean 500.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

/// An error answer.
#[derive(Debug)]
pub struct AppError {
    status: StatusCode,
    detail: String,
}

impl AppError {
    /// An answer with this status and message.
    pub fn new(status: StatusCode, detail: impl Into<String>) -> AppError {
        AppError {
            status,
            detail: detail.into(),
        }
    }

    /// 401 with `WWW-Authenticate: Bearer`.
    pub fn unauthorized(detail: &str) -> AppError {
        AppError::new(StatusCode::UNAUTHORIZED, detail)
    }

    /// 422: the request body or parameters do not validate.
    pub fn invalid(detail: impl Into<String>) -> AppError {
        AppError::new(StatusCode::UNPROCESSABLE_ENTITY, detail)
    }

    /// 404 "User not found".
    pub fn user_not_found() -> AppError {
        AppError::new(StatusCode::NOT_FOUND, "User not found")
    }

    /// The status answered.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl From<sqlx::Error> for AppError {
    fn from(error: sqlx::Error) -> AppError {
        tracing::error!(%error, "database error");
        AppError::new(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error")
    }
}

impl From<tokio::task::JoinError> for AppError {
    fn from(error: tokio::task::JoinError) -> AppError {
        tracing::error!(%error, "blocking task failed");
        AppError::new(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error")
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(serde_json::json!({ "detail": self.detail })),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
