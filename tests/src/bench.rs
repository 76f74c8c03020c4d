//! What the benchmarks share: medians, and the goals they check. A benchmark records each
//! measured value against its goal and ends with [`Goals::finish`], which prints every check
//! and exits with status 1 when any goal was missed, so a regression fails `.ci/run`.

/// The median of `samples` (the upper one of an even count).
pub fn median(mut samples: Vec<f64>) -> f64 {
    assert!(!samples.is_empty(), "the median of no samples");
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// Goals checked so far: one line each.
#[derive(Debug, Default)]
pub struct Goals {
    lines: Vec<(bool, String)>,
}

impl Goals {
    pub fn new() -> Goals {
        Goals::default()
    }

    /// `value` must be at most `limit`.
    pub fn at_most(&mut self, what: &str, value: f64, limit: f64) {
        self.lines.push((
            value <= limit,
            format!("{what}: {value:.3}, goal at most {limit}"),
        ));
    }

    /// `value` must be at least `limit`.
    pub fn at_least(&mut self, what: &str, value: f64, limit: f64) {
        self.lines.push((
            value >= limit,
            format!("{what}: {value:.3}, goal at least {limit}"),
        ));
    }

    /// The checks that missed their goal.
    pub fn missed(&self) -> Vec<&str> {
        self.lines
            .iter()
            .filter(|(met, _)| !met)
            .map(|(_, line)| line.as_str())
            .collect()
    }

    /// Prints every check; exits with status 1 when a goal was missed.
    pub fn finish(self) {
        println!();
        for (met, line) in &self.lines {
            println!("goal {}: {line}", if *met { "met" } else { "MISSED" });
        }
        let missed = self.missed().len();
        if missed > 0 {
            eprintln!("{missed} of {} goals missed", self.lines.len());
            std::process::exit(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{median, Goals};

    #[test]
    fn goals_record_what_was_missed() {
        let mut goals = Goals::new();
        goals.at_most("fast", 0.2, 0.5);
        goals.at_most("slow", 0.6, 0.5);
        goals.at_least("rate", 0.96, 0.95);
        goals.at_least("low rate", 0.90, 0.95);
        goals.at_most("at the limit", 0.5, 0.5);
        assert_eq!(
            goals.missed(),
            [
                "slow: 0.600, goal at most 0.5",
                "low rate: 0.900, goal at least 0.95"
            ]
        );
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 3.0);
    }
}
