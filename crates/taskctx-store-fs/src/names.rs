//! The id ↔ relative-path encoding: reversible, collision-free, case-proof, and unable to leave
//! the directory it is joined to.
//!
//! An id is encoded byte by byte into a string over a small alphabet that every common file system
//! stores unchanged and compares exactly, whatever its case or Unicode normalisation rules:
//!
//! | id byte                               | encoded as                         |
//! |---------------------------------------|------------------------------------|
//! | `a`–`z`, `0`–`9`, `-`, `_`, `.`       | itself                             |
//! | `A`–`Z`                               | `^` and the lower-case letter      |
//! | anything else (incl. `/`, `%`, UTF-8) | `%` and two lower-case hex digits  |
//!
//! Upper case is spelled out rather than left to the file system, so `A` and `a` stay distinct on
//! case-insensitive volumes; non-ASCII bytes are escaped, so `é` and `e\u{301}` stay distinct on
//! volumes that normalise Unicode. No separator survives, so nothing can climb out.
//!
//! The encoded string is cut into chunks of at most [`MAX_CHUNK`] bytes (never inside an escape);
//! every chunk but the last becomes a directory named `CHUNK~`, the last becomes the file
//! `CHUNK.<ext>`. Each component is then made safe on its own: a leading `.` (hidden files, `.`,
//! `..`) and a Windows device name (`con`, `nul`, `com1`, …) get their first byte escaped. The
//! `~` and extension suffixes keep directories and files apart and keep every component from
//! ending in a dot.
//!
//! Decoding is strict: a path decodes only if encoding the decoded id gives the very same path, so
//! no two paths decode to one id, and foreign files (or hand-made near-misses such as `%61.json`
//! for `a`) are not mistaken for stored ones.

use std::path::PathBuf;

/// The most encoded bytes in one path component before the safety escapes and the suffix; with
/// them a component stays far below the 255-byte limit of common file systems.
pub(crate) const MAX_CHUNK: usize = 200;

/// The suffix of a continuation directory (an encoded name longer than one component).
const CONTINUED: char = '~';

/// Names Windows reserves for devices, whatever follows the first dot.
const RESERVED: &[&str] = &[
    "con", "prn", "aux", "nul", "com0", "com1", "com2", "com3", "com4", "com5", "com6", "com7",
    "com8", "com9", "lpt0", "lpt1", "lpt2", "lpt3", "lpt4", "lpt5", "lpt6", "lpt7", "lpt8", "lpt9",
];

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The path components (relative to an area directory) that store `id`: zero or more
/// continuation directories, then the file `….<ext>`. `ext` has no leading dot.
pub(crate) fn components(id: &str, ext: &str) -> Vec<String> {
    let mut chunks: Vec<String> = vec![String::new()];
    let mut token = [0u8; 3];
    for byte in id.bytes() {
        let len = encode_byte(byte, &mut token);
        let needs_new = chunks
            .last()
            .is_some_and(|chunk| chunk.len() + len > MAX_CHUNK);
        if needs_new {
            chunks.push(String::new());
        }
        if let Some(chunk) = chunks.last_mut() {
            // The token is ASCII by construction.
            chunk.extend(token[..len].iter().map(|&b| char::from(b)));
        }
    }
    let last = chunks.len() - 1;
    chunks
        .into_iter()
        .enumerate()
        .map(|(i, chunk)| {
            let mut component = make_safe(chunk);
            if i == last {
                component.push('.');
                component.push_str(ext);
            } else {
                component.push(CONTINUED);
            }
            component
        })
        .collect()
}

/// The continuation directories of a [`components`] result (all but the file).
pub(crate) fn dirs(components: &[String]) -> &[String] {
    components.split_last().map_or(&[], |(_, dirs)| dirs)
}

/// The relative path of `id`'s file inside its area directory.
pub(crate) fn relative_path(id: &str, ext: &str) -> PathBuf {
    components(id, ext).into_iter().collect()
}

/// Whether a directory name is a continuation directory, and its encoded chunk.
pub(crate) fn continuation_chunk(name: &str) -> Option<&str> {
    name.strip_suffix(CONTINUED)
        .filter(|chunk| !chunk.is_empty())
}

/// The id stored at `dirs` (continuation directory names, outermost first) / `file`, if the path
/// is exactly the encoding of a valid-looking id; `None` for anything else.
pub(crate) fn decode(dirs: &[&str], file: &str, ext: &str) -> Option<String> {
    let stem = file.strip_suffix(ext)?.strip_suffix('.')?;
    let mut encoded = String::new();
    for dir in dirs {
        encoded.push_str(continuation_chunk(dir)?);
    }
    encoded.push_str(stem);
    if encoded.is_empty() {
        return None;
    }
    let id = String::from_utf8(decode_bytes(&encoded)?).ok()?;
    let canonical = components(&id, ext);
    let matches = canonical.len() == dirs.len() + 1
        && canonical
            .iter()
            .zip(dirs.iter().chain(std::iter::once(&file)))
            .all(|(a, b)| a == b);
    matches.then_some(id)
}

/// Writes the encoding of `byte` into `out` and returns its length.
fn encode_byte(byte: u8, out: &mut [u8; 3]) -> usize {
    match byte {
        b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
            out[0] = byte;
            1
        }
        b'A'..=b'Z' => {
            out[0] = b'^';
            out[1] = byte.to_ascii_lowercase();
            2
        }
        _ => {
            out[0] = b'%';
            out[1] = HEX[usize::from(byte >> 4)];
            out[2] = HEX[usize::from(byte & 0x0f)];
            3
        }
    }
}

/// Escapes the first byte of a chunk that would be hidden, `.`/`..`, or a Windows device name.
fn make_safe(chunk: String) -> String {
    let stem = chunk.split('.').next().unwrap_or_default();
    let unsafe_start = chunk.starts_with('.') || RESERVED.contains(&stem);
    match chunk.as_bytes().first() {
        Some(&first) if unsafe_start => {
            let mut safe = String::with_capacity(chunk.len() + 2);
            safe.push('%');
            safe.push(char::from(HEX[usize::from(first >> 4)]));
            safe.push(char::from(HEX[usize::from(first & 0x0f)]));
            safe.push_str(chunk.get(1..).unwrap_or_default());
            safe
        }
        _ => chunk,
    }
}

/// Inverts [`encode_byte`] over a whole string; `None` on anything outside the alphabet.
fn decode_bytes(encoded: &str) -> Option<Vec<u8>> {
    let mut bytes = encoded.bytes();
    let mut out = Vec::with_capacity(encoded.len());
    while let Some(b) = bytes.next() {
        match b {
            b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => out.push(b),
            b'^' => match bytes.next()? {
                lower @ b'a'..=b'z' => out.push(lower.to_ascii_uppercase()),
                _ => return None,
            },
            b'%' => {
                let high = hex_value(bytes.next()?)?;
                let low = hex_value(bytes.next()?)?;
                out.push(high << 4 | low);
            }
            _ => return None,
        }
    }
    Some(out)
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn decode_components(components: &[String], ext: &str) -> Option<String> {
        let (file, dirs) = components.split_last()?;
        let dirs: Vec<&str> = dirs.iter().map(String::as_str).collect();
        decode(&dirs, file, ext)
    }

    #[test]
    fn readable_ids_stay_readable() {
        assert_eq!(components("root.1.2", "json"), vec!["root.1.2.json"]);
        assert_eq!(components("chat-7_x", "jsonl"), vec!["chat-7_x.jsonl"]);
        assert_eq!(components("Root", "json"), vec!["^root.json"]);
        assert_eq!(components("a/b", "json"), vec!["a%2fb.json"]);
        assert_eq!(components("é", "json"), vec!["%c3%a9.json"]);
    }

    #[test]
    fn dangerous_starts_are_escaped() {
        assert_eq!(components("..", "json"), vec!["%2e..json"]);
        assert_eq!(components(".", "json"), vec!["%2e.json"]);
        assert_eq!(components(".hidden", "json"), vec!["%2ehidden.json"]);
        assert_eq!(components("con", "json"), vec!["%63on.json"]);
        assert_eq!(components("nul.txt", "json"), vec!["%6eul.txt.json"]);
        assert_eq!(components("CON", "json"), vec!["^c^o^n.json"]);
        assert_eq!(components("console", "json"), vec!["console.json"]);
    }

    #[test]
    fn every_hostile_id_round_trips_to_a_distinct_safe_path() {
        let mut ids = taskctx_testkit::fixtures::hostile_id_strings();
        ids.extend(["%61", "^a", "a~", "x.json", "x.jsonl", "~", "-", "_"].map(String::from));
        ids.push("😀".repeat(64));
        ids.push("A".repeat(256));
        ids.push(format!("{}.", "b".repeat(199)));
        let mut paths = BTreeSet::new();
        for id in &ids {
            let components = components(id, "json");
            for component in &components {
                assert!(component.len() <= 255, "{component:?} is too long");
                assert!(!component.starts_with('.'), "{component:?} is hidden");
                assert!(!component.ends_with('.'), "{component:?} ends with a dot");
                assert!(
                    component.bytes().all(|b| b.is_ascii_lowercase()
                        || b.is_ascii_digit()
                        || b"-_.^%~".contains(&b)),
                    "{component:?} has an unsafe byte"
                );
            }
            assert_eq!(
                decode_components(&components, "json").as_deref(),
                Some(id.as_str())
            );
            assert!(
                paths.insert(components.join("/").to_lowercase()),
                "{id:?} collides"
            );
        }
    }

    #[test]
    fn random_names_never_panic_and_what_decodes_re_encodes_to_itself() {
        let valid: &[&[u8]] = &[b"a.json", b"^root.1.json", b"%c3%a9.json", b"%2e..json"];
        for input in crate::testing::inputs(11, 20_000, valid) {
            let Ok(name) = String::from_utf8(input) else {
                continue;
            };
            if let Some(id) = decode(&[], &name, "json") {
                assert_eq!(components(&id, "json"), vec![name.clone()]);
            }
            if let Some(id) = decode(&["x~"], &name, "json") {
                assert_eq!(components(&id, "json").len(), 2, "{id:?}");
            }
        }
        let mut rng = crate::testing::Rng::new(3);
        for _ in 0..2_000 {
            let len = 1 + rng.below(300);
            let id: String = (0..len)
                .map(|_| char::from_u32(rng.below(0x1_0000) as u32).unwrap_or('x'))
                .collect();
            let components = components(&id, "jsonl");
            assert!(components.iter().all(|c| c.len() <= 255));
            assert_eq!(decode_components(&components, "jsonl"), Some(id));
        }
    }

    #[test]
    fn long_ids_split_into_continuation_directories() {
        let id = "é".repeat(128); // 256 bytes, 768 encoded
        let components = components(&id, "jsonl");
        assert_eq!(components.len(), 4);
        assert!(components[..3].iter().all(|c| c.ends_with('~')));
        assert_eq!(decode_components(&components, "jsonl"), Some(id));
    }

    #[test]
    fn non_canonical_and_foreign_names_do_not_decode() {
        assert_eq!(decode(&[], "a.json", "json").as_deref(), Some("a"));
        for foreign in [
            "%61.json",
            "A.json",
            "a%2.json",
            "a%zz.json",
            "^1.json",
            ".json",
            "..json",
            "con.json",
            "a.jsonl",
            "a.JSON",
            ".taskctx-tmp-1-2",
            "a b.json",
            "%2F.json",
        ] {
            assert_eq!(decode(&[], foreign, "json"), None, "{foreign}");
        }
        // A short id must not be found in a continuation directory.
        assert_eq!(decode(&["a~"], "b.json", "json"), None);
        assert_eq!(decode(&["a"], "b.json", "json"), None);
    }
}
