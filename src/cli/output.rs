//! How the CLI prints results: plain text for people and scripts, JSON with `--json`.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use anyhow::{Context, Result};
use strata::archive::pathfmt;
use strata::graph::LayerInfo;
use strata::ChangeSet;

/// Prints a path followed by a newline, byte-exact.
pub fn path_line(out: &mut dyn Write, path: &Path) -> io::Result<()> {
    out.write_all(path.as_os_str().as_bytes())?;
    out.write_all(b"\n")
}

/// `Key: Value` lines, or a JSON object.
pub fn status(out: &mut dyn Write, pairs: &[(String, String)], json: bool) -> Result<()> {
    if json {
        let map: serde_json::Map<String, serde_json::Value> = pairs
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        writeln!(out, "{}", serde_json::Value::Object(map))?;
    } else {
        for (k, v) in pairs {
            writeln!(out, "{k}: {v}")?;
        }
    }
    Ok(())
}

/// A JSON object of strings.
pub fn metadata(out: &mut dyn Write, m: &BTreeMap<String, String>) -> Result<()> {
    writeln!(out, "{}", serde_json::to_string(m)?)?;
    Ok(())
}

/// A path a layer's content controls, escaped for output (text and JSON alike; see
/// [`strata::archive::pathfmt`]): no name can forge a line or lose bytes.
fn shown_path(path: &Path) -> String {
    pathfmt::escape(path.as_os_str().as_bytes())
}

/// `A /path` lines sorted by path, or Docker's JSON shape `[{"Path": .., "Kind": n}]`.
pub fn changes(out: &mut dyn Write, list: &ChangeSet, json: bool) -> Result<()> {
    // The set yields its changes in path order, one materialised path at a time.
    let sorted = list.iter();
    if json {
        // Streamed element by element: the whole array would hold every path at once.
        write!(out, "[")?;
        for (i, c) in sorted.enumerate() {
            let v = serde_json::json!({"Path": shown_path(&c.path), "Kind": c.kind.code()});
            write!(out, "{}{}", if i == 0 { "" } else { "," }, v)?;
        }
        writeln!(out, "]")?;
    } else {
        for c in sorted {
            writeln!(out, "{} {}", c.kind.letter(), shown_path(&c.path))?;
        }
    }
    Ok(())
}

/// One layer per line (`id parent kind size mounted`), or a JSON array.
pub fn ls(out: &mut dyn Write, layers: &[LayerInfo], json: bool) -> Result<()> {
    if json {
        writeln!(out, "{}", serde_json::to_string(layers)?)?;
        return Ok(());
    }
    for l in layers {
        writeln!(
            out,
            "{}\t{}\t{}\t{}\t{}",
            l.id,
            l.parent.as_deref().unwrap_or("-"),
            l.kind,
            l.size.map(|s| s.to_string()).unwrap_or_else(|| "-".into()),
            l.refs
        )?;
    }
    Ok(())
}

/// Writes a stream to `path`. A regular file (or a new one) is written through a temporary file
/// renamed into place, so a failed diff leaves no partial tar; anything else that exists — a
/// device such as `/dev/null`, a fifo, a terminal — is written in place, never replaced.
pub fn to_file(stream: &mut dyn Read, path: &Path) -> Result<()> {
    match std::fs::metadata(path) {
        Ok(md) if !md.file_type().is_file() && !md.is_dir() => {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .with_context(|| format!("opening {}", path.display()))?;
            io::copy(stream, &mut f).context("writing the diff")?;
            return Ok(());
        }
        _ => {}
    }
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .context("the output path has no file name")?;
    let tmp = dir.join(format!(
        ".{}.strata-tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| -> Result<()> {
        let mut f =
            std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        io::copy(stream, &mut f).context("writing the diff")?;
        f.sync_all().context("syncing the diff")?;
        std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
