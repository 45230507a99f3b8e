//! Named scenario tests, each a classic way consensus goes wrong.

use super::*;

#[test]
fn a_short_sweep_finds_nothing() {
    for seed in 0..40 {
        let report = run_seed(seed, false);
        assert!(
            report.violations.is_empty(),
            "seed {seed}: {:?}",
            report.violations
        );
        assert!(
            report.acked > 0,
            "seed {seed} acknowledged nothing: {report:?}"
        );
    }
}

/// Seeds until the first violation of `property` under `faults`, if any.
fn first_caught(faults: crate::protocol::TestFaults, property: &str, seeds: u64) -> Option<u64> {
    (0..seeds).find(|seed| {
        run_seed_broken(*seed, faults)
            .violations
            .iter()
            .any(|v| v.property == property)
    })
}

#[test]
fn replying_before_persist_is_caught() {
    let faults = crate::protocol::TestFaults {
        reply_before_persist: true,
        ..Default::default()
    };
    let caught = first_caught(faults, "no vote leaves before its state is durable", 20);
    assert!(
        caught.is_some(),
        "the durability checker missed votes sent before fsync"
    );
}

#[test]
fn accepting_below_the_promise_is_caught() {
    let faults = crate::protocol::TestFaults {
        accept_below_promise: true,
        ..Default::default()
    };
    let caught = first_caught(faults, "nothing accepted below its promise", 200);
    assert!(
        caught.is_some(),
        "the promise checker missed accepts below the promise"
    );
}
