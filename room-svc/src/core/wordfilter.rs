//! Word lists and the filter compiled from them: which messages are refused
//! outright and which have words masked with `*`.
//!
//! Every room follows the default lists (a file the node reloads) and its
//! own lists (set through the admin API); a room list with the same name as
//! a default list replaces it ([`WordFilter::for_room`]). Matching is on
//! normalised text: each char is decomposed to its Unicode compatibility
//! form (NFKD, so full-width `ｂａｄ`, ligatures and circled letters match
//! `bad`), lower-cased, and stripped of combining marks (accents, so
//! precomposed, decomposed and added accents all match the bare letters)
//! and of characters that show nothing (zero-width spaces, soft hyphens).
//! Words are normalised the same way when the filter is built; the
//! automata are built once per list change, never per message.
//!
//! Masking maps each match back to the chars of the original text it came
//! from and replaces exactly those, one `*` per char, keeping every other
//! byte as it was. A reject list wins over a mask list.

use std::collections::HashSet;

use aho_corasick::{AhoCorasick, MatchKind};
use serde::{Deserialize, Serialize};
use unicode_normalization::char::{canonical_combining_class, decompose_compatible};

/// Most lists one room (or the defaults file) holds.
pub const MAX_LISTS: usize = 8;

/// Most words one list holds.
pub const MAX_WORDS_PER_LIST: usize = 5_000;

/// Longest word, in bytes of its normalised form.
pub const MAX_WORD_BYTES: usize = 64;

/// Longest list name, in bytes (of `[A-Za-z0-9_.-]`).
pub const MAX_LIST_NAME_BYTES: usize = 64;

/// What a list does to a message that holds one of its words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FilterAction {
    /// The message is refused, naming the list but not the word.
    Reject,
    /// Each char of the word is replaced by `*`.
    Mask,
}

/// A named list of words with what to do when one is found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WordList {
    /// Unique among the lists it is set with; named in refusals.
    pub name: String,
    /// What a match does.
    pub action: FilterAction,
    /// The words, matched anywhere in a message (not only whole words).
    pub words: Vec<String>,
}

/// What the filter made of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filtered {
    /// No list matched.
    Pass,
    /// Mask lists matched: the text with the matched chars replaced by `*`.
    Masked(String),
    /// A reject list matched.
    Rejected {
        /// The list's name (the word is not told, so it cannot be probed).
        list: String,
    },
}

/// Why lists were refused.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    /// More lists than [`MAX_LISTS`].
    #[error("{count} word lists, at most {MAX_LISTS} allowed")]
    TooManyLists {
        /// How many were given.
        count: usize,
    },
    /// A list has more words than [`MAX_WORDS_PER_LIST`].
    #[error("word list {list} has {count} words, at most {MAX_WORDS_PER_LIST} allowed")]
    TooManyWords {
        /// The list.
        list: String,
        /// How many words it has.
        count: usize,
    },
    /// A word is longer than [`MAX_WORD_BYTES`] once normalised.
    #[error(
        "word {index} of list {list} is {bytes} bytes normalised, at most {MAX_WORD_BYTES} allowed"
    )]
    WordTooLong {
        /// The list.
        list: String,
        /// The word's position in the list, from 0.
        index: usize,
        /// Its normalised length.
        bytes: usize,
    },
    /// A word is empty or only whitespace once normalised.
    #[error("word {index} of list {list} is empty")]
    EmptyWord {
        /// The list.
        list: String,
        /// The word's position in the list, from 0.
        index: usize,
    },
    /// A list name is empty, too long, or has a char outside `[A-Za-z0-9_.-]`.
    #[error(
        "word list name {0:?} must be 1 to {MAX_LIST_NAME_BYTES} bytes of A-Z, a-z, 0-9, _, . and -"
    )]
    BadListName(String),
    /// Two lists have the same name.
    #[error("two word lists are named {0}")]
    DuplicateList(String),
    /// A lists file is not `{"lists": [...]}` of well-formed lists.
    #[error("word lists file: {0}")]
    File(#[from] serde_json::Error),
    /// The matcher could not be built from the words.
    #[error("word lists: {0}")]
    Automaton(#[from] aho_corasick::BuildError),
}

/// The defaults file: `{"lists": [...]}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListsFile {
    lists: Vec<WordList>,
}

/// The lists of a defaults file (`{"lists": [...]}`), checked against the
/// bounds.
pub fn parse_lists_file(bytes: &[u8]) -> Result<Vec<WordList>, FilterError> {
    let file: ListsFile = serde_json::from_slice(bytes)?;
    validate_lists(&file.lists)?;
    Ok(file.lists)
}

/// Checks one set of lists (a room's, or the defaults) against the bounds:
/// at most [`MAX_LISTS`] lists with unique, well-formed names, each of at
/// most [`MAX_WORDS_PER_LIST`] words of 1 to [`MAX_WORD_BYTES`] normalised
/// bytes.
pub fn validate_lists(lists: &[WordList]) -> Result<(), FilterError> {
    if lists.len() > MAX_LISTS {
        return Err(FilterError::TooManyLists { count: lists.len() });
    }
    for (i, list) in lists.iter().enumerate() {
        if !is_list_name(&list.name) {
            return Err(FilterError::BadListName(list.name.clone()));
        }
        if lists[..i].iter().any(|other| other.name == list.name) {
            return Err(FilterError::DuplicateList(list.name.clone()));
        }
        if list.words.len() > MAX_WORDS_PER_LIST {
            return Err(FilterError::TooManyWords {
                list: list.name.clone(),
                count: list.words.len(),
            });
        }
        for index in 0..list.words.len() {
            normalised_word(list, index)?;
        }
    }
    Ok(())
}

fn is_list_name(name: &str) -> bool {
    (1..=MAX_LIST_NAME_BYTES).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Word `index` of `list`, normalised, or why it cannot be matched.
fn normalised_word(list: &WordList, index: usize) -> Result<String, FilterError> {
    let word = normalise(&list.words[index]).text;
    if word.trim().is_empty() {
        return Err(FilterError::EmptyWord {
            list: list.name.clone(),
            index,
        });
    }
    if word.len() > MAX_WORD_BYTES {
        return Err(FilterError::WordTooLong {
            list: list.name.clone(),
            index,
            bytes: word.len(),
        });
    }
    Ok(word)
}

/// One action's words, compiled.
#[derive(Debug, Clone)]
struct Matcher {
    automaton: AhoCorasick,
    /// For each pattern, the index in `WordFilter::names` of its list.
    list_of: Vec<usize>,
}

impl Matcher {
    fn build(words: Vec<String>, list_of: Vec<usize>) -> Result<Option<Self>, FilterError> {
        if words.is_empty() {
            return Ok(None);
        }
        // Standard semantics: the overlapping search masking needs, and the
        // earliest-ending match for a refusal.
        let automaton = AhoCorasick::builder()
            .match_kind(MatchKind::Standard)
            .build(&words)?;
        Ok(Some(Self { automaton, list_of }))
    }
}

/// Lists compiled for matching: built once per change of the lists, then
/// shared by every message of the rooms that follow them.
#[derive(Debug, Clone, Default)]
pub struct WordFilter {
    names: Vec<String>,
    reject: Option<Matcher>,
    mask: Option<Matcher>,
}

impl WordFilter {
    /// The filter of one set of lists (checked as [`validate_lists`] does).
    pub fn build(lists: &[WordList]) -> Result<Self, FilterError> {
        validate_lists(lists)?;
        Self::compile(lists.iter())
    }

    /// The filter of a room: the default lists and the room's own (each set
    /// checked on its own), a room list replacing the default list of the
    /// same name.
    pub fn for_room(defaults: &[WordList], room: &[WordList]) -> Result<Self, FilterError> {
        validate_lists(defaults)?;
        validate_lists(room)?;
        let kept = defaults
            .iter()
            .filter(|default| room.iter().all(|own| own.name != default.name));
        Self::compile(kept.chain(room))
    }

    fn compile<'a>(lists: impl Iterator<Item = &'a WordList>) -> Result<Self, FilterError> {
        let mut names = Vec::new();
        let (mut reject, mut reject_lists) = (Vec::new(), Vec::new());
        let (mut mask, mut mask_lists) = (Vec::new(), Vec::new());
        // Each word once per action (the first list naming it keeps it), so
        // a match is reported once.
        let mut seen = HashSet::new();
        for list in lists {
            let (words, list_of) = match list.action {
                FilterAction::Reject => (&mut reject, &mut reject_lists),
                FilterAction::Mask => (&mut mask, &mut mask_lists),
            };
            for index in 0..list.words.len() {
                let word = normalised_word(list, index)?;
                if seen.insert((list.action, word.clone())) {
                    words.push(word);
                    list_of.push(names.len());
                }
            }
            names.push(list.name.clone());
        }
        Ok(Self {
            names,
            reject: Matcher::build(reject, reject_lists)?,
            mask: Matcher::build(mask, mask_lists)?,
        })
    }

    /// Whether no list has any word: every message passes.
    pub fn is_empty(&self) -> bool {
        self.reject.is_none() && self.mask.is_none()
    }

    /// What the lists make of `text`. A reject list wins over mask lists;
    /// when several reject lists match, the one whose match ends first is
    /// named.
    pub fn check(&self, text: &str) -> Filtered {
        if self.is_empty() {
            return Filtered::Pass;
        }
        let normalised = normalise(text);
        if let Some(reject) = &self.reject
            && let Some(found) = reject.automaton.find(&normalised.text)
        {
            let list = reject.list_of[found.pattern().as_usize()];
            return Filtered::Rejected {
                list: self.names[list].clone(),
            };
        }
        let Some(mask) = &self.mask else {
            return Filtered::Pass;
        };
        // How many matches start minus how many end at each normalised
        // byte: linear in the matches, however much they overlap (at most
        // one per word length ends at a byte, the words being distinct).
        let mut opened = vec![0i32; normalised.text.len() + 1];
        let mut any = false;
        for found in mask.automaton.find_overlapping_iter(&normalised.text) {
            any = true;
            opened[found.start()] += 1;
            opened[found.end()] -= 1;
        }
        if !any {
            return Filtered::Pass;
        }
        // The start offset of every original char a match covers.
        let mut masked = vec![false; text.len()];
        let mut open = 0;
        for (at, change) in opened[..normalised.text.len()].iter().enumerate() {
            open += change;
            if open > 0 {
                masked[normalised.origin(at)] = true;
            }
        }
        // An accent goes with the letter it sits on.
        for &(mark, on) in &normalised.marks {
            if masked[normalised.origin(on)] {
                masked[mark] = true;
            }
        }
        let mut out = String::with_capacity(text.len());
        for (at, c) in text.char_indices() {
            out.push(if masked[at] { '*' } else { c });
        }
        Filtered::Masked(out)
    }
}

/// Text as it is matched, and where each of its bytes came from.
struct Normalised {
    text: String,
    /// For each byte of `text`, the offset in the original text of the char
    /// it came from; `None` when the original was ASCII, where the offsets
    /// are the identity.
    origins: Option<Vec<usize>>,
    /// Combining marks left out of `text`: the offset of the original char,
    /// and the byte of `text` it sat on (masked with it).
    marks: Vec<(usize, usize)>,
}

impl Normalised {
    fn origin(&self, at: usize) -> usize {
        self.origins.as_ref().map_or(at, |origins| origins[at])
    }
}

/// `text` decomposed char by char to its compatibility form (NFKD),
/// lower-cased, without its combining marks (so `bädwörd` and `b̈adword`
/// are `badword`) and without the characters that show nothing (a
/// zero-width space or a soft hyphen cannot split a word), keeping track
/// of which original char each byte came from.
fn normalise(text: &str) -> Normalised {
    if text.is_ascii() {
        return Normalised {
            text: text.to_ascii_lowercase(),
            origins: None,
            marks: Vec::new(),
        };
    }
    let mut normalised = String::with_capacity(text.len());
    let mut origins = Vec::with_capacity(text.len());
    let mut marks = Vec::new();
    let mut keep = |c: char, at: usize| {
        if canonical_combining_class(c) != 0 {
            if !normalised.is_empty() {
                marks.push((at, normalised.len() - 1));
            }
        } else if !is_invisible(c) {
            normalised.push(c);
            origins.extend(std::iter::repeat_n(at, c.len_utf8()));
        }
    };
    for (at, c) in text.char_indices() {
        decompose_compatible(c, |part| {
            for lower in part.to_lowercase() {
                // Lower-casing can yield a char that decomposes further.
                decompose_compatible(lower, |out| keep(out, at));
            }
        });
    }
    Normalised {
        text: normalised,
        origins: Some(origins),
        marks,
    }
}

/// Characters that show nothing by themselves: soft hyphen, combining
/// grapheme joiner, Mongolian vowel separator, zero-width spaces and
/// joiners, direction marks and embeddings, invisible operators, the byte
/// order mark, variation selectors.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
    )
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn list(name: &str, action: FilterAction, words: &[&str]) -> WordList {
        WordList {
            name: name.to_owned(),
            action,
            words: words.iter().map(|&w| w.to_owned()).collect(),
        }
    }

    fn masking(words: &[&str]) -> WordFilter {
        WordFilter::build(&[list("profanity", FilterAction::Mask, words)]).unwrap()
    }

    fn masked(text: &str) -> Filtered {
        Filtered::Masked(text.to_owned())
    }

    #[test]
    fn full_width_upper_case_ligatures_and_circled_letters_are_caught() {
        let filter = masking(&["bad", "fish"]);
        assert_eq!(filter.check("ＢＡＤ"), masked("***"));
        assert_eq!(filter.check("so BaD"), masked("so ***"));
        assert_eq!(filter.check("ⓑⓐⓓ!"), masked("***!"));
        // The ligature is one char, masked as one.
        assert_eq!(filter.check("ﬁsh"), masked("***"));
        assert_eq!(filter.check("good"), Filtered::Pass);
        // Words are normalised too.
        let filter = masking(&["ＷＯＲＳＥ"]);
        assert_eq!(filter.check("worse"), masked("*****"));
    }

    #[test]
    fn masking_keeps_the_text_around_a_match_exact() {
        let filter = masking(&["bad"]);
        assert_eq!(
            filter.check("héllo 😀bad中文 BAD! ｂａｄ👍🏽"),
            masked("héllo 😀***中文 ***! ***👍🏽")
        );
        assert_eq!(filter.check("中文bad"), masked("中文***"));
    }

    #[test]
    fn precomposed_and_decomposed_accents_match_alike() {
        for word in ["café", "cafe\u{301}"] {
            let filter = masking(&[word]);
            assert_eq!(filter.check("un café"), masked("un ****"));
            // Each original char is masked: the e and its accent.
            assert_eq!(filter.check("un cafe\u{301}"), masked("un *****"));
            assert_eq!(filter.check("un CAFÉ!"), masked("un ****!"));
            // Accents are left out of matching: the bare word matches too.
            assert_eq!(filter.check("un cafe"), masked("un ****"));
        }
        // Marks given out of canonical order still match.
        let filter = masking(&["\u{1EC7}"]);
        assert_eq!(filter.check("e\u{302}\u{323}"), masked("***"));
    }

    #[test]
    fn accents_and_invisible_characters_do_not_hide_a_word() {
        let filter =
            WordFilter::build(&[list("slurs", FilterAction::Reject, &["badword"])]).expect("valid");
        for hidden in [
            "bädwörd",
            "b\u{308}adword",
            "bad\u{200B}word",
            "b\u{AD}a\u{200D}d\u{FEFF}word",
            "ＢＡＤ\u{2060}ｗｏｒｄ",
        ] {
            assert_eq!(
                filter.check(hidden),
                Filtered::Rejected {
                    list: "slurs".into()
                },
                "{hidden:?}"
            );
        }
        let filter = masking(&["darn"]);
        // The invisible char stays where it was, unmasked; the letters go.
        assert_eq!(filter.check("d\u{200B}ärn it"), masked("*\u{200B}*** it"));
    }

    #[test]
    fn overlapping_words_are_all_masked() {
        let filter = masking(&["abc", "bcd"]);
        assert_eq!(filter.check("xabcdx"), masked("x****x"));
        let filter = masking(&["aa"]);
        assert_eq!(filter.check("aaa b aa"), masked("*** b **"));
        let filter = masking(&["ab", "abcd"]);
        assert_eq!(filter.check("abcde"), masked("****e"));
    }

    #[test]
    fn a_word_in_several_lists_is_matched_once() {
        let filter = WordFilter::build(&[
            list("first", FilterAction::Reject, &["evil", "EVIL"]),
            list("second", FilterAction::Reject, &["evil"]),
            list("third", FilterAction::Mask, &["a", "aa", "a"]),
            list("fourth", FilterAction::Mask, &["aa"]),
        ])
        .unwrap();
        let first = Filtered::Rejected {
            list: "first".into(),
        };
        assert_eq!(filter.check("so evil"), first);
        assert_eq!(filter.check("b aaa b"), masked("b *** b"));
        // A long run of overlapping matches stays linear.
        let long = "a".repeat(4096);
        assert_eq!(filter.check(&long), masked(&"*".repeat(4096)));
    }

    #[test]
    fn reject_wins_over_mask_and_names_only_the_list() {
        let filter = WordFilter::build(&[
            list("profanity", FilterAction::Mask, &["bad"]),
            list("slurs", FilterAction::Reject, &["evil"]),
        ])
        .unwrap();
        let refused = filter.check("bad and ＥＶＩＬ");
        assert_eq!(
            refused,
            Filtered::Rejected {
                list: "slurs".into()
            }
        );
        assert_eq!(filter.check("bad"), masked("***"));
        assert_eq!(filter.check("fine"), Filtered::Pass);
    }

    #[test]
    fn room_lists_replace_defaults_of_the_same_name() {
        let defaults = [
            list("profanity", FilterAction::Reject, &["bad"]),
            list("spam", FilterAction::Mask, &["buy now"]),
        ];
        let room = [list("profanity", FilterAction::Mask, &["worse"])];
        let filter = WordFilter::for_room(&defaults, &room).unwrap();
        assert_eq!(filter.check("bad"), Filtered::Pass);
        assert_eq!(filter.check("worse, BUY NOW"), masked("*****, *******"));
        assert!(WordFilter::for_room(&[], &[]).unwrap().is_empty());
        assert!(WordFilter::default().is_empty());
        assert_eq!(WordFilter::default().check("bad"), Filtered::Pass);
        let empty = WordFilter::build(&[list("none", FilterAction::Mask, &[])]).unwrap();
        assert!(empty.is_empty());
    }

    #[test]
    fn every_bound_is_refused() {
        let lists: Vec<_> = (0..=MAX_LISTS)
            .map(|i| list(&format!("l{i}"), FilterAction::Mask, &["x"]))
            .collect();
        assert!(matches!(
            WordFilter::build(&lists),
            Err(FilterError::TooManyLists { count: 9 })
        ));
        assert!(WordFilter::build(&lists[..MAX_LISTS]).is_ok());

        let words: Vec<String> = (0..=MAX_WORDS_PER_LIST).map(|i| format!("w{i}")).collect();
        let mut big = WordList {
            name: "big".into(),
            action: FilterAction::Reject,
            words,
        };
        assert!(matches!(
            WordFilter::build(std::slice::from_ref(&big)),
            Err(FilterError::TooManyWords { count: 5_001, .. })
        ));
        big.words.pop();
        assert!(WordFilter::build(&[big]).is_ok());

        let long = "a".repeat(MAX_WORD_BYTES + 1);
        assert!(matches!(
            WordFilter::build(&[list("l", FilterAction::Mask, &["ok", &long])]),
            Err(FilterError::WordTooLong {
                index: 1,
                bytes: 65,
                ..
            })
        ));
        assert!(WordFilter::build(&[list("l", FilterAction::Mask, &[&long[1..]])]).is_ok());
        // Short, but long once normalised (one char, 18 once decomposed).
        assert!(matches!(
            WordFilter::build(&[list("l", FilterAction::Mask, &["\u{FDFA}\u{FDFA}"])]),
            Err(FilterError::WordTooLong { .. })
        ));
        for empty in ["", "  ", "\u{3000}"] {
            assert!(matches!(
                WordFilter::build(&[list("l", FilterAction::Mask, &[empty])]),
                Err(FilterError::EmptyWord { index: 0, .. })
            ));
        }

        let too_long = "n".repeat(MAX_LIST_NAME_BYTES + 1);
        for name in ["", "bad name", "naïve", too_long.as_str()] {
            assert!(matches!(
                WordFilter::build(&[list(name, FilterAction::Mask, &["x"])]),
                Err(FilterError::BadListName(_))
            ));
        }
        assert!(WordFilter::build(&[list("a-Z_0.9", FilterAction::Mask, &["x"])]).is_ok());
        let twice = [
            list("same", FilterAction::Mask, &["x"]),
            list("same", FilterAction::Reject, &["y"]),
        ];
        assert!(matches!(
            WordFilter::build(&twice),
            Err(FilterError::DuplicateList(_))
        ));
        assert!(matches!(
            WordFilter::for_room(&twice, &[]),
            Err(FilterError::DuplicateList(_))
        ));
    }

    #[test]
    fn the_defaults_file_is_parsed_and_checked() {
        let lists = parse_lists_file(
            br#"{"lists": [{"name": "profanity", "action": "mask", "words": ["bad"]},
                           {"name": "slurs", "action": "reject", "words": []}]}"#,
        )
        .unwrap();
        assert_eq!(lists[0], list("profanity", FilterAction::Mask, &["bad"]));
        assert_eq!(lists[1].action, FilterAction::Reject);
        assert_eq!(
            serde_json::to_value(&lists[0]).unwrap(),
            serde_json::json!({"name": "profanity", "action": "mask", "words": ["bad"]})
        );
        for bad in [
            &br#"{"lists": [{"name": "x", "action": "hide", "words": []}]}"#[..],
            br#"{"lists": [{"name": "x", "action": "mask", "words": [], "extra": 1}]}"#,
            br#"{"lists": [], "more": 1}"#,
            br#"[]"#,
            b"not json",
        ] {
            assert!(matches!(parse_lists_file(bad), Err(FilterError::File(_))));
        }
        assert!(matches!(
            parse_lists_file(br#"{"lists": [{"name": "x y", "action": "mask", "words": []}]}"#),
            Err(FilterError::BadListName(_))
        ));
    }

    #[test]
    fn a_thousand_word_list_builds_and_checks() {
        let words: Vec<String> = (0..1_000).map(|i| format!("word{i:04}x")).collect();
        let filter = WordFilter::build(&[WordList {
            name: "big".into(),
            action: FilterAction::Mask,
            words,
        }])
        .unwrap();
        assert_eq!(
            filter.check("say WORD0999X and word0500x, not word1000x"),
            masked("say ********* and *********, not word1000x")
        );
    }

    /// Chars a property-test text is made of: ASCII, and chars that
    /// normalise to several (full-width, ligature, precomposed accent) or
    /// stay as they are (emoji, CJK).
    const ALPHABET: &[char] = &['a', 'b', 'A', ' ', 'ａ', 'Ｂ', 'ﬀ', 'é', '😀', '中', '*'];

    /// Words drawn from what the alphabet normalises to.
    const WORDS: &[&str] = &["ab", "ba", "aa", "ff", "bff", "e\u{301}a", "中a", "b"];

    /// The normalised form of the chars `from..to` of `chars`.
    fn normalised(chars: &[char], from: usize, to: usize) -> String {
        normalise(&chars[from..to].iter().collect::<String>()).text
    }

    /// Whether `word` is found in the chars `from..to` of `chars` starting
    /// in the first one's normalised form and ending in the last one's: a
    /// match covering exactly those chars.
    fn spans(chars: &[char], from: usize, to: usize, word: &str) -> bool {
        let span = normalised(chars, from, to);
        let first = normalised(chars, from, from + 1).len();
        let last = span.len() - normalised(chars, to - 1, to).len();
        (0..first).any(|at| {
            span.get(at..).is_some_and(|rest| rest.starts_with(word)) && at + word.len() > last
        })
    }

    proptest! {
        #[test]
        fn masking_replaces_exactly_the_chars_of_matches(
            text in proptest::collection::vec(proptest::sample::select(ALPHABET), 0..24),
            words in proptest::sample::subsequence(WORDS, 1..4),
        ) {
            let filter = masking(&words);
            let original: String = text.iter().collect();
            let out = match filter.check(&original) {
                Filtered::Masked(out) => out,
                Filtered::Pass => original.clone(),
                Filtered::Rejected { .. } => unreachable!("no reject list"),
            };
            let out: Vec<char> = out.chars().collect();
            prop_assert_eq!(out.len(), text.len());
            let mut covered = vec![false; text.len()];
            for from in 0..text.len() {
                for to in from + 1..=text.len() {
                    if words.iter().any(|w| spans(&text, from, to, &normalise(w).text)) {
                        covered[from..to].iter_mut().for_each(|c| *c = true);
                    }
                }
            }
            for (i, (&was, &now)) in text.iter().zip(&out).enumerate() {
                if covered[i] {
                    prop_assert_eq!(now, '*', "char {} of {:?}", i, original);
                } else {
                    prop_assert_eq!(now, was, "char {} of {:?}", i, original);
                }
            }
        }
    }
}
