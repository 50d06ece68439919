use cache_core::{cached_delete, cached_get};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Product {
    id: i64,
}

enum Kind {
    Book,
}

#[cached_get(prefix = "product", key = "id", schema = Product, tags = ["kind:{kind}"])]
async fn product(id: i64, kind: Kind) -> Option<Product> {
    let Kind::Book = kind;
    Some(Product { id })
}

// `{id}` is the value's field, `{kind}` a parameter rendered before the call.
#[cached_get(prefix = "product", key = "key", schema = Product, tags = ["kind:{kind}:{id}"])]
async fn product_tagged_by_value(key: i64, kind: Kind) -> Option<Product> {
    let Kind::Book = kind;
    Some(Product { id: key })
}

#[cached_delete(prefix = "product", key = "id", tags = ["kind:{kind}"])]
async fn delete(id: i64, kind: Kind) {
    let _ = (id, kind);
}

fn main() {}
