//! The history checker: pure logic over a [`History`], no processes.
//!
//! - The log ([`log`]): every acknowledged append is in every replica's
//!   final log exactly once, at the index it was acknowledged with; nothing
//!   that was never appended is there; replicas agree index by index; and
//!   an append acknowledged before another was invoked has the lower index.
//! - The KV store ([`kv`]): each key's history is linearizable against a
//!   register model, by a Wing & Gong search with Porcupine's memoisation of
//!   (linearized set, state). The search has a step budget: running out is
//!   [`Verdict::Unknown`], never a pass.

pub mod kv;
pub mod log;

use serde::Serialize;

use super::history::History;

/// The checker's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", content = "findings", rename_all = "snake_case")]
pub enum Verdict {
    /// Every property holds.
    Pass,
    /// At least one property is violated; each line says which and where.
    Violation(Vec<String>),
    /// No violation found, but the search ran out of budget somewhere.
    Unknown(Vec<String>),
}

impl Verdict {
    /// Folds violations and unfinished searches into one verdict.
    pub fn from_findings(violations: Vec<String>, unknown: Vec<String>) -> Verdict {
        if !violations.is_empty() {
            Verdict::Violation(violations)
        } else if !unknown.is_empty() {
            Verdict::Unknown(unknown)
        } else {
            Verdict::Pass
        }
    }
}

/// Checks the log and every key; `steps_max` bounds each key's search.
pub fn check(history: &History, steps_max: u64) -> Verdict {
    let mut violations = log::check(history);
    let mut unknown = Vec::new();
    for (key, outcome) in kv::check_all(&history.ops, steps_max) {
        match outcome {
            kv::Outcome::Linearizable => {}
            kv::Outcome::NotLinearizable { ops } => violations.push(format!(
                "key {key}: its {ops} operations are not linearizable"
            )),
            kv::Outcome::OutOfBudget { ops } => unknown.push(format!(
                "key {key}: search of {ops} operations ran out of budget"
            )),
        }
    }
    Verdict::from_findings(violations, unknown)
}
