//! One application per component or provider name (lattice id), made atomic with claim keys.
//!
//! Before a deploy or rollback writes its record, it claims each name its version has under
//! `name.<id>`: a create-only write, or a compare-and-set over a claim that no longer holds.
//! Of two applications deploying one name at once, one claim wins and the other deploy is
//! refused, where a check of the other applications' records alone let both through.
//!
//! A claim holds while its application's current version has the name, and for
//! [`PENDING_MS`] after it was written (the deploy that wrote it may still be writing its
//! record). An application releases its claims when it drops a name or is undeployed, and
//! when the change they were for fails; one left behind (a writer that stopped half-way) no
//! longer holds once it is older than that, and the next application that wants the name
//! takes it over with a compare-and-set.

use serde::{Deserialize, Serialize};

/// How long a fresh claim holds whatever its application's record says: far longer than a
/// deploy takes to write its record after claiming.
pub const PENDING_MS: u64 = 30_000;

/// The key of the claim of component or provider `id`.
pub fn claim_key(id: &str) -> String {
    format!("name.{id}")
}

/// The value of a claim key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    /// The application that claimed the name.
    pub app: String,
    /// Unix milliseconds of the claim.
    pub at_ms: u64,
}

impl Claim {
    /// Whether the claim still holds at `now_ms`, given whether its application's current
    /// version has the name.
    pub fn holds(&self, in_use: bool, now_ms: u64) -> bool {
        in_use || now_ms.saturating_sub(self.at_ms) < PENDING_MS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_holds_while_in_use_or_fresh() {
        let claim = Claim { app: "shop".into(), at_ms: 1_000 };
        assert!(claim.holds(false, 1_000 + PENDING_MS - 1), "its deploy may still be writing");
        assert!(!claim.holds(false, 1_000 + PENDING_MS), "dropped or failed: taken over");
        assert!(claim.holds(true, u64::MAX), "in use: holds for ever");
        let ahead = Claim { at_ms: 5_000, ..claim };
        assert!(ahead.holds(false, 1_000), "written by a clock ahead of ours: fresh");
    }
}
