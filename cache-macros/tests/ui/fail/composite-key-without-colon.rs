use cache_core::{cached_delete, cached_get};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Member {
    name: String,
}

// `("a-b", "c")` and `("a", "b-c")` would make one key.
#[cached_get(prefix = "member", key = "{org}-{name}", schema = Member)]
async fn get_member(org: String, name: String) -> Option<Member> {
    Some(Member { name: org + &name })
}

#[cached_delete(prefix = "member", key = "org:{org}{name}")]
async fn delete_member(org: String, name: String) -> bool {
    org != name
}

fn main() {}
