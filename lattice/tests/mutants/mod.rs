//! Mutants of valid encodings for the decoder tests: one to four edits of a seed, or random
//! bytes, run through proptest (a failure shrunk to a small input). Shared by the decoder tests
//! of `trellis-lattice` and `trellis-claims` (which includes this file by path).

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestRunner;

/// One edit of a byte string, at a position proportional to its length.
#[derive(Debug, Clone)]
enum Edit {
    Flip(Index, u8),
    Remove(Index),
    Insert(Index, u8),
    Truncate(Index),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<Index>(), 0u8..8).prop_map(|(i, bit)| Edit::Flip(i, bit)),
        any::<Index>().prop_map(Edit::Remove),
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Edit::Insert(i, b)),
        any::<Index>().prop_map(Edit::Truncate),
    ]
}

/// `seed` with one to four flips, deletions, insertions or truncations; or, one time in five,
/// random bytes.
fn mutant(seed: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let edited = prop::collection::vec(edit(), 1..=4).prop_map(move |edits| {
        let mut m = seed.clone();
        for edit in edits {
            if m.is_empty() {
                break;
            }
            match edit {
                Edit::Flip(i, bit) => {
                    let i = i.index(m.len());
                    m[i] ^= 1 << bit;
                }
                Edit::Remove(i) => {
                    m.remove(i.index(m.len()));
                }
                Edit::Insert(i, b) => m.insert(i.index(m.len()), b),
                Edit::Truncate(i) => m.truncate(i.index(m.len())),
            }
        }
        m
    });
    prop_oneof![4 => edited, 1 => prop::collection::vec(any::<u8>(), 0..64)]
}

/// Runs `test` on `cases` mutants of `seed`; a failure is shrunk to a small input and reported.
pub fn on_mutants(seed: &[u8], cases: u32, test: impl Fn(&[u8])) {
    let config = ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() };
    let result = TestRunner::new(config).run(&mutant(seed.to_vec()), |m| {
        test(&m);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
