//! Why an entry became a dead letter: the `reason` of every letter, the `reason` filter of every
//! listing and replay, and a metrics label.
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeadLetterReason {
    /// The entry holds no event, or one that cannot be stored as BSON.
    Invalid,
    /// MongoDB refused the event's document for what it holds.
    WriteRejected,
    /// Delivered more often than `worker.max_deliveries` without being stored.
    Poison,
}

impl DeadLetterReason {
    pub const ALL: [DeadLetterReason; 3] = [Self::Invalid, Self::WriteRejected, Self::Poison];

    /// The reason as stored and as it is asked for (the serde name).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Invalid => "invalid",
            Self::WriteRejected => "write_rejected",
            Self::Poison => "poison",
        }
    }
}

impl fmt::Display for DeadLetterReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A reason that is none of [`DeadLetterReason::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a dead-letter reason: must be one of {list}", list = reason_list())]
pub struct UnknownReason(pub String);

fn reason_list() -> String {
    DeadLetterReason::ALL
        .map(DeadLetterReason::as_str)
        .join(", ")
}

impl FromStr for DeadLetterReason {
    type Err = UnknownReason;

    fn from_str(s: &str) -> Result<Self, UnknownReason> {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownReason(s.to_owned()))
    }
}

impl From<DeadLetterReason> for mongodb::bson::Bson {
    fn from(r: DeadLetterReason) -> Self {
        mongodb::bson::Bson::String(r.as_str().to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_round_trips_through_its_string() {
        for r in DeadLetterReason::ALL {
            let json = serde_json::to_value(r).unwrap();
            assert_eq!(json, serde_json::Value::String(r.as_str().to_owned()));
            assert_eq!(serde_json::from_value::<DeadLetterReason>(json).unwrap(), r);
            assert_eq!(r.as_str().parse::<DeadLetterReason>(), Ok(r));
            assert_eq!(r.to_string(), r.as_str());
            assert_eq!(
                mongodb::bson::Bson::from(r),
                mongodb::bson::to_bson(&r).unwrap()
            );
        }
    }

    #[test]
    fn the_reasons_today_are_these_three() {
        let names: Vec<&str> = DeadLetterReason::ALL.map(DeadLetterReason::as_str).to_vec();
        assert_eq!(names, ["invalid", "write_rejected", "poison"]);
    }

    #[test]
    fn an_unknown_reason_is_a_clear_error() {
        let e = "Poison".parse::<DeadLetterReason>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "`Poison` is not a dead-letter reason: must be one of invalid, write_rejected, poison"
        );
        assert!(serde_json::from_str::<DeadLetterReason>(r#""whatever""#).is_err());
    }
}
