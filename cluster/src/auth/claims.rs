//! The claims an app's backend or identity provider adds beyond `sub`, `exp`
//! and `roles`: room grants (`rooms`), roles in rooms (`room_roles`) and
//! display info (`info`).
//!
//! Every claim is bounded and checked whole: one entry over a bound or
//! malformed refuses the token, naming the claim, so a token is never half
//! understood. The same checks run when minting, so a minted token always
//! verifies.

use std::sync::{Arc, LazyLock};

use chatroom_proto::ids::check_id;
use serde::Serialize;
use serde_json::{Map, Value};

use super::{AuthError, Roles};

/// Most entries in `rooms`.
pub const MAX_ROOM_GRANTS: usize = 64;
/// Longest room grant or `room_roles` key, in bytes: a room id and a `*`.
pub const MAX_GRANT_LEN: usize = 129;
/// Most rooms in `room_roles`.
pub const MAX_ROOM_ROLE_KEYS: usize = 64;
/// Most role names for one room in `room_roles`.
pub const MAX_ROLES_PER_ROOM: usize = 8;
/// Longest display name, in bytes.
pub const MAX_NAME_LEN: usize = 64;
/// Most badges in `info`.
pub const MAX_BADGES: usize = 8;
/// Longest badge, in bytes.
pub const MAX_BADGE_LEN: usize = 32;

/// Roles a user holds in particular rooms (the `room_roles` claim).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoomRoles {
    /// May moderate the room.
    pub moderator: bool,
    /// Streams in the room.
    pub streamer: bool,
}

impl RoomRoles {
    /// Whether no role is held.
    pub fn is_empty(self) -> bool {
        !self.moderator && !self.streamer
    }

    /// The room roles among `names` (as node frames carry a sender's
    /// roles); other names are ignored.
    pub fn from_names<S: AsRef<str>>(names: &[S]) -> Self {
        let has = |role: &str| names.iter().any(|n| n.as_ref() == role);
        Self {
            moderator: has("moderator"),
            streamer: has("streamer"),
        }
    }

    /// Role names as carried in tokens.
    pub fn names(self) -> Vec<&'static str> {
        let mut names = Vec::new();
        if self.moderator {
            names.push("moderator");
        }
        if self.streamer {
            names.push("streamer");
        }
        names
    }

    fn union(self, other: Self) -> Self {
        Self {
            moderator: self.moderator || other.moderator,
            streamer: self.streamer || other.streamer,
        }
    }
}

/// A room id, or a prefix of one when written with a trailing `*` (`*` alone
/// matches every room).
#[derive(Debug, Clone, PartialEq, Eq)]
enum RoomPattern {
    Exact(Box<str>),
    Prefix(Box<str>),
}

impl RoomPattern {
    /// The pattern `text` spells, found in `claim`.
    fn parse(claim: &'static str, text: &str) -> Result<Self, AuthError> {
        if text.len() > MAX_GRANT_LEN {
            return Err(too_large(claim, "a room pattern is longer than 129 bytes"));
        }
        let grammar = || {
            bad(
                claim,
                "a room pattern is not a room id or a prefix ending in *",
            )
        };
        match text.strip_suffix('*') {
            Some("") => Ok(Self::Prefix("".into())),
            Some(prefix) => {
                check_id(prefix).map_err(|_| grammar())?;
                Ok(Self::Prefix(prefix.into()))
            }
            None => {
                check_id(text).map_err(|_| grammar())?;
                Ok(Self::Exact(text.into()))
            }
        }
    }

    fn matches(&self, room: &str) -> bool {
        match self {
            Self::Exact(id) => **id == *room,
            Self::Prefix(prefix) => room.starts_with(&**prefix),
        }
    }
}

/// The rooms a token lets its user into, and the roles it gives there.
///
/// A token with neither claim has the shared [`none`](Self::none) value: the
/// service decides whether such a token may join any room (grants not in
/// use) or none. A token with `rooms: []` is not empty: it grants no room.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RoomAccess {
    /// `None` when the token has no `rooms` claim.
    grants: Option<Vec<RoomPattern>>,
    roles: Vec<(RoomPattern, RoomRoles)>,
}

/// Shared by every token without `rooms` or `room_roles`, so that such
/// tokens cost no allocation.
static NO_ACCESS: LazyLock<Arc<RoomAccess>> = LazyLock::new(Arc::default);

impl RoomAccess {
    /// The access of a token with neither claim (shared, not allocated).
    pub fn none() -> Arc<Self> {
        Arc::clone(&NO_ACCESS)
    }

    /// Whether `room` matches one of the `rooms` grants.
    pub fn may_join(&self, room: &str) -> bool {
        self.grants
            .iter()
            .flatten()
            .any(|grant| grant.matches(room))
    }

    /// The roles held in `room`: the union over every `room_roles` key that
    /// matches it.
    pub fn roles_in(&self, room: &str) -> RoomRoles {
        self.roles
            .iter()
            .filter(|(pattern, _)| pattern.matches(room))
            .fold(RoomRoles::default(), |acc, (_, roles)| acc.union(*roles))
    }

    /// Whether the token carried neither `rooms` nor `room_roles`.
    pub fn is_empty(&self) -> bool {
        self.grants.is_none() && self.roles.is_empty()
    }
}

/// How the app's backend wants the user shown: set in the token, so clients
/// cannot pick their own badges.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DisplayInfo {
    /// 1 to 64 bytes of UTF-8 without control characters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// At most 8, each 1 to 32 bytes of `[A-Za-z0-9_-]`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub badges: Vec<String>,
    /// `#rrggbb`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub color: Option<String>,
}

impl DisplayInfo {
    /// Display info given as JSON (`{"name", "badges", "color"}`, as a
    /// token's `info` claim), checked by the same bounds; `None` when it
    /// says nothing.
    pub fn from_json(value: Value) -> Result<Option<Self>, AuthError> {
        let extra = ExtraClaims {
            info: Some(value),
            ..ExtraClaims::default()
        };
        Ok(extra.info()?.map(Arc::unwrap_or_clone))
    }

    fn is_empty(&self) -> bool {
        self.name.is_none() && self.badges.is_empty() && self.color.is_none()
    }
}

/// What to put in a minted token beyond its expiry.
#[derive(Debug, Clone)]
pub struct TokenClaims {
    pub(super) user: String,
    pub(super) roles: Roles,
    rooms: Option<Vec<String>>,
    room_roles: Vec<(String, RoomRoles)>,
    info: Option<DisplayInfo>,
}

impl TokenClaims {
    /// Claims for `user`, with no roles, grants or display info.
    pub fn new(user: &str) -> Self {
        Self {
            user: user.to_owned(),
            roles: Roles::default(),
            rooms: None,
            room_roles: Vec::new(),
            info: None,
        }
    }

    /// With service-wide `roles`.
    pub fn roles(mut self, roles: Roles) -> Self {
        self.roles = roles;
        self
    }

    /// With a grant: a room id, `prefix*` or `*`.
    pub fn room(mut self, grant: &str) -> Self {
        self.rooms
            .get_or_insert_with(Vec::new)
            .push(grant.to_owned());
        self
    }

    /// With an explicit `rooms` claim that grants no room.
    pub fn no_rooms(mut self) -> Self {
        self.rooms = Some(Vec::new());
        self
    }

    /// With `roles` in the rooms `pattern` matches (same grammar as grants),
    /// added to any already given for `pattern`.
    pub fn room_roles(mut self, pattern: &str, roles: RoomRoles) -> Self {
        match self
            .room_roles
            .iter_mut()
            .find(|(known, _)| known == pattern)
        {
            Some((_, held)) => *held = held.union(roles),
            None => self.room_roles.push((pattern.to_owned(), roles)),
        }
        self
    }

    /// With display info.
    pub fn info(mut self, info: DisplayInfo) -> Self {
        self.info = Some(info);
        self
    }

    /// The `rooms`, `room_roles` and `info` claims as JSON, checked by the
    /// same rules as a verified token's.
    pub(super) fn extra_claims(&self) -> Result<ExtraClaims, AuthError> {
        let rooms = self.rooms.as_ref().map(|rooms| Value::from(rooms.clone()));
        let room_roles = (!self.room_roles.is_empty()).then(|| {
            let mut map = Map::new();
            for (pattern, roles) in &self.room_roles {
                map.insert(pattern.clone(), Value::from(roles.names()));
            }
            Value::Object(map)
        });
        // A struct of strings always serializes.
        let info = self
            .info
            .as_ref()
            .map(|info| serde_json::to_value(info).unwrap_or_default());
        let extra = ExtraClaims {
            rooms,
            room_roles,
            info,
        };
        extra.access()?;
        extra.info()?;
        Ok(extra)
    }
}

/// The new claims as they arrive, kept as JSON until their bounds are
/// checked.
#[derive(Debug, Default, Serialize, serde::Deserialize)]
pub(super) struct ExtraClaims {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rooms: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    room_roles: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    info: Option<Value>,
}

fn too_large(claim: &'static str, reason: &'static str) -> AuthError {
    AuthError::ClaimTooLarge { claim, reason }
}

fn bad(claim: &'static str, reason: &'static str) -> AuthError {
    AuthError::BadClaim { claim, reason }
}

/// The strings of a JSON array of at most `max` strings.
fn strings<'a>(
    value: &'a Value,
    claim: &'static str,
    max: usize,
    over: &'static str,
) -> Result<Vec<&'a str>, AuthError> {
    let not_strings = "not an array of strings";
    let items = value.as_array().ok_or_else(|| bad(claim, not_strings))?;
    if items.len() > max {
        return Err(too_large(claim, over));
    }
    items
        .iter()
        .map(|item| item.as_str().ok_or_else(|| bad(claim, not_strings)))
        .collect()
}

impl ExtraClaims {
    /// The room grants and roles, or the shared empty access when neither
    /// claim is present.
    pub(super) fn access(&self) -> Result<Arc<RoomAccess>, AuthError> {
        if self.rooms.is_none() && self.room_roles.is_none() {
            return Ok(RoomAccess::none());
        }
        let grants = match &self.rooms {
            Some(rooms) => Some(
                strings(rooms, "rooms", MAX_ROOM_GRANTS, "more than 64 grants")?
                    .into_iter()
                    .map(|grant| RoomPattern::parse("rooms", grant))
                    .collect::<Result<_, _>>()?,
            ),
            None => None,
        };
        let mut roles = Vec::new();
        if let Some(room_roles) = &self.room_roles {
            let map = room_roles
                .as_object()
                .ok_or_else(|| bad("room_roles", "not an object"))?;
            if map.len() > MAX_ROOM_ROLE_KEYS {
                return Err(too_large("room_roles", "more than 64 rooms"));
            }
            for (key, names) in map {
                let key = RoomPattern::parse("room_roles", key)?;
                let names = strings(
                    names,
                    "room_roles",
                    MAX_ROLES_PER_ROOM,
                    "more than 8 roles for a room",
                )?;
                let held = RoomRoles {
                    moderator: names.contains(&"moderator"),
                    streamer: names.contains(&"streamer"),
                };
                if !held.is_empty() {
                    roles.push((key, held));
                }
            }
        }
        Ok(Arc::new(RoomAccess { grants, roles }))
    }

    /// The display info, `None` when absent or empty.
    pub(super) fn info(&self) -> Result<Option<Arc<DisplayInfo>>, AuthError> {
        let Some(info) = &self.info else {
            return Ok(None);
        };
        let info = info
            .as_object()
            .ok_or_else(|| bad("info", "not an object"))?;
        let field = |name: &str| info.get(name).filter(|value| !value.is_null());
        let name = match field("name") {
            Some(name) => Some(display_name(name)?),
            None => None,
        };
        let badges = match field("badges") {
            Some(badges) => strings(badges, "info.badges", MAX_BADGES, "more than 8 badges")?
                .into_iter()
                .map(badge)
                .collect::<Result<_, _>>()?,
            None => Vec::new(),
        };
        let color = match field("color") {
            Some(color) => Some(colour(color)?),
            None => None,
        };
        let info = DisplayInfo {
            name,
            badges,
            color,
        };
        Ok((!info.is_empty()).then(|| Arc::new(info)))
    }
}

fn display_name(value: &Value) -> Result<String, AuthError> {
    let claim = "info.name";
    let name = value.as_str().ok_or_else(|| bad(claim, "not a string"))?;
    if name.is_empty() {
        return Err(bad(claim, "is empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(too_large(claim, "longer than 64 bytes"));
    }
    if name.chars().any(char::is_control) {
        return Err(bad(claim, "contains a control character"));
    }
    Ok(name.to_owned())
}

fn badge(badge: &str) -> Result<String, AuthError> {
    let claim = "info.badges";
    if badge.len() > MAX_BADGE_LEN {
        return Err(too_large(claim, "a badge is longer than 32 bytes"));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    if badge.is_empty() || !badge.chars().all(allowed) {
        return Err(bad(claim, "a badge is not 1 to 32 of [A-Za-z0-9_-]"));
    }
    Ok(badge.to_owned())
}

fn colour(value: &Value) -> Result<String, AuthError> {
    let colour = value.as_str().unwrap_or_default();
    match colour.strip_prefix('#') {
        Some(hex) if hex.len() == 6 && hex.chars().all(|c| c.is_ascii_hexdigit()) => {
            Ok(colour.to_owned())
        }
        _ => Err(bad("info.color", "not #rrggbb")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(rooms: Value, room_roles: Value) -> Result<Arc<RoomAccess>, AuthError> {
        ExtraClaims {
            rooms: (!rooms.is_null()).then_some(rooms),
            room_roles: (!room_roles.is_null()).then_some(room_roles),
            info: None,
        }
        .access()
    }

    #[test]
    fn grants_match_exactly_by_prefix_or_all() {
        let access = access(serde_json::json!(["lobby", "vip:*"]), Value::Null).unwrap();
        assert!(access.may_join("lobby"));
        assert!(!access.may_join("lobby2"));
        assert!(access.may_join("vip:1") && access.may_join("vip:"));
        assert!(!access.may_join("vip"));
        assert!(!access.is_empty());
        let all = self::access(serde_json::json!(["*"]), Value::Null).unwrap();
        assert!(all.may_join("anything"));
    }

    #[test]
    fn absent_claims_share_one_empty_access_and_an_empty_list_grants_nothing() {
        let absent = access(Value::Null, Value::Null).unwrap();
        assert!(Arc::ptr_eq(&absent, &RoomAccess::none()));
        assert!(absent.is_empty() && !absent.may_join("lobby"));
        let nothing = access(serde_json::json!([]), Value::Null).unwrap();
        assert!(!nothing.is_empty() && !nothing.may_join("lobby"));
    }

    #[test]
    fn room_roles_are_the_union_of_matching_keys() {
        let roles = serde_json::json!({
            "show:*": ["moderator", "juggler"],
            "show:1": ["streamer"],
            "other": ["juggler"],
        });
        let access = access(Value::Null, roles).unwrap();
        let both = RoomRoles {
            moderator: true,
            streamer: true,
        };
        assert_eq!(access.roles_in("show:1"), both);
        assert_eq!(access.roles_in("show:2").names(), ["moderator"]);
        assert!(access.roles_in("other").is_empty());
        assert!(!access.may_join("show:1"));
    }

    #[test]
    fn patterns_follow_the_id_grammar() {
        for text in ["", "a b", "**", "a*b", "vip:**", "caf\u{e9}*"] {
            assert!(
                matches!(
                    RoomPattern::parse("rooms", text),
                    Err(AuthError::BadClaim { claim: "rooms", .. })
                ),
                "{text:?}"
            );
        }
        assert!(RoomPattern::parse("rooms", &"x".repeat(128)).is_ok());
        assert!(RoomPattern::parse("rooms", &format!("{}*", "x".repeat(128))).is_ok());
        assert!(matches!(
            RoomPattern::parse("room_roles", &format!("{}*", "x".repeat(129))),
            Err(AuthError::ClaimTooLarge {
                claim: "room_roles",
                ..
            })
        ));
    }
}
