//! The return types of a `#[cached_get_many]` function, and how their rows meet the ids
//! asked for: by position (`Vec<Option<S>>`), by key (`HashMap<K, S>`), or by a field of the
//! row (`Vec<S>` with `key_field`). The batch works on the text of each id's key part (what
//! its entry key displays), so an id and the row's field match when they display alike.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};

/// What the batch found: one slot per distinct id, in the order of their first appearance.
pub(crate) type Found<S> = Vec<Option<S>>;

/// Where the caller's ids are among the distinct ones.
#[derive(Debug)]
pub struct Layout<'a> {
    /// For each position of the caller's ids, its distinct id's slot.
    pub(crate) slots: &'a [usize],
    /// For each distinct id, its first position among the caller's ids.
    pub(crate) firsts: &'a [usize],
}

/// A collection of rows a batch function returns (see [`BatchOutput`]).
pub trait BatchRows<K, S>: Sized {
    /// The rows of a load of the ids `asked` (whose key texts are `texts`, position by
    /// position), each with the key text of its id. `field`: the `key_field` of the row, for
    /// the rows that do not say which id they answer (`Vec<S>`).
    fn keyed(
        self,
        asked: &[K],
        texts: &[String],
        field: Option<fn(&S) -> String>,
    ) -> Vec<(String, S)>;

    /// The answer to the caller's `ids` laid out as `layout` says, from what was found for
    /// each distinct id.
    fn answer(ids: &[K], layout: &Layout<'_>, found: Found<S>) -> Self;
}

/// Rows that say which id each answers: by position or by key.
#[diagnostic::on_unimplemented(
    message = "a `{Self}` does not say which id each row answers",
    label = "name the field of the row that holds its id: `key_field = \"id\"`",
    note = "or return `Vec<Option<S>>` (one per id asked, in order) or `HashMap<K, S>`"
)]
pub trait RowsByIds {}

/// Rows matched to their ids by a field of the row (`key_field`).
#[diagnostic::on_unimplemented(
    message = "`key_field` matches the rows of a `Vec<S>` to their ids, not those of a `{Self}`",
    label = "a `Vec<Option<S>>` answers by position and a `HashMap<K, S>` by key: remove `key_field`"
)]
pub trait RowsByField {}

/// `Vec<S>`: the rows found, in the order of their ids' first appearance (an id asked twice
/// answers once; an id without a row is left out).
impl<K, S> BatchRows<K, S> for Vec<S> {
    fn keyed(
        self,
        _asked: &[K],
        _texts: &[String],
        field: Option<fn(&S) -> String>,
    ) -> Vec<(String, S)> {
        // Without `key_field` (refused at compile time) no row can be matched: none cached.
        let Some(field) = field else {
            return Vec::new();
        };
        self.into_iter().map(|row| (field(&row), row)).collect()
    }

    fn answer(_ids: &[K], _layout: &Layout<'_>, found: Found<S>) -> Self {
        found.into_iter().flatten().collect()
    }
}

impl<S> RowsByField for Vec<S> {}

/// `Vec<Option<S>>`: one per id asked, in order (duplicates included); `None` for an id
/// without a row.
impl<K, S: Clone> BatchRows<K, S> for Vec<Option<S>> {
    fn keyed(
        self,
        _asked: &[K],
        texts: &[String],
        _field: Option<fn(&S) -> String>,
    ) -> Vec<(String, S)> {
        texts
            .iter()
            .zip(self)
            .filter_map(|(text, row)| Some((text.clone(), row?)))
            .collect()
    }

    fn answer(_ids: &[K], layout: &Layout<'_>, mut found: Found<S>) -> Self {
        // Each value is moved out at its id's last position and cloned before.
        let mut left = vec![0usize; found.len()];
        for &slot in layout.slots {
            left[slot] += 1;
        }
        layout
            .slots
            .iter()
            .map(|&slot| {
                left[slot] -= 1;
                if left[slot] == 0 {
                    found[slot].take()
                } else {
                    found[slot].clone()
                }
            })
            .collect()
    }
}

impl<S> RowsByIds for Vec<Option<S>> {}

/// `HashMap<K, S>`: the ids that have a row.
impl<K, S, H> BatchRows<K, S> for HashMap<K, S, H>
where
    K: Eq + Hash + Clone + std::fmt::Display,
    H: BuildHasher + Default,
{
    fn keyed(
        self,
        _asked: &[K],
        _texts: &[String],
        _field: Option<fn(&S) -> String>,
    ) -> Vec<(String, S)> {
        self.into_iter()
            .map(|(id, row)| (id.to_string(), row))
            .collect()
    }

    fn answer(ids: &[K], layout: &Layout<'_>, found: Found<S>) -> Self {
        let mut answer = HashMap::with_capacity_and_hasher(found.len(), H::default());
        for (&first, value) in layout.firsts.iter().zip(found) {
            if let Some(value) = value {
                answer.insert(ids[first].clone(), value);
            }
        }
        answer
    }
}

impl<K, S, H> RowsByIds for HashMap<K, S, H> {}

/// The return types a `#[cached_get_many]` function may have: rows, or `Result` of rows.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a batch of `{S}`",
    label = "a `#[cached_get_many(schema = {S})]` function returns `Vec<{S}>`, `Vec<Option<{S}>>` or `HashMap<K, {S}>`, or a `Result` of one of them"
)]
pub trait BatchOutput<K, S>: Sized {
    /// The rows inside.
    type Rows: BatchRows<K, S>;
    /// The rows of a successful call; a failure comes back as it is, to be returned.
    fn into_rows(self) -> Result<Self::Rows, Self>;
    /// A successful call's value.
    fn from_rows(rows: Self::Rows) -> Self;
}

macro_rules! batch_outputs {
    ($([$($generics:tt)*] $rows:ty;)*) => {$(
        impl<K, $($generics)*> BatchOutput<K, S> for $rows
        where
            $rows: BatchRows<K, S>,
        {
            type Rows = $rows;
            fn into_rows(self) -> Result<Self::Rows, Self> {
                Ok(self)
            }
            fn from_rows(rows: Self::Rows) -> Self {
                rows
            }
        }

        impl<K, E, $($generics)*> BatchOutput<K, S> for Result<$rows, E>
        where
            $rows: BatchRows<K, S>,
        {
            type Rows = $rows;
            fn into_rows(self) -> Result<Self::Rows, Self> {
                self.map_err(Err)
            }
            fn from_rows(rows: Self::Rows) -> Self {
                Ok(rows)
            }
        }
    )*};
}

batch_outputs! {
    [S] Vec<S>;
    [S] Vec<Option<S>>;
    [S, H] HashMap<K, S, H>;
}

/// Checks, where the macro names the return type, that its rows say which id each answers
/// (no `key_field`).
pub fn rows_by_ids<K, S, R>(_ids: &super::Ids<'_, K>)
where
    R: BatchOutput<K, S>,
    R::Rows: RowsByIds,
{
}

/// Checks, where the macro names the return type, that its rows are matched by `key_field`.
pub fn rows_by_field<K, S, R>(_ids: &super::Ids<'_, K>)
where
    R: BatchOutput<K, S>,
    R::Rows: RowsByField,
{
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(ids: &[i64]) -> Vec<String> {
        ids.iter().map(ToString::to_string).collect()
    }

    /// `[3, 1, 3, 2]`: three distinct ids, 3 asked twice.
    const SLOTS: [usize; 4] = [0, 1, 0, 2];
    const FIRSTS: [usize; 3] = [0, 1, 3];

    fn layout() -> Layout<'static> {
        Layout {
            slots: &SLOTS,
            firsts: &FIRSTS,
        }
    }

    #[test]
    fn positions_answer_every_id_asked_duplicates_included() {
        let ids = [3, 1, 3, 2];
        let found = vec![Some("c"), Some("a"), None];
        let answer = <Vec<Option<&str>> as BatchRows<i64, &str>>::answer(&ids, &layout(), found);
        assert_eq!(answer, [Some("c"), Some("a"), Some("c"), None]);
        let keyed =
            BatchRows::<i64, &str>::keyed(vec![Some("b"), None], &[2, 4], &texts(&[2, 4]), None);
        assert_eq!(keyed, [("2".to_owned(), "b")]);
    }

    #[test]
    fn rows_by_field_answer_each_id_once_in_first_order() {
        let ids = [3, 1, 3, 2];
        let found = vec![Some(30), Some(10), None];
        let answer = <Vec<i32> as BatchRows<i64, i32>>::answer(&ids, &layout(), found);
        assert_eq!(answer, [30, 10]);
        let keyed = BatchRows::<i64, i32>::keyed(
            vec![20, 40],
            &[2, 4],
            &texts(&[2, 4]),
            Some(|row| (row / 10).to_string()),
        );
        assert_eq!(keyed, [("2".to_owned(), 20), ("4".to_owned(), 40)]);
    }

    #[test]
    fn maps_answer_by_key() {
        let ids = [3_i64, 1, 3, 2];
        let found = vec![Some('c'), None, Some('b')];
        let answer: HashMap<i64, char> = BatchRows::answer(&ids, &layout(), found);
        assert_eq!(answer, HashMap::from([(3, 'c'), (2, 'b')]));
    }
}
