//! Small seeded-randomness and date helpers shared by the generators.

use chrono::{Datelike, NaiveDate};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub(crate) type DetRng = ChaCha8Rng;

/// One independent, reproducible random stream per generator, so that changing one agency's
/// generator does not reshuffle the others.
pub(crate) fn stream(seed: u64, stream: u64) -> DetRng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    rng
}

/// A uniformly chosen element; `items` must not be empty (all callers pass constant lists).
pub(crate) fn pick<'a, T>(rng: &mut DetRng, items: &'a [T]) -> &'a T {
    &items[rng.random_range(0..items.len())]
}

/// A value chosen with the given integer weights (not all zero).
pub(crate) fn weighted<T: Copy>(rng: &mut DetRng, items: &[(T, u32)]) -> T {
    let total: u32 = items.iter().map(|(_, w)| *w).sum();
    let mut r = rng.random_range(0..total.max(1));
    for (v, w) in items {
        if r < *w {
            return *v;
        }
        r -= *w;
    }
    items[items.len() - 1].0
}

/// Index chosen with the given weights.
pub(crate) fn weighted_index(rng: &mut DetRng, weights: &[u32]) -> usize {
    let total: u32 = weights.iter().sum();
    let mut r = rng.random_range(0..total.max(1));
    for (i, w) in weights.iter().enumerate() {
        if r < *w {
            return i;
        }
        r -= *w;
    }
    weights.len() - 1
}

/// A date uniformly between `from` and `to` (inclusive); `from` when the range is empty.
pub(crate) fn date_between(rng: &mut DetRng, from: NaiveDate, to: NaiveDate) -> NaiveDate {
    let span = (to - from).num_days();
    if span <= 0 {
        return from;
    }
    from + chrono::Days::new(rng.random_range(0..=span as u64))
}

/// Calendar date, falling back to the first of the month for impossible days.
pub(crate) fn ymd(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d)
        .or_else(|| NaiveDate::from_ymd_opt(y, m, 1))
        .unwrap_or(NaiveDate::MIN)
}

/// Whole years between `birth` and `on`.
pub(crate) fn age_on(birth: NaiveDate, on: NaiveDate) -> i32 {
    let mut age = on.year() - birth.year();
    if (on.month(), on.day()) < (birth.month(), birth.day()) {
        age -= 1;
    }
    age
}

/// `date` shifted by whole years (29 Feb becomes 28 Feb).
pub(crate) fn add_years(date: NaiveDate, years: i32) -> NaiveDate {
    let y = date.year() + years;
    NaiveDate::from_ymd_opt(y, date.month(), date.day()).unwrap_or_else(|| ymd(y, date.month(), 28))
}

/// ISO `YYYY-MM-DD`.
pub(crate) fn iso(date: NaiveDate) -> String {
    date.format("%Y-%m-%d").to_string()
}
