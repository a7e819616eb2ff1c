//! Scrubbing: keyed hashes for ids and prefix blocks, the report of what
//! happened to each field, and the leak check that looks for every content
//! string of the input in the written trace.

use std::collections::BTreeMap;
use std::path::Path;

pub use crate::trace::scrub::{ScrubReport, Treatment};

/// Keyed hashing with a secret derived from the salt. The salt and key
/// live only in memory; nothing derived from them but hashes is written.
pub struct Keys {
    key: [u8; 32],
}

impl Keys {
    /// Keys from `--salt`, or from a random salt when none is given.
    pub fn new(salt: Option<&str>) -> Self {
        let key = match salt {
            Some(s) => blake3::derive_key("llm-replay openai-log salt v1", s.as_bytes()),
            None => {
                let mut k = [0u8; 32];
                rand::fill(&mut k);
                k
            }
        };
        Self { key }
    }

    /// A keyed hash of `value` in the domain `domain` (ids of one kind never
    /// equal ids of another).
    pub fn hash(&self, domain: &str, value: &[u8]) -> [u8; 32] {
        let mut h = self.hasher(domain);
        h.update(value);
        *h.finalize().as_bytes()
    }

    /// A keyed hasher that has taken in `domain`.
    fn hasher(&self, domain: &str) -> blake3::Hasher {
        let mut h = blake3::Hasher::new_keyed(&self.key);
        h.update(domain.as_bytes());
        h.update(&[0]);
        h
    }

    /// An id's keyed hash, as a number (written as [`Self::hex`]).
    pub fn id64(&self, domain: &str, value: &str) -> u64 {
        let h = self.hash(domain, value.as_bytes());
        let mut b = [0u8; 8];
        b.copy_from_slice(&h[..8]);
        u64::from_be_bytes(b)
    }

    /// How an [`Self::id64`] is written in the trace: 16 hex digits.
    pub fn hex(id: u64) -> String {
        format!("{id:016x}")
    }

    /// Chained keyed hashes of the full `block`-token blocks of `ids`:
    /// block `i`'s hash covers blocks `0..=i`.
    pub fn blocks(&self, ids: &[u32], block: usize) -> Vec<u64> {
        crate::ingest::chat::chained_block_ids(ids, block, || self.hasher("block"))
    }
}

/// The content strings of an input, held as fingerprints (never the text):
/// the hash of their first 8 bytes, their length and the hash of all their
/// bytes. A string is found in a haystack when some 8-byte window matches
/// and the full-length hash agrees.
///
/// Held as one flat vector (16 bytes a string), sorted and de-duplicated
/// whenever it grows by half: a log resends the same history on every turn.
#[derive(Default)]
pub struct LeakCheck {
    entries: Vec<Fingerprint>,
    /// Length of the sorted, de-duplicated front of `entries`.
    sorted: usize,
    /// One bit per value of the top [`FILTER_BITS`] bits of a head's hash:
    /// most haystack windows match no head and are skipped here.
    filter: Vec<u64>,
}

/// Bits of the head filter's index (32 Mi bits, 4 MiB).
const FILTER_BITS: u32 = 25;

fn filter_index(head: u64) -> usize {
    (head.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - FILTER_BITS)) as usize
}

/// Fingerprint of one content string: its first 8 bytes, and its length
/// (24 bits) above 40 bits of the hash of all its bytes. 16 bytes a string.
pub type Fingerprint = (u64, u64);

/// Longest string fingerprinted whole (its first 32 bytes always are).
const MAX_WHOLE: usize = (1 << 24) - 1;
const HASH_BITS: u32 = 40;

fn pack(len: usize, full: u64) -> u64 {
    ((len as u64) << HASH_BITS) | (full & ((1 << HASH_BITS) - 1))
}

fn unpack_len(packed: u64) -> usize {
    (packed >> HASH_BITS) as usize
}

fn head(bytes: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[..8]);
    u64::from_le_bytes(b)
}

fn full(bytes: &[u8]) -> u64 {
    let h = blake3::hash(bytes);
    let mut b = [0u8; 8];
    b.copy_from_slice(&h.as_bytes()[..8]);
    u64::from_le_bytes(b)
}

/// The fingerprints of `s`: the whole string (up to 16 MiB), and its first
/// 32 bytes when it is longer (a cut copy of a long message is a leak too).
/// Strings under 8 bytes have none.
pub fn fingerprints(s: &str, out: &mut Vec<Fingerprint>) {
    let b = s.as_bytes();
    if b.len() < 8 {
        return;
    }
    if b.len() <= MAX_WHOLE {
        out.push((head(b), pack(b.len(), full(b))));
    }
    if b.len() > 32 {
        let mut cut = 32;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        out.push((head(b), pack(cut, full(&b[..cut]))));
    }
}

impl LeakCheck {
    /// Adds fingerprints.
    pub fn add(&mut self, fps: impl IntoIterator<Item = Fingerprint>) {
        for fp in fps {
            if self.entries.len() == self.entries.capacity() {
                // Grow by a quarter, not the default doubling: this is the
                // largest allocation of a log ingest.
                self.entries
                    .reserve_exact((self.entries.len() / 4).max(1024));
            }
            self.entries.push(fp);
        }
        if self.entries.len() >= self.sorted.max(1 << 16) * 3 / 2 {
            self.compact();
        }
    }

    fn compact(&mut self) {
        if self.sorted == self.entries.len() && !self.filter.is_empty() {
            return;
        }
        self.entries.sort_unstable();
        self.entries.dedup();
        self.entries.shrink_to_fit();
        self.sorted = self.entries.len();
        self.filter = vec![0u64; (1usize << FILTER_BITS) / 64];
        for e in &self.entries {
            let i = filter_index(e.0);
            self.filter[i / 64] |= 1 << (i % 64);
        }
    }

    /// Distinct strings held.
    pub fn distinct(&mut self) -> usize {
        self.compact();
        self.entries.len()
    }

    /// Occurrences (offset, length) of any held string in `hay` that are
    /// not inside `allowed` (texts the tool writes on purpose: column names,
    /// model names, field names; a message that happens to read
    /// `gpt-4o-mini` is not leaked by the `model` column).
    pub fn search(&mut self, hay: &[u8], allowed: &[&[u8]]) -> Vec<(usize, u32)> {
        self.compact();
        let mut found = Vec::new();
        if self.entries.is_empty() || hay.len() < 8 {
            return found;
        }
        for p in 0..=hay.len() - 8 {
            let h = head(&hay[p..]);
            let i = filter_index(h);
            if self.filter[i / 64] & (1 << (i % 64)) == 0 {
                continue;
            }
            let from = self.entries.partition_point(|e| e.0 < h);
            let cands = self.entries[from..].iter().take_while(|e| e.0 == h);
            for &(_, packed) in cands {
                let len = unpack_len(packed);
                let end = p + len;
                if end <= hay.len() && pack(len, full(&hay[p..end])) == packed {
                    let m = &hay[p..end];
                    let excused = allowed.iter().any(|a| memchr::memmem::find(a, m).is_some());
                    if !excused {
                        found.push((p, len as u32));
                    }
                }
            }
        }
        found
    }

    /// Searches a written trace: its raw bytes, every decoded string
    /// column value and every metadata value. Returns where each string
    /// was found (never the string).
    pub fn search_trace(&mut self, path: &Path, allowed: &[&[u8]]) -> Result<Vec<String>, String> {
        let raw = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut found: Vec<String> = self
            .search(&raw, allowed)
            .into_iter()
            .map(|(at, len)| format!("{len} bytes at byte {at} of the file"))
            .collect();
        let trace = crate::trace::read_trace(path).map_err(|e| e.to_string())?;
        let mut values: BTreeMap<(&str, &str), usize> = BTreeMap::new();
        for (row, r) in trace.records.iter().enumerate() {
            let cols = [
                ("request_id", Some(&r.request_id)),
                ("session_id", r.session_id.as_ref()),
                ("model", r.model.as_ref()),
                ("request_kind", r.request_kind.as_ref()),
                ("prompt_text", r.prompt_text.as_ref()),
                ("user_id", r.user_id.as_ref()),
            ];
            for (col, v) in cols {
                if let Some(v) = v {
                    values.entry((col, v.as_str())).or_insert(row);
                }
            }
        }
        for ((col, v), row) in values {
            for (at, len) in self.search(v.as_bytes(), allowed) {
                found.push(format!(
                    "{len} bytes at character {at} of column {col} in row {row}"
                ));
            }
        }
        for (k, v) in trace.metadata.to_key_values() {
            for (at, len) in self.search(v.as_bytes(), allowed) {
                found.push(format!("{len} bytes at character {at} of metadata {k}"));
            }
        }
        Ok(found)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn keyed_hashes_depend_on_salt_and_domain() {
        let a = Keys::new(Some("s1"));
        let b = Keys::new(Some("s2"));
        assert_eq!(
            a.id64("session", "x"),
            Keys::new(Some("s1")).id64("session", "x")
        );
        assert_ne!(a.id64("session", "x"), b.id64("session", "x"));
        assert_ne!(a.id64("session", "x"), a.id64("user", "x"));
        assert_eq!(Keys::hex(a.id64("session", "x")).len(), 16);
        let r1 = Keys::new(None);
        let r2 = Keys::new(None);
        assert_ne!(r1.id64("session", "x"), r2.id64("session", "x"));
    }

    #[test]
    fn block_hashes_chain() {
        let k = Keys::new(Some("s"));
        let a = k.blocks(&[1, 2, 3, 4, 5], 2);
        let b = k.blocks(&[1, 2, 3, 4, 9, 9], 2);
        assert_eq!(a.len(), 2);
        assert_eq!(a[..], b[..2]);
        assert_ne!(k.blocks(&[7, 7, 3, 4], 2)[1], a[1]);
        assert!(k.blocks(&[1], 0).is_empty());
    }

    #[test]
    fn leak_search_finds_whole_and_cut_strings_but_excuses_allowed_text() {
        let mut check = LeakCheck::default();
        let mut fps = Vec::new();
        fingerprints("alice@example.com", &mut fps);
        fingerprints(
            "a long message that goes on for more than thirty-two bytes",
            &mut fps,
        );
        fingerprints("gpt-4o-mini", &mut fps);
        fingerprints("short", &mut fps);
        check.add(fps);
        assert_eq!(check.distinct(), 4);
        assert_eq!(check.search(b"xx alice@example.com yy", &[]), [(3, 17)]);
        assert!(check.search(b"alice@example.co", &[]).is_empty());
        assert_eq!(
            check.search(b"..a long message that goes on for mo..", &[]),
            [(2, 32)]
        );
        assert_eq!(check.search(b"model gpt-4o-mini", &[]), [(6, 11)]);
        let excused = check.search(b"model gpt-4o-mini", &[b"gpt-4o-mini-2024"]);
        assert!(excused.is_empty());
        assert!(check.search(b"short", &[]).is_empty());
    }

    #[test]
    fn a_trace_holding_a_content_string_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.parquet");
        let mut w = crate::trace::TraceWriter::create(&path).unwrap();
        w.write(&crate::trace::TraceRecord {
            request_id: "line1".into(),
            request_kind: Some("zelda.quistgaard@example.org".into()),
            source_row: 1,
            ..Default::default()
        })
        .unwrap();
        w.finish(crate::trace::TraceMetadata::new("openai-log"))
            .unwrap();
        let mut check = LeakCheck::default();
        let mut fps = Vec::new();
        fingerprints("zelda.quistgaard@example.org", &mut fps);
        check.add(fps);
        let found = check.search_trace(&path, &[]).unwrap();
        assert!(
            found.contains(&"28 bytes at character 0 of column request_kind in row 0".to_owned()),
            "{found:?}"
        );
        let mut other = LeakCheck::default();
        let mut fps = Vec::new();
        fingerprints("nobody@example.org", &mut fps);
        other.add(fps);
        assert!(other.search_trace(&path, &[]).unwrap().is_empty());
    }

    #[test]
    fn report_lists_fields_by_treatment_and_folds_odd_names() {
        let mut r = ScrubReport::default();
        r.saw("messages", Treatment::Tokenized);
        r.saw("api_key", Treatment::Dropped);
        r.saw("session_id", Treatment::Hashed);
        r.saw("a name with spaces", Treatment::Dropped);
        let t = r.by_treatment();
        assert_eq!(t[&Treatment::Dropped], ["<other>", "api_key"]);
        assert_eq!(t[&Treatment::Hashed], ["session_id"]);
        assert!(r.render().contains("replaced by keyed hashes  session_id"));
    }
}
