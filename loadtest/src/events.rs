//! Realistic events: users and types drawn from configured cardinalities, a padded payload, and a
//! share of duplicates (an eventId sent before) and invalid events (no userId).
use rand::Rng;
use serde_json::{json, Value};

#[derive(Debug, Clone)]
pub struct Mix {
    pub users: u64,
    pub types: u64,
    pub payload_bytes: usize,
    pub duplicate_share: f64,
    pub invalid_share: f64,
}

/// Makes events with ids `{run}-{n}`; remembers nothing but the counter.
pub struct Generator {
    mix: Mix,
    run: String,
    next: u64,
    padding: String,
}

/// What was sent, for the end-to-end check.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Fresh(String),
    Duplicate(String),
    Invalid,
}

impl Generator {
    pub fn new(mix: Mix, run: &str) -> Self {
        let padding = "x".repeat(mix.payload_bytes.saturating_sub(120));
        Self {
            mix,
            run: run.to_owned(),
            next: 0,
            padding,
        }
    }

    pub fn event(&mut self, rng: &mut impl Rng) -> (Value, Kind) {
        let roll: f64 = rng.random();
        let user = format!("user-{}", rng.random_range(0..self.mix.users.max(1)));
        let event_type = format!("type_{}", rng.random_range(0..self.mix.types.max(1)));
        if roll < self.mix.invalid_share {
            return (json!({"eventType": event_type}), Kind::Invalid);
        }
        let (id, kind) =
            if roll < self.mix.invalid_share + self.mix.duplicate_share && self.next > 0 {
                let id = format!("{}-{}", self.run, rng.random_range(0..self.next));
                (id.clone(), Kind::Duplicate(id))
            } else {
                let id = format!("{}-{}", self.run, self.next);
                self.next += 1;
                (id.clone(), Kind::Fresh(id))
            };
        let mut e = json!({"eventId": id, "eventType": event_type, "userId": user,
            "properties": {"plan": "pro", "amount": rng.random_range(1..500)}});
        if !self.padding.is_empty() {
            e["properties"]["pad"] = json!(self.padding);
        }
        (e, kind)
    }

    /// Fresh ids handed out so far.
    pub fn fresh(&self) -> u64 {
        self.next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_and_sizes_follow_the_mix() {
        let mut g = Generator::new(
            Mix {
                users: 10,
                types: 3,
                payload_bytes: 400,
                duplicate_share: 0.2,
                invalid_share: 0.1,
            },
            "r",
        );
        let mut rng = rand::rng();
        let (mut dup, mut bad) = (0, 0);
        for _ in 0..10_000 {
            let (e, k) = g.event(&mut rng);
            match k {
                Kind::Duplicate(_) => dup += 1,
                Kind::Invalid => bad += 1,
                Kind::Fresh(_) => {
                    let len = serde_json::to_vec(&e).unwrap().len();
                    assert!((350..=450).contains(&len), "{len}");
                }
            }
        }
        assert!((1_700..2_300).contains(&dup), "{dup}");
        assert!((800..1_200).contains(&bad), "{bad}");
    }
}
