//! The simulated network's faults: loss, duplication, delay (and so
//! reordering), partitions, one-way cuts and clogged links.

/// Fault rates of the network, fixed for a run's safety phase.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NetworkFaults {
    /// Probability a message is dropped.
    pub loss: f64,
    /// Probability a message is delivered twice.
    pub duplicate: f64,
    /// Smallest delivery delay, in simulator time units.
    pub delay_min: u64,
    /// Largest delivery delay; different delays reorder messages.
    pub delay_max: u64,
    /// Probability a message is held up to `straggler_units_max` instead, so
    /// it arrives after the cluster has moved on (a new ballot, say).
    pub straggler: f64,
    /// Longest delay of a straggler.
    pub straggler_units_max: u64,
}

impl NetworkFaults {
    /// A perfect network with a fixed one-unit delay.
    pub fn none() -> NetworkFaults {
        NetworkFaults {
            loss: 0.0,
            duplicate: 0.0,
            delay_min: 1,
            delay_max: 1,
            straggler: 0.0,
            straggler_units_max: 1,
        }
    }
}

/// Which links are up, and which are clogged until when.
#[derive(Clone, Debug)]
pub struct Links {
    /// `blocked[from][to]`: messages on the link are dropped.
    blocked: Vec<Vec<bool>>,
    /// `clogged_until[from][to]`: messages wait at least until then.
    clogged_until: Vec<Vec<u64>>,
}

impl Links {
    /// All links up among `n` nodes.
    pub fn new(n: usize) -> Links {
        Links {
            blocked: vec![vec![false; n]; n],
            clogged_until: vec![vec![0; n]; n],
        }
    }

    /// Whether `from` can reach `to`.
    pub fn is_up(&self, from: usize, to: usize) -> bool {
        !self.blocked[from][to]
    }

    /// Earliest delivery time on the link.
    pub fn clogged_until(&self, from: usize, to: usize) -> u64 {
        self.clogged_until[from][to]
    }

    /// Restores every link.
    pub fn heal(&mut self) {
        for row in &mut self.blocked {
            row.fill(false);
        }
    }

    /// Splits the nodes: links only within the same side stay up.
    pub fn split(&mut self, side_of: &[usize]) {
        for (from, row) in self.blocked.iter_mut().enumerate() {
            for (to, blocked) in row.iter_mut().enumerate() {
                *blocked = side_of[from] != side_of[to];
            }
        }
    }

    /// Cuts `from → to` only.
    pub fn cut_one_way(&mut self, from: usize, to: usize) {
        self.blocked[from][to] = true;
    }

    /// Holds messages on `from → to` until `until`.
    pub fn clog(&mut self, from: usize, to: usize, until: u64) {
        self.clogged_until[from][to] = until;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_and_one_way_cuts() {
        let mut links = Links::new(3);
        links.split(&[0, 0, 1]);
        assert!(links.is_up(0, 1) && !links.is_up(0, 2) && !links.is_up(2, 1));
        links.heal();
        links.cut_one_way(0, 2);
        assert!(!links.is_up(0, 2) && links.is_up(2, 0));
    }
}
