//! Parsing the CLI's text output: `ls` lines and `changes` lines.

/// One line of `strata ls`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LsEntry {
    pub id: String,
    /// `None` when the column is `-`.
    pub parent: Option<String>,
    pub kind: String,
    pub size: String,
    pub mounted: String,
}

impl LsEntry {
    /// Interprets the `mounted` column. Accepted spellings (an assumption; the spec does not fix
    /// them): `true`/`yes`/`mounted`/a positive reference count for mounted, and
    /// `false`/`no`/`-`/`0`/`unmounted` for not mounted. Anything else fails the test.
    pub fn is_mounted(&self) -> bool {
        let m = self.mounted.to_ascii_lowercase();
        match m.as_str() {
            "true" | "yes" | "mounted" | "y" => true,
            "false" | "no" | "-" | "unmounted" | "n" => false,
            _ => match m.parse::<u64>() {
                Ok(n) => n > 0,
                Err(_) => panic!("unrecognised `mounted` column in ls: {self:?}"),
            },
        }
    }
}

/// Parses `strata ls` text output.
pub fn parse_ls(text: &str) -> Vec<LsEntry> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(
                f.len(),
                5,
                "ls line must have 5 columns (id parent kind size mounted): {l:?}"
            );
            LsEntry {
                id: f[0].to_string(),
                parent: (f[1] != "-").then(|| f[1].to_string()),
                kind: f[2].to_string(),
                size: f[3].to_string(),
                mounted: f[4].to_string(),
            }
        })
        .collect()
}

/// Kind of a change, with Docker's codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ChangeKind {
    Modify,
    Add,
    Delete,
}

impl ChangeKind {
    /// Docker's numeric code: Modify 0, Add 1, Delete 2.
    pub fn code(self) -> u64 {
        match self {
            ChangeKind::Modify => 0,
            ChangeKind::Add => 1,
            ChangeKind::Delete => 2,
        }
    }

    /// The letter of the text output: C, A, D.
    pub fn letter(self) -> char {
        match self {
            ChangeKind::Modify => 'C',
            ChangeKind::Add => 'A',
            ChangeKind::Delete => 'D',
        }
    }

    pub fn from_letter(c: char) -> Option<Self> {
        match c {
            'C' => Some(ChangeKind::Modify),
            'A' => Some(ChangeKind::Add),
            'D' => Some(ChangeKind::Delete),
            _ => None,
        }
    }

    pub fn from_code(c: u64) -> Option<Self> {
        match c {
            0 => Some(ChangeKind::Modify),
            1 => Some(ChangeKind::Add),
            2 => Some(ChangeKind::Delete),
            _ => None,
        }
    }
}

/// One change: absolute path and kind.
pub type Change = (String, ChangeKind);

/// Parses `strata changes` text output (`A /path`, one per line; the path may contain spaces).
pub fn parse_changes(text: &str) -> Vec<Change> {
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let mut chars = l.chars();
            let letter = chars.next().unwrap();
            let kind = ChangeKind::from_letter(letter)
                .unwrap_or_else(|| panic!("bad change letter in {l:?}"));
            let rest = chars.as_str();
            let path = rest
                .strip_prefix(' ')
                .unwrap_or_else(|| panic!("change line must be \"X /path\": {l:?}"));
            assert!(path.starts_with('/'), "change path must be absolute: {l:?}");
            (path.to_string(), kind)
        })
        .collect()
}

/// Sorted copy of a change list, by (path, kind).
pub fn sorted_changes(mut v: Vec<Change>) -> Vec<Change> {
    v.sort();
    v
}
