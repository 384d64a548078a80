//! A single pass over raw JSON `properties` that checks everything the schema cannot, without
//! building the value: how many values it holds, how deep it nests, property names BSON cannot
//! store (NUL), and integers BSON cannot store (above `i64::MAX`). Memory stays O(depth) whatever
//! the client sends; a tree is built only later, by the worker, straight into BSON bytes.
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

/// What was wrong, found at the pointer `path` (relative to the scanned value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    TooManyValues(usize),
    TooDeep(usize),
    NulInName,
    IntegerOutOfRange,
    /// Not JSON the scanner could read (e.g. a number out of range for a double).
    Unreadable(String),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::TooManyValues(n) => write!(f, "holds more than {n} JSON values"),
            Problem::TooDeep(n) => write!(f, "nesting deeper than {n} levels"),
            Problem::NulInName => f.write_str("property names cannot contain the NUL character"),
            Problem::IntegerOutOfRange => f.write_str(
                "integers above 9223372036854775807 (i64) cannot be stored; send it as a string",
            ),
            Problem::Unreadable(e) => write!(f, "unreadable JSON: {e}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// JSON pointer below the scanned value ("" for the value itself).
    pub path: String,
    pub problem: Problem,
}

/// Counts the values of `raw` (containers and scalars alike) and checks them; the container at
/// the top is depth 1.
pub fn scan(raw: &RawValue, max_values: usize, max_depth: usize) -> Result<usize, Found> {
    let mut state = State {
        values: 0,
        max_values,
        max_depth,
        problem: None,
        path: Vec::new(),
    };
    let mut de = serde_json::Deserializer::from_str(raw.get());
    let outcome = Node {
        state: &mut state,
        depth: 0,
    }
    .deserialize(&mut de);
    match (outcome, state.problem) {
        (Ok(()), _) => Ok(state.values),
        (Err(_), Some(problem)) => {
            let path = state
                .path
                .iter()
                .rev()
                .map(|seg| format!("/{}", seg.replace('~', "~0").replace('/', "~1")))
                .collect();
            Err(Found { path, problem })
        }
        (Err(e), None) => Err(Found {
            path: String::new(),
            problem: Problem::Unreadable(e.to_string()),
        }),
    }
}

struct State {
    values: usize,
    max_values: usize,
    max_depth: usize,
    problem: Option<Problem>,
    /// Segments of the offending value's pointer, innermost first (filled while unwinding).
    path: Vec<String>,
}

impl State {
    fn fail<E: de::Error>(&mut self, problem: Problem) -> E {
        self.problem = Some(problem);
        E::custom("scan stopped")
    }

    fn count<E: de::Error>(&mut self) -> Result<(), E> {
        self.values += 1;
        if self.values > self.max_values {
            return Err(self.fail(Problem::TooManyValues(self.max_values)));
        }
        Ok(())
    }

    fn enter<E: de::Error>(&mut self, depth: usize) -> Result<(), E> {
        self.count()?;
        if depth > self.max_depth {
            return Err(self.fail(Problem::TooDeep(self.max_depth)));
        }
        Ok(())
    }
}

struct Node<'s> {
    state: &'s mut State,
    /// Depth of the container holding this value (0 for the top).
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for Node<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.state.count()
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.state.count()
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.state.count()?;
        if i64::try_from(v).is_err() {
            return Err(self.state.fail(Problem::IntegerOutOfRange));
        }
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.state.count()
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.state.count()
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.state.count()
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let depth = self.depth + 1;
        self.state.enter(depth)?;
        let mut index = 0usize;
        loop {
            let next = seq.next_element_seed(Node {
                state: &mut *self.state,
                depth,
            });
            match next {
                Ok(Some(())) => index += 1,
                Ok(None) => return Ok(()),
                Err(e) => {
                    if self.state.problem.is_some() {
                        self.state.path.push(index.to_string());
                    }
                    return Err(e);
                }
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let depth = self.depth + 1;
        self.state.enter(depth)?;
        while let Some(key) = map.next_key_seed(KeySeed)? {
            if key.as_str().contains('\0') {
                self.state.path.push(key.as_str().to_owned());
                return Err(self.state.fail(Problem::NulInName));
            }
            if let Err(e) = map.next_value_seed(Node {
                state: &mut *self.state,
                depth,
            }) {
                if self.state.problem.is_some() {
                    self.state.path.push(key.as_str().to_owned());
                }
                return Err(e);
            }
        }
        Ok(())
    }
}

/// A property name, borrowed from the input unless it holds escapes.
enum Key<'de> {
    Borrowed(&'de str),
    Owned(String),
}

impl Key<'_> {
    fn as_str(&self) -> &str {
        match self {
            Key::Borrowed(s) => s,
            Key::Owned(s) => s,
        }
    }
}

struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Key<'de>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Key<'de>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Key<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a property name")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
        Ok(Key::Borrowed(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
        Ok(Key::Owned(v.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_owned()).unwrap()
    }

    fn problem(s: &str) -> Found {
        scan(&raw(s), 1_000, 16).unwrap_err()
    }

    #[test]
    fn every_value_counts_once() {
        assert_eq!(scan(&raw("{}"), 10, 16), Ok(1));
        assert_eq!(scan(&raw(r#"{"a":[1,2,{"b":null}]}"#), 10, 16), Ok(6));
    }

    #[test]
    fn too_many_values_stop_the_scan_where_the_limit_is_passed() {
        let f = scan(&raw(r#"{"a":[1,2,3]}"#), 3, 16).unwrap_err();
        assert_eq!(f.problem, Problem::TooManyValues(3));
        assert_eq!(f.path, "/a/1");
    }

    #[test]
    fn depth_counts_containers_from_one() {
        let mut deep = "1".to_owned();
        for _ in 0..16 {
            deep = format!(r#"{{"k":{deep}}}"#);
        }
        assert!(scan(&raw(&deep), 1_000, 16).is_ok());
        let f = scan(&raw(&format!(r#"{{"k":{deep}}}"#)), 1_000, 16).unwrap_err();
        assert_eq!(f.problem, Problem::TooDeep(16));
    }

    #[test]
    fn nul_in_a_name_is_found_with_its_pointer_even_escaped() {
        let f = problem(r#"{"ok":[{"b\u0000d":1}]}"#);
        assert_eq!(f.problem, Problem::NulInName);
        assert_eq!(f.path, "/ok/0/b\u{0}d");
    }

    #[test]
    fn integers_beyond_i64_are_pointed_at_and_i64_max_passes() {
        let f = problem(r#"{"a":{"big":18446744073709551615}}"#);
        assert_eq!(f.problem, Problem::IntegerOutOfRange);
        assert_eq!(f.path, "/a/big");
        assert!(scan(
            &raw(r#"{"a":9223372036854775807,"b":-9223372036854775808}"#),
            10,
            16
        )
        .is_ok());
    }

    #[test]
    fn pointer_segments_are_escaped() {
        assert_eq!(
            problem(r#"{"a/b~c":18446744073709551615}"#).path,
            "/a~1b~0c"
        );
    }
}
