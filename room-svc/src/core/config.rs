//! Per-room settings: the defaults every new room starts with and the bounds
//! a config must stay within before a room (and every msg-svc) applies it.

use std::ops::RangeInclusive;

use chatroom_proto::cluster::v1::RoomConfig;
use chatroom_proto::v1::Kind;

/// Most message kinds a room may route to the PRIORITY lane.
pub const MAX_PRIORITY_KINDS: usize = 32;

const RATE: RangeInclusive<u32> = 0..=1_000_000;
const BURST: RangeInclusive<u32> = 1..=1_000_000;
const NORMAL_RING: RangeInclusive<u32> = 0..=100_000;
const PRIORITY_RING: RangeInclusive<u32> = 1..=100_000;
const MAX_PAYLOAD: RangeInclusive<u32> = 1..=60_000;
const ROUND_INTERVAL_MS: RangeInclusive<u32> = 10..=10_000;
const PULL_TIMEOUT_MS: RangeInclusive<u32> = 100..=60_000;
const SLOW_CONSUMER_NOTIFIES: RangeInclusive<u32> = 1..=1_000;
const HISTORY_SIZE: RangeInclusive<u32> = 0..=10_000;
const INLINE_MAX_BYTES: RangeInclusive<u32> = 0..=60_000;

/// Why a room config was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A numeric field is outside its allowed range.
    #[error("{field} is {value}, allowed {min}..={max}")]
    OutOfRange {
        /// The field's name in `RoomConfig`.
        field: &'static str,
        /// The value given.
        value: u32,
        /// Smallest allowed value.
        min: u32,
        /// Largest allowed value.
        max: u32,
    },
    /// `priority_kinds` lists more kinds than allowed.
    #[error("priority_kinds has {0} entries, at most {MAX_PRIORITY_KINDS} allowed")]
    TooManyPriorityKinds(usize),
    /// `priority_kinds` names a reserved kind.
    #[error("priority_kinds contains {0}, which is not a message kind (0..=3 or 1000 and up)")]
    BadPriorityKind(i32),
}

/// The settings of a room nobody has configured.
pub fn default_room_config() -> RoomConfig {
    RoomConfig {
        normal_per_s: 200,
        normal_burst: 200,
        priority_per_s: 50,
        priority_burst: 50,
        normal_ring: 512,
        priority_ring: 256,
        max_payload_bytes: 4096,
        round_interval_ms: 100,
        pull_timeout_ms: 2000,
        slow_consumer_notifies: 5,
        history_size: 200,
        inline_max_bytes: 32 * 1024,
        priority_kinds: vec![Kind::Gift as i32],
    }
}

/// Checks every field of `config` against its bounds. A burst only matters
/// (and is only checked) while its lane's rate is above 0.
pub fn validate_config(config: &RoomConfig) -> Result<(), ConfigError> {
    check("normal_per_s", config.normal_per_s, RATE)?;
    if config.normal_per_s > 0 {
        check("normal_burst", config.normal_burst, BURST)?;
    }
    check("priority_per_s", config.priority_per_s, RATE)?;
    if config.priority_per_s > 0 {
        check("priority_burst", config.priority_burst, BURST)?;
    }
    check("normal_ring", config.normal_ring, NORMAL_RING)?;
    check("priority_ring", config.priority_ring, PRIORITY_RING)?;
    check("max_payload_bytes", config.max_payload_bytes, MAX_PAYLOAD)?;
    check(
        "round_interval_ms",
        config.round_interval_ms,
        ROUND_INTERVAL_MS,
    )?;
    check("pull_timeout_ms", config.pull_timeout_ms, PULL_TIMEOUT_MS)?;
    check(
        "slow_consumer_notifies",
        config.slow_consumer_notifies,
        SLOW_CONSUMER_NOTIFIES,
    )?;
    check("history_size", config.history_size, HISTORY_SIZE)?;
    check(
        "inline_max_bytes",
        config.inline_max_bytes,
        INLINE_MAX_BYTES,
    )?;
    if config.priority_kinds.len() > MAX_PRIORITY_KINDS {
        return Err(ConfigError::TooManyPriorityKinds(
            config.priority_kinds.len(),
        ));
    }
    match config
        .priority_kinds
        .iter()
        .find(|&&kind| !Kind::is_allowed(kind))
    {
        Some(&kind) => Err(ConfigError::BadPriorityKind(kind)),
        None => Ok(()),
    }
}

fn check(field: &'static str, value: u32, range: RangeInclusive<u32>) -> Result<(), ConfigError> {
    if range.contains(&value) {
        Ok(())
    } else {
        Err(ConfigError::OutOfRange {
            field,
            value,
            min: *range.start(),
            max: *range.end(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Setter = fn(&mut RoomConfig, u32);

    /// Every numeric field with its setter and inclusive bounds.
    fn numeric_fields() -> Vec<(&'static str, Setter, u32, u32)> {
        vec![
            ("normal_per_s", |c, v| c.normal_per_s = v, 0, 1_000_000),
            ("normal_burst", |c, v| c.normal_burst = v, 1, 1_000_000),
            ("priority_per_s", |c, v| c.priority_per_s = v, 0, 1_000_000),
            ("priority_burst", |c, v| c.priority_burst = v, 1, 1_000_000),
            ("normal_ring", |c, v| c.normal_ring = v, 0, 100_000),
            ("priority_ring", |c, v| c.priority_ring = v, 1, 100_000),
            (
                "max_payload_bytes",
                |c, v| c.max_payload_bytes = v,
                1,
                60_000,
            ),
            (
                "round_interval_ms",
                |c, v| c.round_interval_ms = v,
                10,
                10_000,
            ),
            ("pull_timeout_ms", |c, v| c.pull_timeout_ms = v, 100, 60_000),
            (
                "slow_consumer_notifies",
                |c, v| c.slow_consumer_notifies = v,
                1,
                1_000,
            ),
            ("history_size", |c, v| c.history_size = v, 0, 10_000),
            ("inline_max_bytes", |c, v| c.inline_max_bytes = v, 0, 60_000),
        ]
    }

    #[test]
    fn defaults_are_valid() {
        assert_eq!(validate_config(&default_room_config()), Ok(()));
    }

    #[test]
    fn every_numeric_field_is_checked_at_both_ends() {
        for (field, set, min, max) in numeric_fields() {
            for ok in [min, max] {
                let mut config = default_room_config();
                set(&mut config, ok);
                assert_eq!(validate_config(&config), Ok(()), "{field} = {ok}");
            }
            let mut outside = vec![max + 1];
            if min > 0 {
                outside.push(min - 1);
            }
            for bad in outside {
                let mut config = default_room_config();
                set(&mut config, bad);
                assert_eq!(
                    validate_config(&config),
                    Err(ConfigError::OutOfRange {
                        field,
                        value: bad,
                        min,
                        max
                    }),
                    "{field} = {bad}"
                );
            }
        }
    }

    #[test]
    fn bursts_are_ignored_while_the_lane_is_closed() {
        let mut config = default_room_config();
        config.normal_per_s = 0;
        config.normal_burst = 0;
        config.priority_per_s = 0;
        config.priority_burst = 5_000_000;
        assert_eq!(validate_config(&config), Ok(()));
        config.normal_per_s = 1;
        assert!(matches!(
            validate_config(&config),
            Err(ConfigError::OutOfRange {
                field: "normal_burst",
                ..
            })
        ));
    }

    #[test]
    fn priority_kinds_are_bounded_and_must_be_kinds() {
        let mut config = default_room_config();
        config.priority_kinds = (1000..1000 + MAX_PRIORITY_KINDS as i32).collect();
        assert_eq!(validate_config(&config), Ok(()));
        config.priority_kinds.push(Kind::Like as i32);
        assert_eq!(
            validate_config(&config),
            Err(ConfigError::TooManyPriorityKinds(MAX_PRIORITY_KINDS + 1))
        );
        for bad in [-1, 4, 999] {
            config.priority_kinds = vec![Kind::Gift as i32, bad];
            assert_eq!(
                validate_config(&config),
                Err(ConfigError::BadPriorityKind(bad))
            );
        }
        config.priority_kinds.clear();
        assert_eq!(validate_config(&config), Ok(()));
    }

    #[test]
    fn errors_name_the_field_value_and_range() {
        let mut config = default_room_config();
        config.max_payload_bytes = 70_000;
        let error = validate_config(&config).unwrap_err();
        assert_eq!(
            error.to_string(),
            "max_payload_bytes is 70000, allowed 1..=60000"
        );
    }
}
