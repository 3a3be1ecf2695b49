//! `room-svc admin …`: the operators' CLI over the admin API.
//!
//! Reads print the API's JSON; changes print one line saying what was done.
//! Exit status: 0 done, 1 refused or unreachable (the API's error is
//! printed), 64 a command that cannot work (bad flags, no token).
//! `new-key` talks to no server: it makes a key for the `--admin-keys` file.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use axum::http::Method;
use chatroom_cluster::auth::default_admin_token_file;
use clap::{Args, Subcommand};
use serde_json::{Map, Value, json};

use super::client::{AdminClient, ClientError, segment};
use super::keys::{Scope, new_key};

/// Exit status for a command that cannot work (sysexits EX_USAGE).
const EXIT_USAGE: u8 = 64;

/// Where the API is and how to get in.
#[derive(Debug, Args)]
pub struct AdminArgs {
    /// A node's HTTP address: any room service, or the embedded server.
    #[arg(
        long,
        env = "CHATROOM_ADMIN_URL",
        default_value = "http://127.0.0.1:7401"
    )]
    url: String,
    /// The admin token.
    #[arg(long, env = "CHATROOM_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// File holding the admin token. Default:
    /// $XDG_STATE_HOME/chatroom/admin-token (the embedded server's).
    #[arg(long, env = "CHATROOM_ADMIN_TOKEN_FILE", conflicts_with = "token")]
    token_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

/// What to do.
#[derive(Debug, Subcommand)]
enum Command {
    #[command(flatten)]
    Api(AdminCommand),
    /// Make a new admin key: prints the key (shown this once) and, on the
    /// next line, the entry to add to the "keys" of the --admin-keys file.
    NewKey {
        /// The key's name, unique in the file.
        #[arg(long)]
        name: String,
        /// What the key may do; repeat for several.
        #[arg(long = "scope", value_enum, required = true)]
        scopes: Vec<Scope>,
    },
}

/// What to ask the API.
#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// The busiest rooms of the cluster.
    Rooms {
        /// What to rank by.
        #[arg(long, value_enum, default_value = "in-per-s")]
        by: Rank,
        /// How many rooms.
        #[arg(long, default_value_t = 10)]
        limit: usize,
    },
    /// A room's stats: members, nodes, rates, drops, kicks.
    Stats { room: String },
    /// A room's settings: what it runs with and what was overridden.
    Config { room: String },
    /// Override settings: FIELD=VALUE ... (VALUE `default` drops the
    /// override; priority_kinds and hook_kinds take a comma-separated list
    /// of kinds, private, read_only and webhook_* true or false,
    /// hook_failure open or closed).
    Set {
        room: String,
        #[arg(required = true, value_name = "FIELD=VALUE")]
        fields: Vec<String>,
    },
    /// Drop every override of a room: it follows the defaults again.
    Reset { room: String },
    /// Send these kinds to the PRIORITY lane whoever sends them (names:
    /// chat, like, gift, notice; or numbers from 1000). None: no kind.
    PriorityKinds { room: String, kinds: Vec<String> },
    /// Who is muted, banned or whitelisted in a room (by id).
    List {
        room: String,
        #[arg(value_enum)]
        list: ListName,
        /// How many users at most.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
    /// Mute a user in a room.
    Mute {
        room: String,
        user: String,
        /// For how long (e.g. 10m, 2h); until unmuted when left out.
        #[arg(long = "for", value_parser = humantime::parse_duration)]
        duration: Option<Duration>,
    },
    /// Lift a mute.
    Unmute { room: String, user: String },
    /// Ban a user from a room: their sessions in it are kicked at once.
    Ban { room: String, user: String },
    /// Lift a ban.
    Unban { room: String, user: String },
    /// Put a user on a room's whitelist (their messages go PRIORITY).
    Whitelist { room: String, user: String },
    /// Take a user off a room's whitelist.
    Unwhitelist { room: String, user: String },
    /// Post a system notice (PRIORITY lane).
    Notice {
        room: String,
        text: String,
        /// Who the notice is from.
        #[arg(long, default_value = super::DEFAULT_NOTICE_SENDER)]
        sender: String,
    },
    /// Publish a message of any kind from the app's backend (a gift with
    /// attributes, a like, a notice), on a user's behalf or the system's.
    Publish {
        room: String,
        /// chat, like, gift, notice, or a number from 1000.
        #[arg(long)]
        kind: String,
        /// The payload as text.
        #[arg(long, conflicts_with = "attributes")]
        text: Option<String>,
        /// The payload as a JSON object, e.g. '{"gift":"rocket"}'.
        #[arg(long)]
        attributes: Option<String>,
        /// On whose behalf; the system when left out.
        #[arg(long = "as")]
        sender: Option<String>,
        /// A retry with the same key posts nothing again.
        #[arg(long)]
        key: Option<String>,
    },
    /// Close a room: its members are kicked and its state is dropped.
    Close { room: String },
    /// A room's own word lists (the service's default lists apply beside
    /// them).
    WordLists { room: String },
    /// Set one of a room's word lists (replacing the one of that name).
    WordList {
        room: String,
        /// The list's name: letters, digits, `_`, `.`, `-`.
        name: String,
        /// What a match does.
        #[arg(long, value_enum)]
        action: WordAction,
        /// The words (matched case-insensitively, full-width and other
        /// compatibility forms alike).
        #[arg(required_unless_present = "file")]
        words: Vec<String>,
        /// A file of words, one per line, instead of (or besides) WORDS.
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// Drop one of a room's word lists.
    DropWordList { room: String, name: String },
}

/// What a word list does, as a flag value.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum WordAction {
    /// Refuse the message (CONTENT_REJECTED).
    Reject,
    /// Replace each matched character with `*`.
    Mask,
}

/// What the busiest rooms are ranked by, as a flag value.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Rank {
    InPerS,
    OutPerS,
    Members,
}

impl Rank {
    fn query(self) -> &'static str {
        match self {
            Self::InPerS => "in_per_s",
            Self::OutPerS => "out_per_s",
            Self::Members => "members",
        }
    }
}

/// A moderation list, as a command argument.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ListName {
    Mutes,
    Bans,
    Whitelist,
}

impl ListName {
    fn path(self) -> &'static str {
        match self {
            Self::Mutes => "/mutes",
            Self::Bans => "/bans",
            Self::Whitelist => "/whitelist",
        }
    }
}

/// One request and how to report its success.
struct Call {
    method: Method,
    path: String,
    body: Option<Value>,
    /// Printed on success instead of the answer's JSON.
    done: Option<String>,
}

impl Call {
    fn read(path: String) -> Self {
        Self {
            method: Method::GET,
            path,
            body: None,
            done: None,
        }
    }

    fn change(method: Method, path: String, body: Option<Value>, done: String) -> Self {
        Self {
            method,
            path,
            body,
            done: Some(done),
        }
    }
}

/// Runs the command; its exit status.
pub fn run(args: AdminArgs) -> ExitCode {
    let command = match args.command {
        Command::Api(command) => command,
        Command::NewKey { name, scopes } => return make_key(&name, &scopes),
    };
    let token = match token(args.token, args.token_file) {
        Ok(token) => token,
        Err(message) => {
            eprintln!("room-svc admin: {message}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let client = match AdminClient::new(&args.url, token) {
        Ok(client) => client,
        Err(error) => {
            eprintln!("room-svc admin: {error}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let call = match plan(command) {
        Ok(call) => call,
        Err(message) => {
            eprintln!("room-svc admin: {message}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("room-svc admin: {error}");
            return ExitCode::FAILURE;
        }
    };
    let answer = runtime.block_on(client.call(call.method, &call.path, call.body.as_ref()));
    match answer {
        Ok(json) => {
            match call.done {
                Some(done) if json.is_null() => println!("{done}"),
                _ => println!(
                    "{}",
                    serde_json::to_string_pretty(&json).unwrap_or_else(|_| json.to_string())
                ),
            }
            ExitCode::SUCCESS
        }
        Err(ClientError::Api { code, message, .. }) => {
            eprintln!("room-svc admin: refused ({code}): {message}");
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("room-svc admin: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Prints a new key and its entry for the keys file.
fn make_key(name: &str, scopes: &[Scope]) -> ExitCode {
    let (key, entry) = match new_key(name, scopes) {
        Ok(made) => made,
        Err(error) => {
            eprintln!("room-svc admin: {error}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    match serde_json::to_string(&entry) {
        Ok(entry) => {
            println!("{key}\n{entry}");
            eprintln!(
                "the first line is the key, shown only now; add the second to the \"keys\" of the --admin-keys file"
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("room-svc admin: {error}");
            ExitCode::FAILURE
        }
    }
}

/// The token given, or read from `file` (by default the embedded server's).
fn token(token: Option<String>, file: Option<PathBuf>) -> Result<String, String> {
    if let Some(token) = token {
        return Ok(token);
    }
    let path = file.unwrap_or_else(default_admin_token_file);
    std::fs::read_to_string(&path)
        .map(|text| text.trim().to_owned())
        .map_err(|error| {
            format!(
                "no admin token: {} ({error}); give --token or --token-file",
                path.display()
            )
        })
}

fn plan(command: AdminCommand) -> Result<Call, String> {
    use AdminCommand as C;
    let room_path = |room: &str, rest: &str| format!("/rooms/{}{rest}", segment(room));
    let member_path =
        |room: &str, list: &str, user: &str| room_path(room, &format!("/{list}/{}", segment(user)));
    Ok(match command {
        C::Rooms { by, limit } => Call::read(format!("/rooms?by={}&limit={limit}", by.query())),
        C::Stats { room } => Call::read(room_path(&room, "")),
        C::List { room, list, limit } => {
            Call::read(room_path(&room, &format!("{}?limit={limit}", list.path())))
        }
        C::Config { room } => Call::read(room_path(&room, "/config")),
        C::Set { room, fields } => Call {
            method: Method::PATCH,
            path: room_path(&room, "/config"),
            body: Some(patch(&fields)?),
            done: None,
        },
        C::Reset { room } => Call {
            method: Method::DELETE,
            path: room_path(&room, "/config"),
            body: None,
            done: None,
        },
        C::PriorityKinds { room, kinds } => Call {
            method: Method::PATCH,
            path: room_path(&room, "/config"),
            body: Some(
                json!({ "priority_kinds": kinds.iter().map(|k| kind(k)).collect::<Vec<_>>() }),
            ),
            done: None,
        },
        C::Mute {
            room,
            user,
            duration,
        } => {
            let (body, term) = match duration {
                Some(duration) => (
                    Some(json!({ "duration_s": duration.as_secs().max(1) })),
                    format!("for {}", humantime::format_duration(duration)),
                ),
                None => (None, "until unmuted".to_owned()),
            };
            let done = format!("muted {user} in {room} {term}");
            Call::change(Method::PUT, member_path(&room, "mutes", &user), body, done)
        }
        C::Unmute { room, user } => {
            let done = format!("unmuted {user} in {room}");
            Call::change(
                Method::DELETE,
                member_path(&room, "mutes", &user),
                None,
                done,
            )
        }
        C::Ban { room, user } => {
            let done = format!("banned {user} from {room}");
            Call::change(Method::PUT, member_path(&room, "bans", &user), None, done)
        }
        C::Unban { room, user } => {
            let done = format!("unbanned {user} in {room}");
            Call::change(
                Method::DELETE,
                member_path(&room, "bans", &user),
                None,
                done,
            )
        }
        C::Whitelist { room, user } => {
            let done = format!("whitelisted {user} in {room}");
            Call::change(
                Method::PUT,
                member_path(&room, "whitelist", &user),
                None,
                done,
            )
        }
        C::Unwhitelist { room, user } => {
            let done = format!("took {user} off the whitelist of {room}");
            let path = member_path(&room, "whitelist", &user);
            Call::change(Method::DELETE, path, None, done)
        }
        C::Notice { room, text, sender } => Call {
            method: Method::POST,
            path: room_path(&room, "/notices"),
            body: Some(json!({ "text": text, "sender": sender })),
            done: None,
        },
        C::Publish {
            room,
            kind: named,
            text,
            attributes,
            sender,
            key,
        } => {
            let mut body = json!({ "kind": kind(&named) });
            if let Some(text) = text {
                body["text"] = json!(text);
            }
            if let Some(attributes) = attributes {
                let parsed: Value = serde_json::from_str(&attributes)
                    .map_err(|error| format!("--attributes: {error}"))?;
                body["attributes"] = parsed;
            }
            if let Some(sender) = sender {
                body["sender"] = json!(sender);
            }
            if let Some(key) = key {
                body["idempotency_key"] = json!(key);
            }
            Call {
                method: Method::POST,
                path: room_path(&room, "/messages"),
                body: Some(body),
                done: None,
            }
        }
        C::Close { room } => {
            let done = format!("closed {room}");
            Call::change(Method::DELETE, room_path(&room, ""), None, done)
        }
        C::WordLists { room } => Call::read(room_path(&room, "/word-lists")),
        C::WordList {
            room,
            name,
            action,
            mut words,
            file,
        } => {
            if let Some(file) = file {
                let text = std::fs::read_to_string(&file)
                    .map_err(|error| format!("{}: {error}", file.display()))?;
                words.extend(
                    text.lines()
                        .map(str::trim)
                        .filter(|word| !word.is_empty())
                        .map(str::to_owned),
                );
            }
            let action = match action {
                WordAction::Reject => "reject",
                WordAction::Mask => "mask",
            };
            let done = format!(
                "set word list {name} of {room} ({} words, {action})",
                words.len()
            );
            let path = room_path(&room, &format!("/word-lists/{}", segment(&name)));
            let body = json!({ "action": action, "words": words });
            Call::change(Method::PUT, path, Some(body), done)
        }
        C::DropWordList { room, name } => {
            let done = format!("dropped word list {name} of {room}");
            let path = room_path(&room, &format!("/word-lists/{}", segment(&name)));
            Call::change(Method::DELETE, path, None, done)
        }
    })
}

/// `FIELD=VALUE` pairs as a config patch. Values are numbers, `true` or
/// `false`, `default` (drop the override), for `priority_kinds` and
/// `hook_kinds` a comma-separated list, for `hook_failure` a word.
fn patch(fields: &[String]) -> Result<Value, String> {
    let mut patch = Map::new();
    for field in fields {
        let Some((name, value)) = field.split_once('=') else {
            return Err(format!("{field:?} is not FIELD=VALUE"));
        };
        let value = match (name, value) {
            (_, "default") => Value::Null,
            (_, "true") => json!(true),
            (_, "false") => json!(false),
            ("priority_kinds" | "hook_kinds", "") => json!([]),
            ("priority_kinds" | "hook_kinds", kinds) => {
                Value::Array(kinds.split(',').map(kind).collect())
            }
            ("hook_failure", policy) => json!(policy),
            (_, number) => match number.parse::<u64>() {
                Ok(number) => json!(number),
                Err(_) => return Err(format!("{name}: {number:?} is not a whole number")),
            },
        };
        patch.insert(name.to_owned(), value);
    }
    Ok(Value::Object(patch))
}

/// A kind as the API takes it: a number stays a number, a name a string.
fn kind(kind: &str) -> Value {
    match kind.trim().parse::<i64>() {
        Ok(number) => json!(number),
        Err(_) => json!(kind.trim()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patches_are_built_from_field_value_pairs() {
        let fields = [
            "normal_per_s=50".to_owned(),
            "max_payload_bytes=default".to_owned(),
            "priority_kinds=gift,1001".to_owned(),
        ];
        assert_eq!(
            patch(&fields).unwrap(),
            json!({"normal_per_s": 50, "max_payload_bytes": null, "priority_kinds": ["gift", 1001]})
        );
        assert_eq!(
            patch(&["priority_kinds=".to_owned()]).unwrap(),
            json!({"priority_kinds": []})
        );
        assert_eq!(
            patch(&[
                "private=true".to_owned(),
                "hook_kinds=chat,gift".to_owned(),
                "hook_failure=closed".to_owned(),
            ])
            .unwrap(),
            json!({"private": true, "hook_kinds": ["chat", "gift"], "hook_failure": "closed"})
        );
        assert!(patch(&["normal_per_s".to_owned()]).is_err());
        assert!(patch(&["normal_per_s=-5".to_owned()]).is_err());
    }

    #[test]
    fn publish_builds_the_backends_message() {
        let call = plan(AdminCommand::Publish {
            room: "giant".into(),
            kind: "gift".into(),
            text: None,
            attributes: Some(r#"{"gift":"rocket"}"#.into()),
            sender: Some("alice".into()),
            key: Some("order-1".into()),
        })
        .unwrap();
        assert_eq!(call.method, Method::POST);
        assert_eq!(call.path, "/rooms/giant/messages");
        assert_eq!(
            call.body,
            Some(
                json!({"kind": "gift", "attributes": {"gift": "rocket"}, "sender": "alice", "idempotency_key": "order-1"})
            )
        );
        let bad = plan(AdminCommand::Publish {
            room: "giant".into(),
            kind: "1001".into(),
            text: None,
            attributes: Some("{not json".into()),
            sender: None,
            key: None,
        });
        assert!(bad.is_err());
    }

    #[test]
    fn ids_are_escaped_into_paths() {
        let call = plan(AdminCommand::Ban {
            room: "a room".into(),
            user: "bob".into(),
        })
        .unwrap();
        assert_eq!(call.path, "/rooms/a%20room/bans/bob");
        assert_eq!(call.method, Method::PUT);
    }
}
