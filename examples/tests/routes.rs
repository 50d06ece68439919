//! Every route of the example server driven in process (`oneshot`): status codes, bodies, JSON key
//! order, validation, the order of the checks, and the token rules.

mod common;

use axum::http::{Method, StatusCode};
use common::{first_item_keys, keys, new_user, InProcess};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

fn token(secret: &str, algorithm: Algorithm, claims: serde_json::Value) -> String {
    jsonwebtoken::encode(
        &Header::new(algorithm),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

#[tokio::test]
async fn create_answers_201_with_name_id_email_and_rejects_a_duplicate() {
    let app = InProcess::new().await;
    let answer = app
        .post_user(new_user("alice", "alice@Example.COM", "secret1"))
        .await;
    assert_eq!(answer.status, StatusCode::CREATED);
    assert_eq!(keys(&answer.text), ["name", "id", "email"]);
    assert_eq!(
        answer.body,
        json!({"name": "alice", "id": 1, "email": "alice@example.com"})
    );

    let again = app
        .post_user(new_user("alice2", "alice@example.com", "secret1"))
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert_eq!(again.body, json!({"detail": "User already exists"}));
}

#[tokio::test]
async fn create_validates_every_field() {
    let app = InProcess::new().await;
    let valid = new_user("bobby", "bob@example.com", "secret1");
    let with = |field: &str, value: serde_json::Value| {
        let mut body = valid.clone();
        body[field] = value;
        body
    };
    let mut without_avatar = valid.clone();
    without_avatar.as_object_mut().unwrap().remove("avatar");
    let cases = [
        with("name", json!("ab")),
        with("name", json!("a".repeat(31))),
        with("name", json!(null)),
        with("password", json!("12345")),
        without_avatar,
        with("avatar", json!("ab")),
        with("avatar", json!("a".repeat(101))),
        with("age", json!(0)),
        with("age", json!(100)),
        with("age", json!("twenty")),
        with("email", json!("not-an-email")),
        with("email", json!(format!("{}@example.com", "a".repeat(50)))),
        with("birthday", json!("2000-02-30")),
        with("birthday", json!("31/01/2000")),
    ];
    for body in cases {
        let answer = app.post_user(body.clone()).await;
        assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert!(answer.body["detail"].is_string());
    }
    let not_json = app
        .send(
            Method::POST,
            "/api/users",
            None,
            Some(("application/json", "{".into())),
        )
        .await;
    assert_eq!(not_json.status, StatusCode::UNPROCESSABLE_ENTITY);

    // A numeric string for the age, an avatar, and unknown fields are fine.
    let mut body = with("age", json!("20"));
    body["avatar"] = json!("https://example.com/b.png");
    body["unknown"] = json!(true);
    let answer = app.post_user(body).await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text);
}

#[tokio::test]
async fn get_user_answers_the_profile_in_order_or_404() {
    let app = InProcess::new().await;
    let id = app.create("carol", "carol@example.com", "secret1").await;
    let answer = app.get(&format!("/api/users/{id}"), None).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        keys(&answer.text),
        ["name", "id", "birthday", "age", "avatar"]
    );
    assert_eq!(
        answer.body,
        json!({"name": "carol", "id": id, "birthday": "1990-05-17", "age": 30, "avatar": null})
    );

    let missing = app.get("/api/users/999", None).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.body, json!({"detail": "User not found"}));
    assert_eq!(
        app.get("/api/users/abc", None).await.status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
}

#[tokio::test]
async fn the_list_is_ordered_by_id_paged_and_searchable() {
    let app = InProcess::new().await;
    for name in ["dave", "erin", "frank", "grace"] {
        app.create(name, &format!("{name}@example.com"), "secret1")
            .await;
    }
    let all = app.get("/api/users", None).await;
    assert_eq!(all.status, StatusCode::OK);
    assert_eq!(
        first_item_keys(&all.text),
        ["name", "id", "email", "avatar"]
    );
    let ids: Vec<i64> = all
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|user| user["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [1, 2, 3, 4]);

    let page = app.get("/api/users?last=1&limit=2", None).await;
    let names: Vec<&str> = page
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|user| user["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["erin", "frank"], "limit rows, after the offset");

    let found = app.get("/api/users?keyword=ra", None).await;
    let names: Vec<&str> = found
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|user| user["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["frank", "grace"]);
    assert_eq!(
        app.get("/api/users?keyword=%25", None).await.body,
        json!([]),
        "% is literal"
    );

    for bad in ["limit=0", "limit=1001", "last=-1", "limit=x"] {
        assert_eq!(
            app.get(&format!("/api/users?{bad}"), None).await.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{bad}"
        );
    }
}

#[tokio::test]
async fn login_takes_a_form_and_answers_a_token_pair_with_the_original_claims() {
    let app = InProcess::new().await;
    let id = app.create("heidi", "heidi@example.com", "secret1").await;
    let answer = app.login("heidi@example.com", "secret1").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        keys(&answer.text),
        ["access_token", "refresh_token", "token_type"]
    );
    assert_eq!(answer.body["token_type"], "bearer");
    let token = answer.body["access_token"].as_str().unwrap();
    let payload = token.split('.').nth(1).unwrap();
    let claims: serde_json::Value = serde_json::from_slice(&base64_url(payload)).unwrap();
    assert_eq!(keys(&claims.to_string()).len(), 3);
    assert_eq!(claims["username"], "heidi");
    assert_eq!(claims["id"], id);
    assert!(claims["exp"].as_i64().unwrap() > now());

    for (email, password) in [
        ("heidi@example.com", "wrong12"),
        ("nobody@example.com", "secret1"),
    ] {
        let refused = app.login(email, password).await;
        assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            refused.body,
            json!({"detail": "Incorrect username or password"})
        );
        assert_eq!(refused.headers["www-authenticate"], "Bearer");
    }
    let form = |body: &str| {
        app.send(
            Method::POST,
            "/api/auth/login",
            None,
            Some(("application/x-www-form-urlencoded", body.into())),
        )
    };
    assert_eq!(
        form("username=heidi%40example.com").await.status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(
        form("username=heidi%40example.com&password=secret1&grant_type=client")
            .await
            .status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(
        form(
            "username=heidi%40example.com&password=secret1&grant_type=password&scope=&client_id=x"
        )
        .await
        .status,
        StatusCode::OK
    );
    // The tutorial's own clients send the optional OAuth2 fields empty: absent, as FastAPI
    // reads them; an empty required field is still missing.
    assert_eq!(
        form("grant_type=&username=heidi%40example.com&password=secret1&scope=&client_id=&client_secret=")
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        form("grant_type=&username=heidi%40example.com&password=&scope=")
            .await
            .status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
}

fn base64_url(text: &str) -> Vec<u8> {
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bits = 0u32;
    let mut count = 0;
    let mut out = Vec::new();
    for byte in text.bytes() {
        let value = alphabet.iter().position(|&c| c == byte).unwrap() as u32;
        bits = (bits << 6) | value;
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
        }
    }
    out
}

#[tokio::test]
async fn refresh_answers_a_new_pair_and_the_token_kinds_are_not_interchangeable() {
    let app = InProcess::new().await;
    app.create("ivan", "ivan@example.com", "secret1").await;
    let pair = app.login("ivan@example.com", "secret1").await.body;
    let refresh = |token: &str| {
        app.json(
            Method::POST,
            "/api/auth/refresh",
            None,
            json!({"refresh_token": token}),
        )
    };
    let renewed = refresh(pair["refresh_token"].as_str().unwrap()).await;
    assert_eq!(renewed.status, StatusCode::OK);
    assert_eq!(
        keys(&renewed.text),
        ["access_token", "refresh_token", "token_type"]
    );

    let access_as_refresh = refresh(pair["access_token"].as_str().unwrap()).await;
    assert_eq!(
        (
            access_as_refresh.status,
            access_as_refresh.body["detail"].as_str()
        ),
        (StatusCode::UNAUTHORIZED, Some("Invalid token"))
    );
    let refresh_as_access = app.get("/api/me", pair["refresh_token"].as_str()).await;
    assert_eq!(
        (
            refresh_as_access.status,
            refresh_as_access.body["detail"].as_str()
        ),
        (StatusCode::UNAUTHORIZED, Some("Invalid token"))
    );

    let expired = token(
        "test-refresh",
        Algorithm::HS256,
        json!({"username": "ivan", "id": 1, "exp": now() - 10}),
    );
    assert_eq!(
        refresh(&expired).await.body,
        json!({"detail": "Token expired"})
    );
    assert_eq!(
        app.json(Method::POST, "/api/auth/refresh", None, json!({}))
            .await
            .status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
}

#[tokio::test]
async fn bearer_failures_are_401_with_the_documented_messages() {
    let app = InProcess::new().await;
    let id = app.create("judy", "judy@example.com", "secret1").await;
    let valid = app.access_token("judy@example.com", "secret1").await;
    let claims = json!({"username": "judy", "id": id, "exp": now() + 600});
    let cases = [
        (None, "Not authenticated"),
        (Some("not-a-jwt".to_owned()), "Invalid token"),
        (
            Some(token("wrong-secret", Algorithm::HS256, claims.clone())),
            "Invalid token",
        ),
        (
            Some(token("test-access", Algorithm::HS512, claims.clone())),
            "Invalid token",
        ),
        (
            Some(token(
                "test-access",
                Algorithm::HS256,
                json!({"username": "judy", "id": id, "exp": now() - 10}),
            )),
            "Token expired",
        ),
        (
            Some(token(
                "test-access",
                Algorithm::HS256,
                json!({"username": "x", "id": 999, "exp": now() + 600}),
            )),
            "Invalid token",
        ),
    ];
    for (token, detail) in cases {
        let answer = app.get("/api/me", token.as_deref()).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{token:?}");
        assert_eq!(answer.body, json!({"detail": detail}), "{token:?}");
        assert_eq!(answer.headers["www-authenticate"], "Bearer");
    }
    assert_eq!(
        app.get("/api/me", Some(&valid)).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn per_id_writes_check_existence_then_token_then_body_then_permission() {
    let app = InProcess::new().await;
    let mine = app.create("kate", "kate@example.com", "secret1").await;
    let other = app.create("leo", "leo@example.com", "secret1").await;
    let token = app.access_token("kate@example.com", "secret1").await;
    let profile = json!({"name": "kate2", "age": 31, "birthday": "1990-05-18"});
    let bad = json!({"name": "kate2", "age": 0, "birthday": "1990-05-18"});
    let put = |id: i64, token: Option<&str>, body: serde_json::Value| {
        let uri = format!("/api/users/{id}");
        let token = token.map(str::to_owned);
        let app = &app;
        async move {
            app.json(Method::PUT, &uri, token.as_deref(), body)
                .await
                .status
        }
    };
    assert_eq!(
        put(999, None, bad.clone()).await,
        StatusCode::NOT_FOUND,
        "existence first"
    );
    assert_eq!(
        put(other, None, bad.clone()).await,
        StatusCode::UNAUTHORIZED,
        "then the token"
    );
    assert_eq!(
        put(other, Some(&token), bad.clone()).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "then the body"
    );
    assert_eq!(
        put(other, Some(&token), profile.clone()).await,
        StatusCode::FORBIDDEN,
        "then the permission"
    );
    let forbidden = app
        .json(
            Method::PUT,
            &format!("/api/users/{other}"),
            Some(&token),
            profile.clone(),
        )
        .await;
    assert_eq!(forbidden.body, json!({"detail": "Permission denied"}));

    let answer = app
        .json(
            Method::PUT,
            &format!("/api/users/{mine}"),
            Some(&token),
            profile,
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(keys(&answer.text), ["name", "avatar", "age", "birthday"]);
    assert_eq!(
        answer.body,
        json!({"name": "kate2", "avatar": null, "age": 31, "birthday": "1990-05-18"})
    );

    let null_name = app
        .json(
            Method::PUT,
            &format!("/api/users/{mine}"),
            Some(&token),
            json!({"name": null, "age": 31, "birthday": "1990-05-18"}),
        )
        .await;
    assert_eq!(
        null_name.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "a null name is a 422, not a 500"
    );
    let missing_age = app
        .json(
            Method::PUT,
            &format!("/api/users/{mine}"),
            Some(&token),
            json!({"name": "kate3", "birthday": "1990-05-18"}),
        )
        .await;
    assert_eq!(missing_age.status, StatusCode::UNPROCESSABLE_ENTITY);

    let delete = app
        .send(
            Method::DELETE,
            &format!("/api/users/{other}"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(delete.status, StatusCode::FORBIDDEN);
    let password = app
        .json(
            Method::PUT,
            &format!("/api/users/{mine}/password"),
            Some(&token),
            json!({"password": "123"}),
        )
        .await;
    assert_eq!(password.status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn password_change_and_delete_answer_204_and_take_effect() {
    let app = InProcess::new().await;
    let id = app.create("mike", "mike@example.com", "secret1").await;
    let token = app.access_token("mike@example.com", "secret1").await;
    let changed = app
        .json(
            Method::PUT,
            &format!("/api/users/{id}/password"),
            Some(&token),
            json!({"password": "secret2"}),
        )
        .await;
    assert_eq!(changed.status, StatusCode::NO_CONTENT);
    assert_eq!(changed.text, "");
    assert_eq!(
        app.login("mike@example.com", "secret1").await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.login("mike@example.com", "secret2").await.status,
        StatusCode::OK
    );

    let deleted = app
        .send(
            Method::DELETE,
            &format!("/api/users/{id}"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let after = app.get("/api/me", Some(&token)).await;
    assert_eq!(
        (after.status, after.body["detail"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("Invalid token"))
    );
    assert_eq!(
        app.get(&format!("/api/users/{id}"), None).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn the_me_routes_act_on_the_token_user() {
    let app = InProcess::new().await;
    let id = app.create("nina", "nina@example.com", "secret1").await;
    let token = app.access_token("nina@example.com", "secret1").await;
    let me = app.get("/api/me", Some(&token)).await;
    assert_eq!(me.body["id"], id);
    assert_eq!(keys(&me.text), ["name", "id", "birthday", "age", "avatar"]);
    let updated = app
        .json(
            Method::PUT,
            "/api/me",
            Some(&token),
            json!({"name": "nina2", "avatar": "abc", "age": "40", "birthday": "1985-01-01"}),
        )
        .await;
    assert_eq!(
        updated.body,
        json!({"name": "nina2", "avatar": "abc", "age": 40, "birthday": "1985-01-01"})
    );
    assert_eq!(app.get("/api/me", Some(&token)).await.body["name"], "nina2");
    let password = app
        .json(
            Method::PUT,
            "/api/me/password",
            Some(&token),
            json!({"password": "secret9"}),
        )
        .await;
    assert_eq!(password.status, StatusCode::NO_CONTENT);
    assert_eq!(
        app.send(Method::DELETE, "/api/me", Some(&token), None)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.get("/api/me", Some(&token)).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.send(Method::PUT, "/api/me", None, None).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn metrics_are_scraped_in_prometheus_text_format() {
    let app = InProcess::new().await;
    let id = app.create("petra", "petra@example.com", "secret1").await;
    for _ in 0..3 {
        assert_eq!(
            app.get(&format!("/api/users/{id}"), None).await.status,
            StatusCode::OK
        );
    }
    app.get("/api/users?page=1", None).await;
    let scraped = app.get("/metrics", None).await;
    assert_eq!(scraped.status, StatusCode::OK);
    let value = |series: &str| -> f64 {
        scraped
            .text
            .lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no `{series}` in:\n{}", scraped.text))
    };
    // The first read missed and filled (its response, and the user entry behind it), the
    // next two were answered from the response cache; the page missed.
    assert!(value("cache_hits_total{prefix=\"resp_user\"}") >= 2.0);
    assert!(value("cache_misses_total{prefix=\"resp_user\"}") >= 1.0);
    assert!(value("cache_misses_total{prefix=\"user\"}") >= 1.0);
    assert!(value("cache_fills_total{prefix=\"user\"}") >= 1.0);
    assert!(value("cache_misses_total{prefix=\"users\"}") >= 1.0);
    // Creating the user invalidated the list.
    assert!(value("cache_invalidations_total{prefix=\"user\"}") >= 1.0);
    assert!(
        scraped
            .text
            .contains("# TYPE cache_get_duration_seconds summary"),
        "{}",
        scraped.text
    );
    assert!(value("cache_get_duration_seconds_count{prefix=\"resp_user\",result=\"hit\"}") >= 2.0);
}

#[tokio::test]
async fn cache_stats_and_unknown_routes() {
    let app = InProcess::new().await;
    let id = app.create("oscar", "oscar@example.com", "secret1").await;
    app.get(&format!("/api/users/{id}"), None).await;
    app.get(&format!("/api/users/{id}"), None).await;
    let stats = app.get("/cache/stats", None).await;
    assert_eq!(stats.status, StatusCode::OK);
    assert!(stats.body["hits"].as_u64().unwrap() >= 1, "{}", stats.text);
    let missing = app.get("/nope", None).await;
    assert_eq!(
        (missing.status, missing.body.clone()),
        (StatusCode::NOT_FOUND, json!({"detail": "Not Found"}))
    );
}
