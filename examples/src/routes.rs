//! The HTTP routes of the ported users API (README, "The example server"). Handlers stay thin: parse, check in the documented order,
//! call the repository.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use crate::auth::{TokenKind, TokenPair};
use crate::error::AppError;
use crate::repo::{CurrentUser, NewUser, Page, ProfileUpdate, UserInfo, UserListItem};
use crate::{validate, AppState};

type Answer<T> = Result<T, AppError>;

/// `POST /api/auth/login`, an OAuth2 password form: `username` is the email.
pub async fn login(State(state): State<AppState>, body: Bytes) -> Answer<Json<TokenPair>> {
    let mut form: HashMap<String, String> = serde_urlencoded::from_bytes(&body)
        .map_err(|error| AppError::invalid(format!("form: {error}")))?;
    // As FastAPI reads a form: an empty field is an absent one. OAuth2 clients send the
    // optional fields empty (`grant_type=&scope=&client_id=&client_secret=`).
    form.retain(|_, value| !value.is_empty());
    let field = |name: &str| {
        form.get(name)
            .ok_or_else(|| AppError::invalid(format!("{name}: field required")))
    };
    let (username, password) = (field("username")?, field("password")?);
    if form
        .get("grant_type")
        .is_some_and(|grant| grant != "password")
    {
        return Err(AppError::invalid("grant_type: must be \"password\""));
    }
    let incorrect = || AppError::unauthorized("Incorrect username or password");
    let email = validate::email(username).map_err(|_| incorrect())?;
    let user = state.repo.user_in_db(&email).await?.ok_or_else(incorrect)?;
    if !state
        .auth
        .password_matches(password.clone(), user.password)
        .await?
    {
        return Err(incorrect());
    }
    Ok(Json(state.auth.token_pair(user.id, &user.name)?))
}

/// `POST /api/auth/refresh`.
pub async fn refresh(State(state): State<AppState>, body: Bytes) -> Answer<Json<TokenPair>> {
    let token = validate::refresh_token(&body)?;
    let claims = state.auth.verify(TokenKind::Refresh, &token)?;
    let user = state
        .repo
        .current_user(claims.id)
        .await?
        .ok_or_else(|| AppError::unauthorized("Invalid token"))?;
    Ok(Json(state.auth.token_pair(user.id, &user.name)?))
}

/// `GET /api/users?keyword&last=0&limit=50`, ordered by id.
pub async fn list_users(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Answer<Json<Vec<UserListItem>>> {
    let number = |name: &str, default: i64| -> Answer<i64> {
        query.get(name).map_or(Ok(default), |text| {
            text.parse()
                .map_err(|_| AppError::invalid(format!("{name}: expected a whole number")))
        })
    };
    let page = Page {
        last: number("last", 0)?,
        limit: number("limit", 50)?,
    };
    if page.last < 0 {
        return Err(AppError::invalid("last: must be at least 0"));
    }
    if !(1..=1000).contains(&page.limit) {
        return Err(AppError::invalid("limit: must be between 1 and 1000"));
    }
    match query.get("keyword").filter(|keyword| !keyword.is_empty()) {
        Some(keyword) => Ok(Json(state.repo.search(keyword, page).await?)),
        None => Ok(Json(state.repo.list(page).await?)),
    }
}

fn user_id(raw: &str) -> Answer<i64> {
    raw.parse()
        .map_err(|_| AppError::invalid("user_id: expected a whole number"))
}

/// `GET /api/users/{user_id}`.
pub async fn get_user(
    State(state): State<AppState>,
    Path(raw_id): Path<String>,
) -> Answer<Json<UserInfo>> {
    let id = user_id(&raw_id)?;
    state
        .repo
        .user_info(id)
        .await?
        .map(Json)
        .ok_or_else(AppError::user_not_found)
}

/// `{"name", "id", "email"}`.
#[derive(Debug, Serialize)]
pub struct Created {
    name: String,
    id: i64,
    email: String,
}

/// `POST /api/users`.
pub async fn create_user(
    State(state): State<AppState>,
    body: Bytes,
) -> Answer<(StatusCode, Json<Created>)> {
    let input = validate::user_create(&body)?;
    let taken = || AppError::new(StatusCode::CONFLICT, "User already exists");
    if state.repo.user_id_by_email(&input.email).await?.is_some() {
        return Err(taken());
    }
    let password_hash = state.auth.hash_password(input.password).await?;
    let user = NewUser {
        name: input.name.clone(),
        password_hash,
        avatar: input.avatar,
        age: input.age,
        email: input.email.clone(),
        birthday: input.birthday,
    };
    let id = state
        .repo
        .create(&input.email, user)
        .await?
        .ok_or_else(taken)?;
    Ok((
        StatusCode::CREATED,
        Json(Created {
            name: input.name,
            id,
            email: input.email,
        }),
    ))
}

/// The user of the request's access token; 401 when the token is bad or the user is gone.
async fn authenticated(state: &AppState, headers: &HeaderMap) -> Answer<CurrentUser> {
    let claims = state.auth.bearer(headers)?;
    state
        .repo
        .current_user(claims.id)
        .await?
        .ok_or_else(|| AppError::unauthorized("Invalid token"))
}

/// The checks of the per-id write routes, in the documented order: the user exists (404),
/// the token (401), the body (422), the token's user is the path's (403).
async fn owner_of<T>(
    state: &AppState,
    raw_id: &str,
    headers: &HeaderMap,
    body: impl FnOnce() -> Answer<T>,
) -> Answer<(i64, T)> {
    let id = user_id(raw_id)?;
    if !state.repo.exists(id).await? {
        return Err(AppError::user_not_found());
    }
    let current = authenticated(state, headers).await?;
    let body = body()?;
    if current.id != id {
        return Err(AppError::new(StatusCode::FORBIDDEN, "Permission denied"));
    }
    Ok((id, body))
}

async fn apply_profile(
    state: &AppState,
    id: i64,
    profile: ProfileUpdate,
) -> Answer<Json<ProfileUpdate>> {
    state.repo.update_profile(id, &profile).await?;
    Ok(Json(profile))
}

async fn apply_password(state: &AppState, id: i64, password: String) -> Answer<StatusCode> {
    let hash = state.auth.hash_password(password).await?;
    state.repo.update_password(id, &hash).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn apply_delete(state: &AppState, id: i64) -> Answer<StatusCode> {
    state.repo.delete(id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `PUT /api/users/{user_id}`.
pub async fn update_user(
    State(state): State<AppState>,
    Path(raw_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer<Json<ProfileUpdate>> {
    let (id, profile) = owner_of(&state, &raw_id, &headers, || {
        validate::profile_update(&body)
    })
    .await?;
    apply_profile(&state, id, profile).await
}

/// `PUT /api/users/{user_id}/password`.
pub async fn update_password(
    State(state): State<AppState>,
    Path(raw_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer<StatusCode> {
    let (id, password) = owner_of(&state, &raw_id, &headers, || validate::password(&body)).await?;
    apply_password(&state, id, password).await
}

/// `DELETE /api/users/{user_id}`.
pub async fn delete_user(
    State(state): State<AppState>,
    Path(raw_id): Path<String>,
    headers: HeaderMap,
) -> Answer<StatusCode> {
    let (id, ()) = owner_of(&state, &raw_id, &headers, || Ok(())).await?;
    apply_delete(&state, id).await
}

/// `GET /api/me`.
pub async fn get_me(State(state): State<AppState>, headers: HeaderMap) -> Answer<Json<UserInfo>> {
    let current = authenticated(&state, &headers).await?;
    state
        .repo
        .user_info(current.id)
        .await?
        .map(Json)
        .ok_or_else(|| AppError::unauthorized("Invalid token"))
}

/// `PUT /api/me`.
pub async fn update_me(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer<Json<ProfileUpdate>> {
    let current = authenticated(&state, &headers).await?;
    let profile = validate::profile_update(&body)?;
    apply_profile(&state, current.id, profile).await
}

/// `PUT /api/me/password`.
pub async fn update_my_password(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer<StatusCode> {
    let current = authenticated(&state, &headers).await?;
    let password = validate::password(&body)?;
    apply_password(&state, current.id, password).await
}

/// `DELETE /api/me`.
pub async fn delete_me(State(state): State<AppState>, headers: HeaderMap) -> Answer<StatusCode> {
    let current = authenticated(&state, &headers).await?;
    apply_delete(&state, current.id).await
}

/// `GET /cache/stats`: the library's counters.
pub async fn cache_stats(State(state): State<AppState>) -> Json<cache_core::Stats> {
    Json(state.repo.cache().stats())
}

/// `GET /metrics`: the cache's metrics in Prometheus' text format.
pub async fn metrics() -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::prometheus().render(),
    )
        .into_response()
}

/// Any other route.
pub async fn not_found() -> Response {
    AppError::new(StatusCode::NOT_FOUND, "Not Found").into_response()
}
