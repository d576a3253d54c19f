//! Exporting a file with holes: only its data extents, found with `SEEK_DATA`/`SEEK_HOLE`,
//! as a PAX GNU sparse 1.0 entry (the format Go's `archive/tar`, GNU tar and strata's apply
//! read): the entry is named `<dir>/GNUSparseFile.0/<base>` with the real name in
//! `GNU.sparse.name` and the logical size in `GNU.sparse.realsize`; its data is the map
//! (see [`crate::archive::sparse::encode_data_map`]) followed by the extents' bytes.
//!
//! A file without holes is not affected: it is written in full, byte for byte as before.

use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};
use std::os::fd::BorrowedFd;

use rustix::fs::{seek, SeekFrom as RSeek};
use tar::EntryType;

use super::header::{padding, write_header, Hdr};
use super::{copy_n, Error, Rule, BLOCK};
use crate::archive::fsmeta::Xattr;
use crate::archive::sparse::{self, Segment};
use crate::archive::tarstream::Limits;
use crate::archive::walk::Info;

/// The data extents of a file of `size` bytes read through `fd`, or `None` when it has no
/// hole (then it is exported in full). Refused when the map would exceed what apply reads.
pub(super) fn data_extents(
    fd: BorrowedFd<'_>,
    size: u64,
    limits: &Limits,
    shown: &str,
) -> Result<Option<Vec<Segment>>, Error> {
    let err = |e: rustix::io::Errno| Error::io(format!("finding the holes of {shown}"), e);
    if size == 0 {
        return Ok(None);
    }
    // SEEK_HOLE moves the file offset: it is put back before the content is read.
    match seek(fd, RSeek::Hole(0)) {
        Ok(h) if h >= size => {
            seek(fd, RSeek::Start(0)).map_err(err)?;
            return Ok(None);
        }
        Ok(_) => {}
        // No SEEK_HOLE support: the file is read in full.
        Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::OPNOTSUPP) => return Ok(None),
        Err(e) => return Err(err(e)),
    }
    let cap = sparse::max_segments(limits.max_meta);
    let mut segments: Vec<Segment> = Vec::new();
    // Bytes the map takes in the data (count line, then two numbers per segment).
    let mut text = 2u64;
    let mut pos = 0u64;
    while pos < size {
        let start = match seek(fd, RSeek::Data(pos)) {
            Ok(d) => d,
            Err(rustix::io::Errno::NXIO) => break, // only a hole is left
            Err(e) => return Err(err(e)),
        };
        if start >= size {
            break;
        }
        let end = match seek(fd, RSeek::Hole(start)) {
            Ok(h) => h.min(size),
            Err(rustix::io::Errno::NXIO) => size,
            Err(e) => return Err(err(e)),
        };
        if end <= start {
            break;
        }
        push(
            &mut segments,
            &mut text,
            (start, end - start),
            cap,
            limits,
            shown,
        )?;
        pos = end;
    }
    if pos < size {
        // Ends in a hole: a last empty segment at the end, as GNU tar writes it (its
        // extractor sizes the file by the map, not by the real size).
        push(&mut segments, &mut text, (size, 0), cap, limits, shown)?;
    }
    Ok(Some(segments))
}

/// Adds a segment to the map unless the map would outgrow what apply reads.
fn push(
    segments: &mut Vec<Segment>,
    text: &mut u64,
    seg: Segment,
    cap: usize,
    limits: &Limits,
    shown: &str,
) -> Result<(), Error> {
    *text += (seg.0.to_string().len() + seg.1.to_string().len() + 2) as u64;
    if segments.len() >= cap || *text > limits.max_meta {
        return Err(Error::entry(
            shown,
            Rule::Limit,
            format!(
                "the file has more data extents than a sparse map apply reads can hold \
                 ({} bytes of map at most)",
                limits.max_meta
            ),
        ));
    }
    segments.push(seg);
    Ok(())
}

/// What names and describes the entry.
pub(super) struct Entry<'a> {
    /// Name in the layer (no leading `/`).
    pub(super) rel: &'a [u8],
    /// The file's metadata (from the open descriptor).
    pub(super) info: &'a Info,
    /// Exported extended attributes.
    pub(super) xattrs: &'a [Xattr],
    /// The path as shown in errors.
    pub(super) shown: &'a str,
}

/// Writes `file` as a sparse entry carrying `segments`.
pub(super) fn write(
    out: &mut impl Write,
    file: &mut File,
    entry: &Entry<'_>,
    segments: &[Segment],
    buf: &mut [u8],
) -> Result<(), Error> {
    let shown = entry.shown;
    let map = sparse::encode_data_map(segments);
    let data: u64 = segments.iter().map(|(_, len)| len).sum();
    let stored = map.len() as u64 + data;
    let name = header_name(entry.rel);
    let extra = [
        (b"GNU.sparse.major".to_vec(), b"1".to_vec()),
        (b"GNU.sparse.minor".to_vec(), b"0".to_vec()),
        (b"GNU.sparse.name".to_vec(), entry.rel.to_vec()),
        (
            b"GNU.sparse.realsize".to_vec(),
            entry.info.size.to_string().into_bytes(),
        ),
    ];
    let hdr = Hdr {
        kind: EntryType::Regular,
        size: stored,
        xattrs: entry.xattrs,
        extra: &extra,
        ..Hdr::new(&name, entry.info)
    };
    write_header(out, &hdr, shown)?;
    let write_err = |e| Error::io(format!("writing {shown} to the layer tar"), e);
    out.write_all(&map).map_err(write_err)?;
    for &(off, len) in segments {
        file.seek(SeekFrom::Start(off))
            .map_err(|e| Error::io(format!("reading {shown}"), e))?;
        copy_n(file, len, out, buf, shown)?;
    }
    // A file that shrank below its last extent has been caught by `copy_n`; one that grew
    // or lost its size since the map was made would be restored wrongly.
    let now = file
        .metadata()
        .map_err(|e| Error::io(format!("reading {shown}"), e))?;
    if now.len() != entry.info.size {
        return Err(Error::io(
            format!("reading {shown}"),
            io::Error::other(format!(
                "file changed size while being exported ({} → {} bytes)",
                entry.info.size,
                now.len()
            )),
        ));
    }
    out.write_all(&[0u8; BLOCK][..padding(stored)])
        .map_err(write_err)
}

/// `<dir>/GNUSparseFile.0/<base>`, the name GNU tar and Go give a 1.0 sparse entry, so a
/// reader that does not know the format extracts something visibly odd rather than a file
/// of the right name with the wrong content.
fn header_name(rel: &[u8]) -> Vec<u8> {
    let (dir, base) = match rel.iter().rposition(|b| *b == b'/') {
        Some(i) => (&rel[..=i], &rel[i + 1..]),
        None => (&b""[..], rel),
    };
    [dir, b"GNUSparseFile.0/", base].concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_names() {
        assert_eq!(header_name(b"a/b/c"), b"a/b/GNUSparseFile.0/c");
        assert_eq!(header_name(b"top"), b"GNUSparseFile.0/top");
    }
}
