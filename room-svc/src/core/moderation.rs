//! A room's moderation lists: mutes (with an optional expiry in wall-clock
//! microseconds), bans and the whitelist. Each list is bounded so one room
//! cannot grow without limit; expired mutes count as absent and are pruned
//! lazily.

use std::collections::{HashMap, HashSet};

/// Most entries in each of a room's lists.
pub const MAX_LIST_ENTRIES: usize = 100_000;

/// Which moderation list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum List {
    /// Users who may not send for a while.
    Mutes,
    /// Users who may not be in the room.
    Bans,
    /// Users whose messages go to the PRIORITY lane.
    Whitelist,
}

impl std::fmt::Display for List {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Mutes => "mute list",
            Self::Bans => "ban list",
            Self::Whitelist => "whitelist",
        })
    }
}

/// Why a moderation change was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ModerationError {
    /// The list already holds [`MAX_LIST_ENTRIES`] users.
    #[error("the room's {0} is full ({MAX_LIST_ENTRIES} entries)")]
    Full(List),
}

/// How long a mute still runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MuteLeft {
    /// Until an admin unmutes the user.
    Indefinite,
    /// This many microseconds more (at least 1).
    Micros(u64),
}

/// The lists of one room.
#[derive(Debug, Default)]
pub struct Moderation {
    /// User → wall-clock microsecond at which the mute ends (`None`: never).
    mutes: HashMap<Box<str>, Option<u64>>,
    bans: HashSet<Box<str>>,
    whitelist: HashSet<Box<str>>,
}

impl Moderation {
    /// Empty lists.
    pub fn new() -> Self {
        Self::default()
    }

    /// Mutes `user` until `until_us` (wall clock), or indefinitely; replaces
    /// any earlier mute of the user.
    pub fn mute(
        &mut self,
        user: &str,
        until_us: Option<u64>,
        now_us: u64,
    ) -> Result<(), ModerationError> {
        if let Some(until) = self.mutes.get_mut(user) {
            *until = until_us;
            return Ok(());
        }
        if self.mutes.len() >= MAX_LIST_ENTRIES {
            self.prune_mutes(now_us);
            if self.mutes.len() >= MAX_LIST_ENTRIES {
                return Err(ModerationError::Full(List::Mutes));
            }
        }
        self.mutes.insert(user.into(), until_us);
        Ok(())
    }

    /// Lifts the user's mute; whether there was one still running.
    pub fn unmute(&mut self, user: &str, now_us: u64) -> bool {
        match self.mutes.remove(user) {
            Some(until) => until.is_none_or(|until| until > now_us),
            None => false,
        }
    }

    /// How long the user's mute still runs at `now_us`, or `None` when the
    /// user is not muted. An expired mute is removed here.
    pub fn mute_left(&mut self, user: &str, now_us: u64) -> Option<MuteLeft> {
        match *self.mutes.get(user)? {
            None => Some(MuteLeft::Indefinite),
            Some(until) if until > now_us => Some(MuteLeft::Micros(until - now_us)),
            Some(_) => {
                self.mutes.remove(user);
                None
            }
        }
    }

    /// Mutes still running at `now_us`.
    pub fn mute_count(&self, now_us: u64) -> usize {
        self.mutes
            .values()
            .filter(|until| until.is_none_or(|until| until > now_us))
            .count()
    }

    /// Bans `user`; whether they were not banned before.
    pub fn ban(&mut self, user: &str) -> Result<bool, ModerationError> {
        insert_bounded(&mut self.bans, user, List::Bans)
    }

    /// Lifts a ban; whether there was one.
    pub fn unban(&mut self, user: &str) -> bool {
        self.bans.remove(user)
    }

    /// Whether `user` is banned.
    pub fn is_banned(&self, user: &str) -> bool {
        self.bans.contains(user)
    }

    /// Banned users.
    pub fn ban_count(&self) -> usize {
        self.bans.len()
    }

    /// Whitelists `user`; whether they were not whitelisted before.
    pub fn whitelist_add(&mut self, user: &str) -> Result<bool, ModerationError> {
        insert_bounded(&mut self.whitelist, user, List::Whitelist)
    }

    /// Removes `user` from the whitelist; whether they were on it.
    pub fn whitelist_remove(&mut self, user: &str) -> bool {
        self.whitelist.remove(user)
    }

    /// Whether `user` is whitelisted.
    pub fn is_whitelisted(&self, user: &str) -> bool {
        self.whitelist.contains(user)
    }

    /// Whitelisted users.
    pub fn whitelist_count(&self) -> usize {
        self.whitelist.len()
    }

    /// The users on `list`, in id order, after `limit` of them cut; with the
    /// wall-clock microsecond each mute ends (`None`: until unmuted, and for
    /// the other lists). Mutes that ended by `now_us` are left out. Also
    /// how many there are in all.
    pub fn entries(
        &self,
        list: List,
        now_us: u64,
        limit: usize,
    ) -> (Vec<(&str, Option<u64>)>, usize) {
        let mut entries: Vec<(&str, Option<u64>)> = match list {
            List::Mutes => self
                .mutes
                .iter()
                .filter(|(_, until)| until.is_none_or(|until| until > now_us))
                .map(|(user, until)| (&**user, *until))
                .collect(),
            List::Bans => self.bans.iter().map(|user| (&**user, None)).collect(),
            List::Whitelist => self.whitelist.iter().map(|user| (&**user, None)).collect(),
        };
        let total = entries.len();
        if entries.len() > limit {
            entries.select_nth_unstable_by(limit, |a, b| a.0.cmp(b.0));
            entries.truncate(limit);
        }
        entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
        (entries, total)
    }

    fn prune_mutes(&mut self, now_us: u64) {
        self.mutes
            .retain(|_, until| until.is_none_or(|until| until > now_us));
    }
}

fn insert_bounded(
    set: &mut HashSet<Box<str>>,
    user: &str,
    list: List,
) -> Result<bool, ModerationError> {
    if set.contains(user) {
        return Ok(false);
    }
    if set.len() >= MAX_LIST_ENTRIES {
        return Err(ModerationError::Full(list));
    }
    set.insert(user.into());
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000;

    #[test]
    fn a_mute_runs_until_its_expiry() {
        let mut lists = Moderation::new();
        lists.mute("alice", Some(100 * S), 0).unwrap();
        assert_eq!(
            lists.mute_left("alice", 88 * S),
            Some(MuteLeft::Micros(12 * S))
        );
        assert_eq!(
            lists.mute_left("alice", 100 * S - 1),
            Some(MuteLeft::Micros(1))
        );
        assert_eq!(lists.mute_left("alice", 100 * S), None);
        // Expired mutes are pruned when seen.
        assert_eq!(lists.mutes.len(), 0);
        assert_eq!(lists.mute_left("bob", 0), None);
    }

    #[test]
    fn indefinite_mutes_last_until_unmuted() {
        let mut lists = Moderation::new();
        lists.mute("alice", None, 0).unwrap();
        assert_eq!(
            lists.mute_left("alice", u64::MAX),
            Some(MuteLeft::Indefinite)
        );
        assert!(lists.unmute("alice", u64::MAX));
        assert_eq!(lists.mute_left("alice", 0), None);
        assert!(!lists.unmute("alice", 0));
    }

    #[test]
    fn muting_again_replaces_the_term() {
        let mut lists = Moderation::new();
        lists.mute("alice", None, 0).unwrap();
        lists.mute("alice", Some(5 * S), 0).unwrap();
        assert_eq!(lists.mute_left("alice", 0), Some(MuteLeft::Micros(5 * S)));
        assert!(!lists.unmute("alice", 6 * S), "already expired");
    }

    #[test]
    fn lists_are_bounded_and_expired_mutes_make_room() {
        let mut lists = Moderation::new();
        for i in 0..MAX_LIST_ENTRIES {
            let user = format!("u{i}");
            let until = if i == 7 { Some(10) } else { None };
            lists.mute(&user, until, 0).unwrap();
            lists.ban(&user).unwrap();
            lists.whitelist_add(&user).unwrap();
        }
        assert_eq!(
            lists.mute("x", None, 0),
            Err(ModerationError::Full(List::Mutes))
        );
        assert_eq!(lists.ban("x"), Err(ModerationError::Full(List::Bans)));
        assert_eq!(
            lists.whitelist_add("x"),
            Err(ModerationError::Full(List::Whitelist))
        );
        // Existing entries can still be touched.
        assert_eq!(lists.ban("u1"), Ok(false));
        assert_eq!(lists.mute("u1", Some(99), 0), Ok(()));
        // Once u7's mute has expired there is room for one more.
        assert_eq!(lists.mute("x", None, 10), Ok(()));
        assert_eq!(lists.mute_count(10), MAX_LIST_ENTRIES);
        assert_eq!(
            ModerationError::Full(List::Bans).to_string(),
            "the room's ban list is full (100000 entries)"
        );
    }

    #[test]
    fn lists_are_listed_in_id_order_up_to_a_limit() {
        let mut lists = Moderation::new();
        for user in ["carol", "alice", "bob"] {
            lists.ban(user).unwrap();
        }
        lists.mute("zed", Some(5), 0).unwrap();
        lists.mute("amy", None, 0).unwrap();
        lists.mute("gone", Some(1), 0).unwrap();
        assert_eq!(
            lists.entries(List::Bans, 0, 2),
            (vec![("alice", None), ("bob", None)], 3)
        );
        assert_eq!(
            lists.entries(List::Mutes, 2, 10),
            (vec![("amy", None), ("zed", Some(5))], 2)
        );
        assert_eq!(lists.entries(List::Whitelist, 0, 10), (vec![], 0));
        assert_eq!(lists.entries(List::Bans, 0, 0), (vec![], 3));
    }

    #[test]
    fn bans_and_whitelist_are_sets() {
        let mut lists = Moderation::new();
        assert_eq!(lists.ban("alice"), Ok(true));
        assert_eq!(lists.ban("alice"), Ok(false));
        assert!(lists.is_banned("alice"));
        assert!(lists.unban("alice"));
        assert!(!lists.unban("alice"));
        assert_eq!(lists.whitelist_add("bob"), Ok(true));
        assert!(lists.is_whitelisted("bob"));
        assert_eq!(lists.whitelist_count(), 1);
        assert!(lists.whitelist_remove("bob"));
        assert!(!lists.is_whitelisted("bob"));
    }
}
