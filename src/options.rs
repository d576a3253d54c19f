//! Driver options (`strata -o KEY=VALUE`, the plugin's `Init` options) and per-layer storage
//! options (`create -s KEY=VALUE`, Docker's `--storage-opt`). Keys are case-insensitive, as in
//! Docker's drivers; an unknown key is an error naming it, never silently ignored.

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::units::ram_in_bytes;

/// Options that apply to the whole driver.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DriverOptions {
    /// Default size limit for read-write layers, in bytes (`size=`).
    pub size: Option<u64>,
    /// overlay: compute changes and diffs from the layer's own directory (`native_diff=`,
    /// default true) instead of comparing mounted trees.
    pub native_diff: Option<bool>,
    /// block: append a fixed-VHD footer to read-only layer images (`vhd=`, default false).
    pub vhd: Option<bool>,
}

/// Options of one layer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StorageOptions {
    /// Size limit of the layer, in bytes (`size=`).
    pub size: Option<u64>,
}

fn parse_size(key: &str, value: &str) -> Result<u64> {
    ram_in_bytes(value).map_err(|e| Error::InvalidOption {
        key: key.to_string(),
        reason: e.to_string(),
    })
}

fn parse_bool(key: &str, value: &str) -> Result<bool> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(Error::InvalidOption {
            key: key.to_string(),
            reason: format!("{value:?} is not true or false"),
        }),
    }
}

/// Splits `KEY=VALUE`; a missing `=` is an error naming the argument.
pub fn split_kv(arg: &str) -> Result<(String, String)> {
    match arg.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
        _ => Err(Error::InvalidOption {
            key: arg.to_string(),
            reason: "expected KEY=VALUE".into(),
        }),
    }
}

/// The driver options each driver knows.
pub fn known_for(driver: &str) -> &'static [&'static str] {
    match driver {
        "vfs" => &["size"],
        "overlay" => &["size", "native_diff"],
        "block" => &["size", "vhd"],
        _ => &["size", "native_diff", "vhd"],
    }
}

impl DriverOptions {
    /// Parses driver options given as `KEY=VALUE` strings. Known keys: `size`, `native_diff`,
    /// `vhd`.
    pub fn parse<S: AsRef<str>>(args: &[S]) -> Result<Self> {
        let mut out = DriverOptions::default();
        for arg in args {
            let (key, value) = split_kv(arg.as_ref())?;
            match key.to_ascii_lowercase().as_str() {
                "size" => out.size = Some(parse_size(&key, &value)?),
                "native_diff" => out.native_diff = Some(parse_bool(&key, &value)?),
                "vhd" => out.vhd = Some(parse_bool(&key, &value)?),
                _ => {
                    return Err(Error::InvalidOption {
                        key,
                        reason: "unknown driver option (known: size, native_diff, vhd)".into(),
                    })
                }
            }
        }
        Ok(out)
    }

    /// Parses the options given for a store of `driver` into their canonical form
    /// (lowercase key → `size` in bytes, booleans as `true`/`false`), the form a store records.
    /// An option the driver does not know is refused, naming the driver and its options; a
    /// key given twice with different values is refused.
    pub fn canonical_for<S: AsRef<str>>(
        driver: &str,
        args: &[S],
    ) -> Result<BTreeMap<String, String>> {
        let known = known_for(driver);
        let mut out = BTreeMap::new();
        for arg in args {
            let (key, value) = split_kv(arg.as_ref())?;
            let lower = key.to_ascii_lowercase();
            if !known.contains(&lower.as_str()) {
                return Err(Error::InvalidOption {
                    key,
                    reason: format!(
                        "unknown driver option for the {driver} driver (known: {})",
                        known.join(", ")
                    ),
                });
            }
            let canonical = match lower.as_str() {
                "size" => parse_size(&key, &value)?.to_string(),
                _ => parse_bool(&key, &value)?.to_string(),
            };
            if let Some(prev) = out.insert(lower.clone(), canonical.clone()) {
                if prev != canonical {
                    return Err(Error::InvalidOption {
                        key,
                        reason: format!("given twice, as {prev} and {canonical}"),
                    });
                }
            }
        }
        Ok(out)
    }

    /// The options of a canonical map (as recorded by a store).
    pub fn from_canonical(map: &BTreeMap<String, String>) -> Result<Self> {
        let args: Vec<String> = map.iter().map(|(k, v)| format!("{k}={v}")).collect();
        DriverOptions::parse(&args)
    }
}

impl StorageOptions {
    /// Parses a layer's storage options. Known keys: `size`.
    pub fn parse(map: &BTreeMap<String, String>) -> Result<Self> {
        let mut out = StorageOptions::default();
        for (key, value) in map {
            match key.to_ascii_lowercase().as_str() {
                "size" => out.size = Some(parse_size(key, value)?),
                _ => {
                    return Err(Error::InvalidOption {
                        key: key.clone(),
                        reason: "unknown storage option (known: size)".into(),
                    })
                }
            }
        }
        Ok(out)
    }

    /// Whether no option is set.
    pub fn is_empty(&self) -> bool {
        self.size.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driver_options() {
        assert_eq!(
            DriverOptions::parse(&["size=1G"]).unwrap().size,
            Some(1 << 30)
        );
        assert_eq!(DriverOptions::parse(&["SIZE=2k"]).unwrap().size, Some(2048));
        let e = DriverOptions::parse(&["colour=blue"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"colour\""), "{e}");
        let e = DriverOptions::parse(&["size"]).unwrap_err().to_string();
        assert!(e.contains("KEY=VALUE"), "{e}");
        let e = DriverOptions::parse(&["size=lots"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"size\"") && e.contains("lots"), "{e}");
    }

    #[test]
    fn canonical_options_per_driver() {
        let m = DriverOptions::canonical_for("block", &["VHD=yes", "size=1k"]).unwrap();
        assert_eq!(m.get("vhd").map(String::as_str), Some("true"));
        assert_eq!(m.get("size").map(String::as_str), Some("1024"));
        assert_eq!(DriverOptions::from_canonical(&m).unwrap().vhd, Some(true));
        let e = DriverOptions::canonical_for("overlay", &["vhd=true"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"vhd\"") && e.contains("overlay"), "{e}");
        assert!(!e.contains("known: size, native_diff, vhd"), "{e}");
        assert!(e.contains("known: size, native_diff"), "{e}");
        let e = DriverOptions::canonical_for("vfs", &["size=1k", "size=2k"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("twice"), "{e}");
    }

    #[test]
    fn storage_options() {
        let mut m = BTreeMap::new();
        m.insert("Size".to_string(), "50M".to_string());
        assert_eq!(StorageOptions::parse(&m).unwrap().size, Some(52_428_800));
        m.insert("mountopt".to_string(), "x".to_string());
        let e = StorageOptions::parse(&m).unwrap_err().to_string();
        assert!(e.contains("\"mountopt\""), "{e}");
    }
}
