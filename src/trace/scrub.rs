//! The scrub report of a trace ingested from production logs: what was done
//! with each field, and what the leak check searched. `ingest openai-log`
//! fills it in; `inspect` and the ingest summary print it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What happened to a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Treatment {
    /// Written as it is (model name).
    Kept,
    /// Written as an offset from the first request (times).
    Offset,
    /// Read for token counts.
    Counted,
    /// Replaced by a keyed hash.
    Hashed,
    /// Tokenized for counts and prefix blocks, then dropped.
    Tokenized,
    /// Not written at all.
    Dropped,
}

/// Longest field name listed by name; longer or stranger ones are counted
/// under `<other>` (a key could itself be data).
const MAX_NAME: usize = 64;
/// Most distinct field names listed.
const MAX_NAMES: usize = 200;

/// What the scrub of a production log did, written to the trace metadata
/// (`llm_replay.scrub_report`) and printed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScrubReport {
    /// Records whose fields were seen.
    pub records: u64,
    /// Each field seen (dotted path), with how many records had it and what
    /// was done with it.
    pub fields: BTreeMap<String, (u64, Treatment)>,
    /// Whether the salt was given (ids match other ingests with the same
    /// salt) or random.
    pub salt: String,
    /// Whether the absolute start time was written.
    pub t0_written: bool,
    /// Distinct content strings (8 characters or more) looked for in the
    /// output.
    pub strings_checked: u64,
    /// Places where one was found (the ingest fails when this is not 0).
    pub strings_found: u64,
    /// Where the search looked.
    pub searched: Vec<String>,
}

impl ScrubReport {
    /// Notes that one record had `field`, treated as `t`.
    pub fn saw(&mut self, field: &str, t: Treatment) {
        let plain = field.len() <= MAX_NAME
            && field
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-@$".contains(&b));
        let name = if plain && (self.fields.len() < MAX_NAMES || self.fields.contains_key(field)) {
            field
        } else {
            "<other>"
        };
        match self.fields.get_mut(name) {
            Some((n, old)) => {
                *n += 1;
                // A field used in one record and dropped in another is
                // listed by its use.
                if *old == Treatment::Dropped {
                    *old = t;
                }
            }
            None => {
                self.fields.insert(name.to_owned(), (1, t));
            }
        }
    }

    /// The fields of each treatment, for printing.
    pub fn by_treatment(&self) -> BTreeMap<Treatment, Vec<&str>> {
        let mut out: BTreeMap<Treatment, Vec<&str>> = BTreeMap::new();
        for (name, (_, t)) in &self.fields {
            out.entry(*t).or_default().push(name);
        }
        out
    }

    /// Human-readable lines.
    pub fn render(&self) -> String {
        let mut out = format!(
            "scrub report: {} records, {} distinct fields\n",
            self.records,
            self.fields.len()
        );
        let label = |t: Treatment| match t {
            Treatment::Kept => "kept as is",
            Treatment::Offset => "kept as offsets",
            Treatment::Counted => "read for token counts",
            Treatment::Hashed => "replaced by keyed hashes",
            Treatment::Tokenized => "tokenized, then dropped",
            Treatment::Dropped => "dropped",
        };
        for (t, names) in self.by_treatment() {
            out.push_str(&format!("  {:<26}{}\n", label(t), names.join(", ")));
        }
        out.push_str(&format!("  {:<26}{}\n", "salt", self.salt));
        out.push_str(&format!(
            "  {:<26}{}\n",
            "absolute start time",
            if self.t0_written {
                "written (--keep-t0)"
            } else {
                "not written"
            }
        ));
        out.push_str(&format!(
            "  {:<26}{} distinct content strings of 8+ characters searched in {}: {}\n",
            "leak check",
            self.strings_checked,
            self.searched.join(" and "),
            if self.strings_found == 0 {
                "none found".to_owned()
            } else {
                format!("{} FOUND", self.strings_found)
            }
        ));
        out
    }
}
