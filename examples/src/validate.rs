//! Request bodies, checked as the original's pydantic schemas check them. Bodies are parsed
//! by hand (not by an extractor) because the per-id routes must check the user and the token
//! before the body. Unknown fields are ignored; every failure is a 422.

use serde_json::{Map, Value};

use crate::error::AppError;

type Object = Map<String, Value>;

fn object(body: &[u8]) -> Result<Object, AppError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err(AppError::invalid("body: expected a JSON object")),
        Err(error) => Err(AppError::invalid(format!("body: invalid JSON: {error}"))),
    }
}

fn required<'a>(object: &'a Object, field: &str) -> Result<&'a Value, AppError> {
    object
        .get(field)
        .ok_or_else(|| AppError::invalid(format!("{field}: field required")))
}

fn string(value: &Value, field: &str, min: usize, max: usize) -> Result<String, AppError> {
    let text = value
        .as_str()
        .ok_or_else(|| AppError::invalid(format!("{field}: expected a string")))?;
    let length = text.chars().count();
    if length < min || length > max {
        let bounds = if max == usize::MAX {
            format!("at least {min} characters")
        } else {
            format!("{min} to {max} characters")
        };
        return Err(AppError::invalid(format!("{field}: must be {bounds}")));
    }
    Ok(text.to_owned())
}

fn optional_string(
    value: Option<&Value>,
    field: &str,
    min: usize,
    max: usize,
) -> Result<Option<String>, AppError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(value) => string(value, field, min, max).map(Some),
    }
}

/// Whole numbers, and strings of them (`"20"`), as pydantic accepts.
fn age(value: &Value) -> Result<i64, AppError> {
    let age = match value {
        Value::Number(number) => number.as_i64(),
        Value::String(text) => text.trim().parse().ok(),
        _ => None,
    }
    .ok_or_else(|| AppError::invalid("age: expected a whole number"))?;
    if !(1..=99).contains(&age) {
        return Err(AppError::invalid("age: must be between 1 and 99"));
    }
    Ok(age)
}

fn birthday(value: &Value) -> Result<String, AppError> {
    let text = value.as_str().unwrap_or_default();
    chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .filter(|_| text.len() == 10)
        .map(|date| date.format("%Y-%m-%d").to_string())
        .ok_or_else(|| AppError::invalid("birthday: expected a date YYYY-MM-DD"))
}

/// A valid address of at most 60 characters, with its domain lower-cased.
pub fn email(text: &str) -> Result<String, AppError> {
    let invalid = || AppError::invalid("email: not a valid email address");
    if text.chars().count() > 60 || text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid());
    }
    let (local, domain) = text.rsplit_once('@').ok_or_else(invalid)?;
    let labels_ok = domain.split('.').all(|label| {
        !label.is_empty()
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().all(|c| c.is_alphanumeric() || c == '-')
    });
    if local.is_empty() || local.contains('@') || !domain.contains('.') || !labels_ok {
        return Err(invalid());
    }
    Ok(format!("{local}@{}", domain.to_lowercase()))
}

/// `POST /api/users`.
#[derive(Debug)]
pub struct UserCreate {
    pub name: String,
    pub password: String,
    pub avatar: Option<String>,
    pub age: i64,
    pub email: String,
    pub birthday: String,
}

/// Checks `POST /api/users`: `avatar` must be present, string or null.
pub fn user_create(body: &[u8]) -> Result<UserCreate, AppError> {
    let object = object(body)?;
    let avatar = required(&object, "avatar")?;
    Ok(UserCreate {
        name: string(required(&object, "name")?, "name", 3, 30)?,
        password: string(required(&object, "password")?, "password", 6, usize::MAX)?,
        avatar: optional_string(Some(avatar), "avatar", 3, 100)?,
        age: age(required(&object, "age")?)?,
        email: email(&string(
            required(&object, "email")?,
            "email",
            1,
            usize::MAX,
        )?)?,
        birthday: birthday(required(&object, "birthday")?)?,
    })
}

/// Checks `PUT /api/users/{id}`: `name` and `avatar` may be omitted (null), but `name` is
/// NOT NULL in the table, so null is a 422 rather than a database error.
pub fn profile_update(body: &[u8]) -> Result<crate::repo::ProfileUpdate, AppError> {
    let object = object(body)?;
    let name = optional_string(object.get("name"), "name", 3, 30)?
        .ok_or_else(|| AppError::invalid("name: must not be null"))?;
    Ok(crate::repo::ProfileUpdate {
        name,
        avatar: optional_string(object.get("avatar"), "avatar", 3, 100)?,
        age: age(required(&object, "age")?)?,
        birthday: birthday(required(&object, "birthday")?)?,
    })
}

/// Checks `{"password"}`.
pub fn password(body: &[u8]) -> Result<String, AppError> {
    let object = object(body)?;
    string(required(&object, "password")?, "password", 6, usize::MAX)
}

/// Checks `{"refresh_token"}`.
pub fn refresh_token(body: &[u8]) -> Result<String, AppError> {
    let object = object(body)?;
    string(
        required(&object, "refresh_token")?,
        "refresh_token",
        0,
        usize::MAX,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_checked_and_their_domain_lower_cased() {
        assert_eq!(email("Alice@Example.COM").unwrap(), "Alice@example.com");
        for bad in [
            "",
            "a",
            "a@b",
            "@b.c",
            "a@b..c",
            "a b@c.d",
            "a@-b.c",
            &format!("{}@b.cd", "a".repeat(60)),
        ] {
            assert!(email(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ages_accept_numeric_strings_within_bounds() {
        assert_eq!(age(&serde_json::json!(20)).unwrap(), 20);
        assert_eq!(age(&serde_json::json!("20")).unwrap(), 20);
        for bad in [
            serde_json::json!(0),
            serde_json::json!(100),
            serde_json::json!("x"),
            serde_json::json!(null),
        ] {
            assert!(age(&bad).is_err());
        }
    }

    #[test]
    fn birthdays_must_be_real_dates() {
        assert_eq!(
            birthday(&serde_json::json!("2000-01-31")).unwrap(),
            "2000-01-31"
        );
        for bad in ["2000-02-30", "2000-1-31", "31/01/2000", ""] {
            assert!(birthday(&serde_json::json!(bad)).is_err(), "{bad}");
        }
    }
}
