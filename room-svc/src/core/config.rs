//! Per-room settings: the defaults every room follows, the overrides an
//! operator sets for one room, the patches that change them, and the bounds
//! a resolved config must stay within before a room (and every msg-svc)
//! applies it.
//!
//! A room keeps only its overrides; its config is the defaults with the
//! overrides laid over them ([`resolve`]), so a changed default reaches every
//! room that did not override that field.

use std::fmt;
use std::ops::RangeInclusive;

use chatroom_proto::cluster::v1::{HookFailurePolicy, KindList, RoomConfig, RoomOverrides};
use chatroom_proto::v1::Kind;
use serde::de::{self, Deserializer};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};

/// Most message kinds a room may route to the PRIORITY lane (or through
/// the moderation hook).
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
const SLOW_MODE_MS: RangeInclusive<u32> = 0..=3_600_000;

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
    /// `hook_kinds` lists more kinds than allowed.
    #[error("hook_kinds has {0} entries, at most {MAX_PRIORITY_KINDS} allowed")]
    TooManyHookKinds(usize),
    /// `hook_kinds` names a reserved kind.
    #[error("hook_kinds contains {0}, which is not a message kind (0..=3 or 1000 and up)")]
    BadHookKind(i32),
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
        slow_mode_ms: 0,
        private: false,
        read_only: false,
        hook_kinds: vec![Kind::Chat as i32],
        hook_failure: HookFailurePolicy::Open as i32,
        webhook_presence: false,
        webhook_messages: false,
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
    check("slow_mode_ms", config.slow_mode_ms, SLOW_MODE_MS)?;
    if config.priority_kinds.len() > MAX_PRIORITY_KINDS {
        return Err(ConfigError::TooManyPriorityKinds(
            config.priority_kinds.len(),
        ));
    }
    if let Some(&kind) = config
        .priority_kinds
        .iter()
        .find(|&&kind| !Kind::is_allowed(kind))
    {
        return Err(ConfigError::BadPriorityKind(kind));
    }
    if config.hook_kinds.len() > MAX_PRIORITY_KINDS {
        return Err(ConfigError::TooManyHookKinds(config.hook_kinds.len()));
    }
    match config
        .hook_kinds
        .iter()
        .find(|&&kind| !Kind::is_allowed(kind))
    {
        Some(&kind) => Err(ConfigError::BadHookKind(kind)),
        None => Ok(()),
    }
}

/// Calls `$apply!` with the names of the numeric settings, in the order of
/// `RoomConfig`, then (after a `;`) those of the on/off settings.
macro_rules! numeric_fields {
    ($apply:ident) => {
        $apply! {
            normal_per_s,
            normal_burst,
            priority_per_s,
            priority_burst,
            normal_ring,
            priority_ring,
            max_payload_bytes,
            round_interval_ms,
            pull_timeout_ms,
            slow_consumer_notifies,
            history_size,
            inline_max_bytes,
            slow_mode_ms;
            private,
            read_only,
            webhook_presence,
            webhook_messages
        }
    };
}

/// The room's config: `defaults` with `overrides` laid over them.
pub fn resolve(defaults: &RoomConfig, overrides: &RoomOverrides) -> RoomConfig {
    macro_rules! lay_over {
        ($($field:ident),*; $($flag:ident),*) => {
            RoomConfig {
                $($field: overrides.$field.unwrap_or(defaults.$field),)*
                $($flag: overrides.$flag.unwrap_or(defaults.$flag),)*
                priority_kinds: overrides
                    .priority_kinds
                    .as_ref()
                    .map_or_else(|| defaults.priority_kinds.clone(), |list| list.kinds.clone()),
                hook_kinds: overrides
                    .hook_kinds
                    .as_ref()
                    .map_or_else(|| defaults.hook_kinds.clone(), |list| list.kinds.clone()),
                hook_failure: overrides.hook_failure.unwrap_or(defaults.hook_failure),
            }
        };
    }
    numeric_fields!(lay_over)
}

/// What a patch does to one setting.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Field<T> {
    /// Leaves it as it is (the field was absent).
    #[default]
    Keep,
    /// Drops the room's override: the default applies again (`null`).
    Clear,
    /// Overrides it.
    Set(T),
}

impl<T> Field<T> {
    fn apply(self, slot: &mut Option<T>) {
        match self {
            Self::Keep => {}
            Self::Clear => *slot = None,
            Self::Set(value) => *slot = Some(value),
        }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Field<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(match Option::<T>::deserialize(deserializer)? {
            Some(value) => Self::Set(value),
            None => Self::Clear,
        })
    }
}

/// A message kind in the admin API: its name (`chat`, `like`, `gift`,
/// `notice`) or its number (an application kind, 1000 and up).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KindName(pub i32);

const KIND_NAMES: [(&str, Kind); 4] = [
    ("chat", Kind::Chat),
    ("like", Kind::Like),
    ("gift", Kind::Gift),
    ("notice", Kind::Notice),
];

impl Serialize for KindName {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match KIND_NAMES.iter().find(|(_, kind)| *kind as i32 == self.0) {
            Some((name, _)) => serializer.serialize_str(name),
            None => serializer.serialize_i32(self.0),
        }
    }
}

impl<'de> Deserialize<'de> for KindName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = KindName;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a kind name (chat, like, gift, notice) or a number of 1000 and up")
            }

            fn visit_str<E: de::Error>(self, name: &str) -> Result<KindName, E> {
                KIND_NAMES
                    .iter()
                    .find(|(known, _)| *known == name)
                    .map(|&(_, kind)| KindName(kind as i32))
                    .ok_or_else(|| E::invalid_value(de::Unexpected::Str(name), &self))
            }

            fn visit_i64<E: de::Error>(self, number: i64) -> Result<KindName, E> {
                i32::try_from(number)
                    .ok()
                    .filter(|&kind| Kind::is_allowed(kind))
                    .map(KindName)
                    .ok_or_else(|| E::invalid_value(de::Unexpected::Signed(number), &self))
            }

            fn visit_u64<E: de::Error>(self, number: u64) -> Result<KindName, E> {
                let signed = i64::try_from(number)
                    .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(number), &self))?;
                self.visit_i64(signed)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

fn kind_names(kinds: &[i32]) -> Vec<KindName> {
    kinds.iter().map(|&kind| KindName(kind)).collect()
}

fn kind_list(names: Vec<KindName>) -> KindList {
    KindList {
        kinds: names.into_iter().map(|KindName(kind)| kind).collect(),
    }
}

/// What a send gets when the moderation hook fails, as the admin API
/// names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HookFailure {
    /// Accepted as if the hook had accepted it.
    Open,
    /// Refused with OVERLOADED and a retry hint.
    Closed,
}

impl HookFailure {
    fn of(policy: i32) -> Self {
        match HookFailurePolicy::try_from(policy) {
            Ok(HookFailurePolicy::Closed) => Self::Closed,
            _ => Self::Open,
        }
    }

    fn policy(self) -> i32 {
        match self {
            Self::Open => HookFailurePolicy::Open as i32,
            Self::Closed => HookFailurePolicy::Closed as i32,
        }
    }
}

macro_rules! define_patch {
    ($($field:ident),*; $($flag:ident),*) => {
        /// A change to a room's overrides, as the admin API takes it: each
        /// field absent (kept), `null` (back to the default) or a value.
        #[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct ConfigPatch {
            $(
                #[allow(missing_docs)]
                #[serde(default)]
                pub $field: Field<u32>,
            )*
            $(
                #[allow(missing_docs)]
                #[serde(default)]
                pub $flag: Field<bool>,
            )*
            /// Kinds that go to the PRIORITY lane whoever sends them.
            #[serde(default)]
            pub priority_kinds: Field<Vec<KindName>>,
            /// Kinds the moderation hook decides on.
            #[serde(default)]
            pub hook_kinds: Field<Vec<KindName>>,
            /// What a send gets when the hook fails.
            #[serde(default)]
            pub hook_failure: Field<HookFailure>,
        }

        impl ConfigPatch {
            /// A patch overriding every field with `config`'s value.
            pub fn from_config(config: &RoomConfig) -> Self {
                Self {
                    $($field: Field::Set(config.$field),)*
                    $($flag: Field::Set(config.$flag),)*
                    priority_kinds: Field::Set(kind_names(&config.priority_kinds)),
                    hook_kinds: Field::Set(kind_names(&config.hook_kinds)),
                    hook_failure: Field::Set(HookFailure::of(config.hook_failure)),
                }
            }

            /// Applies the patch to `overrides`.
            pub fn apply(self, overrides: &mut RoomOverrides) {
                $(self.$field.apply(&mut overrides.$field);)*
                $(self.$flag.apply(&mut overrides.$flag);)*
                let mut kinds = overrides
                    .priority_kinds
                    .take()
                    .map(|list| kind_names(&list.kinds));
                self.priority_kinds.apply(&mut kinds);
                overrides.priority_kinds = kinds.map(kind_list);
                let mut kinds = overrides
                    .hook_kinds
                    .take()
                    .map(|list| kind_names(&list.kinds));
                self.hook_kinds.apply(&mut kinds);
                overrides.hook_kinds = kinds.map(kind_list);
                let mut failure = overrides.hook_failure.map(HookFailure::of);
                self.hook_failure.apply(&mut failure);
                overrides.hook_failure = failure.map(HookFailure::policy);
            }
        }

        /// Writes a resolved config as a JSON object (kinds by name).
        pub fn serialize_config<S: Serializer>(
            config: &RoomConfig,
            serializer: S,
        ) -> Result<S::Ok, S::Error> {
            let mut map = serializer.serialize_map(None)?;
            $(map.serialize_entry(stringify!($field), &config.$field)?;)*
            $(map.serialize_entry(stringify!($flag), &config.$flag)?;)*
            map.serialize_entry("priority_kinds", &kind_names(&config.priority_kinds))?;
            map.serialize_entry("hook_kinds", &kind_names(&config.hook_kinds))?;
            map.serialize_entry("hook_failure", &HookFailure::of(config.hook_failure))?;
            map.end()
        }

        /// Writes a room's overrides as a JSON object of the fields set.
        pub fn serialize_overrides<S: Serializer>(
            overrides: &RoomOverrides,
            serializer: S,
        ) -> Result<S::Ok, S::Error> {
            let mut map = serializer.serialize_map(None)?;
            $(
                if let Some(value) = overrides.$field {
                    map.serialize_entry(stringify!($field), &value)?;
                }
            )*
            $(
                if let Some(value) = overrides.$flag {
                    map.serialize_entry(stringify!($flag), &value)?;
                }
            )*
            if let Some(list) = &overrides.priority_kinds {
                map.serialize_entry("priority_kinds", &kind_names(&list.kinds))?;
            }
            if let Some(list) = &overrides.hook_kinds {
                map.serialize_entry("hook_kinds", &kind_names(&list.kinds))?;
            }
            if let Some(policy) = overrides.hook_failure {
                map.serialize_entry("hook_failure", &HookFailure::of(policy))?;
            }
            map.end()
        }
    };
}
numeric_fields!(define_patch);

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
            ("slow_mode_ms", |c, v| c.slow_mode_ms = v, 0, 3_600_000),
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

#[cfg(test)]
mod patch_tests {
    use super::*;

    fn patch(json: &str) -> Result<ConfigPatch, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn a_patch_sets_clears_and_keeps_fields() {
        let mut overrides = RoomOverrides {
            normal_ring: Some(9),
            history_size: Some(3),
            ..RoomOverrides::default()
        };
        patch(r#"{"normal_per_s": 50, "history_size": null, "priority_kinds": ["like", 1001]}"#)
            .unwrap()
            .apply(&mut overrides);
        assert_eq!(overrides.normal_per_s, Some(50));
        assert_eq!(overrides.normal_ring, Some(9), "absent: kept");
        assert_eq!(overrides.history_size, None, "null: back to the default");
        assert_eq!(
            overrides.priority_kinds,
            Some(KindList {
                kinds: vec![Kind::Like as i32, 1001]
            })
        );
        patch(r#"{"priority_kinds": null}"#)
            .unwrap()
            .apply(&mut overrides);
        assert_eq!(overrides.priority_kinds, None);

        let config = resolve(&default_room_config(), &overrides);
        assert_eq!(config.normal_per_s, 50);
        assert_eq!(config.normal_ring, 9);
        assert_eq!(config.history_size, default_room_config().history_size);
        assert_eq!(config.priority_kinds, [Kind::Gift as i32]);
    }

    #[test]
    fn an_empty_kind_list_is_an_override() {
        let mut overrides = RoomOverrides::default();
        patch(r#"{"priority_kinds": []}"#)
            .unwrap()
            .apply(&mut overrides);
        assert!(
            resolve(&default_room_config(), &overrides)
                .priority_kinds
                .is_empty()
        );
    }

    #[test]
    fn bad_patches_do_not_parse() {
        for bad in [
            r#"{"normal_per_s": -5}"#,
            r#"{"normal_per_s": 4294967296}"#,
            r#"{"normal_per_s": "10"}"#,
            r#"{"normal_per_sec": 10}"#,
            r#"{"priority_kinds": ["gifts"]}"#,
            r#"{"priority_kinds": [4]}"#,
            r#"{"priority_kinds": "gift"}"#,
        ] {
            assert!(patch(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn configs_and_overrides_serialize_with_kind_names() {
        #[derive(Serialize)]
        struct Both<'a> {
            #[serde(serialize_with = "serialize_config")]
            config: &'a RoomConfig,
            #[serde(serialize_with = "serialize_overrides")]
            overrides: &'a RoomOverrides,
        }
        let overrides = RoomOverrides {
            max_payload_bytes: Some(10),
            priority_kinds: Some(KindList {
                kinds: vec![Kind::Notice as i32, 1234],
            }),
            ..RoomOverrides::default()
        };
        let config = resolve(&default_room_config(), &overrides);
        let json = serde_json::to_value(Both {
            config: &config,
            overrides: &overrides,
        })
        .unwrap();
        assert_eq!(
            json["overrides"],
            serde_json::json!({"max_payload_bytes": 10, "priority_kinds": ["notice", 1234]})
        );
        assert_eq!(json["config"]["max_payload_bytes"], 10);
        assert_eq!(json["config"]["normal_per_s"], 200);
        assert_eq!(json["config"].as_object().unwrap().len(), 20);
    }
}
