//! Reading a stage's option map from a script, with errors that say what was valid.
//!
//! Every stage reads its options through [`OptionMap`], checked against the keys
//! [`crate::vocabulary`] declares for it: an unknown key always lists the valid ones and a
//! value of the wrong type always names the declared type.

use rhai::{Dynamic, Map};

use crate::vocabulary::{KeyType, OptionKey};

/// An option problem, phrased for the script author.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionError {
    /// A key the stage does not know.
    #[error(
        "unknown option `{key}` for {stage}(){}valid options: {}",
        suggestion.map_or("; ".to_string(), |s| format!(": did you mean `{s}`? ")),
        valid.join(", ")
    )]
    Unknown {
        /// Stage function name.
        stage: &'static str,
        /// The key as written.
        key: String,
        /// The valid key closest to `key`, when it looks like a typo of one.
        suggestion: Option<&'static str>,
        /// The keys the stage accepts.
        valid: Vec<&'static str>,
    },
    /// A value of the wrong type.
    #[error("option `{key}` of {stage}() expects {expected}, got {got}")]
    WrongType {
        /// Stage function name.
        stage: &'static str,
        /// The key.
        key: String,
        /// What was expected.
        expected: &'static str,
        /// The type given.
        got: String,
    },
    /// A value of the right type outside its allowed range or set.
    #[error("option `{key}` of {stage}(): {reason}")]
    Invalid {
        /// Stage function name.
        stage: &'static str,
        /// The key.
        key: String,
        /// What is wrong and what is allowed.
        reason: String,
    },
}

/// A script's option map for one stage, checked against the stage's declared keys.
pub struct OptionMap {
    stage: &'static str,
    map: Map,
}

impl OptionMap {
    /// Checks `map` against the keys [`crate::vocabulary`] declares for `stage` (a stage
    /// function or a nested option map such as `decoding`).
    pub fn declared(stage: &'static str, map: Map) -> Result<Self, OptionError> {
        Self::new(stage, map, crate::vocabulary::options_of(stage))
    }

    /// Checks that every key is one of `keys` and every value has its key's type (a unit
    /// value `()` counts as left out).
    pub fn new(stage: &'static str, map: Map, keys: &[OptionKey]) -> Result<Self, OptionError> {
        let mut unknown: Vec<&str> = map
            .keys()
            .map(|k| k.as_str())
            .filter(|k| !keys.iter().any(|key| key.name == *k))
            .collect();
        unknown.sort();
        if let Some(key) = unknown.first() {
            let mut valid: Vec<&'static str> = keys.iter().map(|k| k.name).collect();
            valid.sort();
            return Err(OptionError::Unknown {
                stage,
                key: key.to_string(),
                suggestion: crate::suggest::closest(key, valid.iter().copied()),
                valid,
            });
        }
        let opts = OptionMap { stage, map };
        for key in keys {
            opts.check_type(key.name, key.ty)?;
        }
        Ok(opts)
    }

    /// Whether `key`'s value, if any, is of type `ty`.
    fn check_type(&self, key: &str, ty: KeyType) -> Result<(), OptionError> {
        let Some(value) = self.get(key) else {
            return Ok(());
        };
        let fits = match ty {
            KeyType::Str => value.is_string(),
            KeyType::Int => value.is_int(),
            KeyType::Number => value.is_int() || value.is_float(),
            KeyType::Bool => value.is_bool(),
            KeyType::Map => value.is_map(),
            KeyType::Strings => {
                if !value.is_array() {
                    false
                } else {
                    // Name the offending element's type, as the reader does.
                    let array = value.clone().into_array().unwrap_or_default();
                    if let Some(item) = array.iter().find(|item| !item.is_string()) {
                        return Err(self.wrong(key, ty.expected(), item));
                    }
                    true
                }
            }
        };
        if fits {
            Ok(())
        } else {
            Err(self.wrong(key, ty.expected(), value))
        }
    }

    fn wrong(&self, key: &str, expected: &'static str, value: &Dynamic) -> OptionError {
        OptionError::WrongType {
            stage: self.stage,
            key: key.to_string(),
            expected,
            got: value.type_name().to_string(),
        }
    }

    /// An error about `key`'s value.
    pub fn invalid(&self, key: &str, reason: impl Into<String>) -> OptionError {
        OptionError::Invalid {
            stage: self.stage,
            key: key.to_string(),
            reason: reason.into(),
        }
    }

    fn get(&self, key: &str) -> Option<&Dynamic> {
        self.map.get(key).filter(|v| !v.is_unit())
    }

    /// Whether `key` is given (a unit value `()` counts as left out).
    pub fn is_set(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// A string option.
    pub fn string(&self, key: &str) -> Result<Option<String>, OptionError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) if v.is_string() => Ok(Some(v.clone().into_string().unwrap_or_default())),
            Some(v) => Err(self.wrong(key, "a string", v)),
        }
    }

    /// A string option restricted to `allowed`.
    pub fn choice(
        &self,
        key: &str,
        allowed: &[&'static str],
    ) -> Result<Option<&'static str>, OptionError> {
        match self.string(key)? {
            None => Ok(None),
            Some(s) => allowed
                .iter()
                .copied()
                .find(|a| *a == s)
                .map(Some)
                .ok_or_else(|| {
                    self.invalid(key, format!("`{s}` is not one of: {}", allowed.join(", ")))
                }),
        }
    }

    /// A non-negative integer option.
    pub fn count(&self, key: &str) -> Result<Option<usize>, OptionError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => match v.as_int() {
                Ok(i) if i >= 0 => Ok(Some(i as usize)),
                Ok(i) => Err(self.invalid(key, format!("must be >= 0, got {i}"))),
                Err(_) => Err(self.wrong(key, "an integer", v)),
            },
        }
    }

    /// A non-negative integer option of at most `max` (a budget from [`crate::limits`]).
    pub fn count_at_most(&self, key: &str, max: usize) -> Result<Option<usize>, OptionError> {
        match self.count(key)? {
            Some(n) if n > max => Err(self.invalid(key, format!("{n} is over the limit of {max}"))),
            n => Ok(n),
        }
    }

    /// A duration in seconds: finite, >= 0 and at most [`crate::limits::MAX_SECONDS`], so it
    /// always converts to a `Duration`.
    pub fn seconds(&self, key: &str) -> Result<Option<f64>, OptionError> {
        match self.float(key)? {
            Some(v) if !(v.is_finite() && v >= 0.0) => Err(self.invalid(
                key,
                format!("must be a finite number of seconds >= 0, got {v}"),
            )),
            Some(v) if v > crate::limits::MAX_SECONDS => Err(self.invalid(
                key,
                format!(
                    "{v} seconds is over the limit of {} (one day)",
                    crate::limits::MAX_SECONDS
                ),
            )),
            v => Ok(v),
        }
    }

    /// A non-negative integer option used as a seed.
    pub fn seed(&self, key: &str) -> Result<Option<u64>, OptionError> {
        Ok(self.count(key)?.map(|c| c as u64))
    }

    /// A float option (integers are accepted too).
    pub fn float(&self, key: &str) -> Result<Option<f64>, OptionError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => {
                if let Ok(f) = v.as_float() {
                    Ok(Some(f))
                } else if let Ok(i) = v.as_int() {
                    Ok(Some(i as f64))
                } else {
                    Err(self.wrong(key, "a number", v))
                }
            }
        }
    }

    /// A boolean option.
    pub fn boolean(&self, key: &str) -> Result<Option<bool>, OptionError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .map_err(|_| self.wrong(key, "true or false", v)),
        }
    }

    /// An array-of-strings option.
    pub fn strings(&self, key: &str) -> Result<Option<Vec<String>>, OptionError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) if v.is_array() => {
                let array = v.clone().into_array().unwrap_or_default();
                array
                    .iter()
                    .map(|item| {
                        if item.is_string() {
                            Ok(item.clone().into_string().unwrap_or_default())
                        } else {
                            Err(self.wrong(key, "an array of strings", item))
                        }
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map(Some)
            }
            Some(v) => Err(self.wrong(key, "an array of strings", v)),
        }
    }

    /// A nested map option.
    pub fn map(&self, key: &str) -> Result<Option<Map>, OptionError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) if v.is_map() => Ok(v.clone().try_cast::<Map>()),
            Some(v) => Err(self.wrong(key, "a map `#{...}`", v)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keys of type `ty` with no documentation, for checking alone.
    fn keys(names: &[&'static str], ty: KeyType) -> Vec<OptionKey> {
        names
            .iter()
            .map(|&name| OptionKey {
                name,
                ty,
                default: "",
                unit: "",
                values: "",
                meaning: "",
                example: "",
            })
            .collect()
    }

    fn map(pairs: &[(&str, Dynamic)]) -> Map {
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), v.clone()))
            .collect()
    }

    #[test]
    fn unknown_key_lists_valid_ones_sorted() {
        let err = OptionMap::new(
            "load",
            map(&[("dtyp", Dynamic::from("f32"))]),
            &keys(&["weights", "dtype"], KeyType::Str),
        )
        .err()
        .map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some(
                "unknown option `dtyp` for load(): did you mean `dtype`? valid options: dtype, weights"
            )
        );
        let err = OptionMap::new(
            "load",
            map(&[("colour", Dynamic::from("red"))]),
            &keys(&["weights", "dtype"], KeyType::Str),
        )
        .err()
        .map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("unknown option `colour` for load(); valid options: dtype, weights")
        );
    }

    #[test]
    fn wrong_type_names_expected_type() {
        let err = OptionMap::new(
            "batch",
            map(&[("size", Dynamic::from("8"))]),
            &keys(&["size"], KeyType::Int),
        )
        .err()
        .map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("option `size` of batch() expects an integer, got string")
        );
        let opts = OptionMap::new(
            "batch",
            map(&[("size", Dynamic::from("8"))]),
            &keys(&["size"], KeyType::Str),
        )
        .unwrap();
        assert_eq!(
            opts.count("size").unwrap_err().to_string(),
            "option `size` of batch() expects an integer, got string"
        );
    }

    #[test]
    fn choice_rejects_values_outside_the_set() {
        let opts = OptionMap::new(
            "load",
            map(&[("dtype", Dynamic::from("f64"))]),
            &keys(&["dtype"], KeyType::Str),
        )
        .unwrap();
        assert_eq!(
            opts.choice("dtype", &["f32", "f16"])
                .unwrap_err()
                .to_string(),
            "option `dtype` of load(): `f64` is not one of: f32, f16"
        );
    }

    #[test]
    fn floats_accept_integers_and_negative_counts_are_invalid() {
        let opts = OptionMap::new(
            "infer",
            map(&[("t", Dynamic::from(1_i64)), ("n", Dynamic::from(-1_i64))]),
            &keys(&["t", "n"], KeyType::Number),
        )
        .unwrap();
        assert_eq!(opts.float("t").unwrap(), Some(1.0));
        assert!(opts.count("n").is_err());
    }
    #[test]
    fn budgets_name_the_limit_and_durations_must_be_finite() {
        let opts = OptionMap::new(
            "infer",
            map(&[
                ("n", Dynamic::from(1_000_000_000_000_000_000_i64)),
                ("big", Dynamic::from(1e20_f64)),
                ("nan", Dynamic::from(f64::NAN)),
                ("neg", Dynamic::from(-1.0_f64)),
                ("ok", Dynamic::from(2.5_f64)),
            ]),
            &keys(&["n", "big", "nan", "neg", "ok"], KeyType::Number),
        )
        .unwrap();
        assert_eq!(
            opts.count_at_most("n", 10).unwrap_err().to_string(),
            "option `n` of infer(): 1000000000000000000 is over the limit of 10"
        );
        assert!(
            opts.seconds("big")
                .unwrap_err()
                .to_string()
                .contains("over the limit of 86400")
        );
        assert!(opts.seconds("nan").is_err());
        assert!(opts.seconds("neg").is_err());
        assert_eq!(opts.seconds("ok").unwrap(), Some(2.5));
    }
}
