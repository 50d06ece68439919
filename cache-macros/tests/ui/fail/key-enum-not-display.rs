use cache_core::cached_get;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Product {
    id: i64,
}

enum ProductKind {
    Book,
    Game,
}

#[cached_get(prefix = "product", key = "kind", schema = Product)]
async fn first_of_kind(kind: ProductKind) -> Option<Product> {
    match kind {
        ProductKind::Book => Some(Product { id: 1 }),
        ProductKind::Game => None,
    }
}

fn main() {}
