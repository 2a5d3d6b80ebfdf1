//! The one error type of the server: every failure becomes a protobuf `Error` with a status.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cachenet_core::proto;
use prost::Message;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    BadRequest(String),
    NotFound(String),
    PayloadTooLarge(String),
    /// The request (its body) did not arrive in time.
    Timeout(String),
    Unauthorized(String),
    Overloaded(String),
    NotReady(String),
    Internal(String),
    /// The inference server that runs the full model answered something unusable.
    Upstream(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Overloaded(_) | ApiError::NotReady(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Upstream(_) => StatusCode::BAD_GATEWAY,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::NotFound(_) => "not_found",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::Timeout(_) => "timeout",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Overloaded(_) => "overloaded",
            ApiError::NotReady(_) => "not_ready",
            ApiError::Internal(_) => "internal",
            ApiError::Upstream(_) => "upstream",
        }
    }

    pub fn message(&self) -> &str {
        match self {
            ApiError::BadRequest(m)
            | ApiError::NotFound(m)
            | ApiError::PayloadTooLarge(m)
            | ApiError::Timeout(m)
            | ApiError::Unauthorized(m)
            | ApiError::Overloaded(m)
            | ApiError::NotReady(m)
            | ApiError::Internal(m)
            | ApiError::Upstream(m) => m,
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code(), self.message())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = proto::Error {
            code: self.code().to_string(),
            message: self.message().to_string(),
        }
        .encode_to_vec();
        let mut resp = (self.status(), body).into_response();
        let headers = resp.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(proto::CONTENT_TYPE),
        );
        if matches!(self, ApiError::Unauthorized(_)) {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if matches!(self, ApiError::Overloaded(_)) {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}
