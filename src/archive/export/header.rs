//! Encoding one entry's header block(s): the ustar header, preceded by a PAX extended header
//! when a value does not fit or there are records (xattrs, sparse maps) to carry.

use std::io::{self, Write};

use tar::{EntryType, Header};

use super::{Error, BLOCK, MAX_OCTAL_12, MAX_OCTAL_8};
use crate::archive::fsmeta::Xattr;
use crate::archive::walk::Info;

/// Zero bytes needed after `len` bytes of data to reach a block boundary.
pub(super) fn padding(len: u64) -> usize {
    // The remainder is < 512, so the cast is lossless.
    ((BLOCK as u64 - len % BLOCK as u64) % BLOCK as u64) as usize
}

/// Everything that goes into one entry's header block(s).
#[derive(Clone, Copy)]
pub(super) struct Hdr<'a> {
    pub(super) name: &'a [u8],
    pub(super) kind: EntryType,
    pub(super) mode: u32,
    pub(super) uid: u64,
    pub(super) gid: u64,
    pub(super) mtime: i64,
    pub(super) size: u64,
    pub(super) link: &'a [u8],
    pub(super) dev: (u32, u32),
    pub(super) xattrs: &'a [Xattr],
    /// Further PAX records (the sparse map's), as (key, value).
    pub(super) extra: &'a [(Vec<u8>, Vec<u8>)],
}

impl<'a> Hdr<'a> {
    /// A size-0 entry named `name` with the owner, mode and mtime of `info`.
    pub(super) fn new(name: &'a [u8], info: &Info) -> Self {
        Hdr {
            name,
            kind: EntryType::Regular,
            mode: info.perm(),
            uid: info.uid.into(),
            gid: info.gid.into(),
            mtime: info.mtime.sec,
            size: 0,
            link: b"",
            dev: (0, 0),
            xattrs: &[],
            extra: &[],
        }
    }
}

pub(super) fn write_header(out: &mut impl Write, hdr: &Hdr<'_>, shown: &str) -> Result<(), Error> {
    let blocks =
        encode(hdr).map_err(|e| Error::io(format!("encoding the header of {shown}"), e))?;
    out.write_all(&blocks)
        .map_err(|e| Error::io(format!("writing {shown} to the layer tar"), e))
}

/// Encodes the header block of `h`, preceded by a PAX extended header when a value does not
/// fit the ustar fields or there are xattrs to record.
pub(super) fn encode(h: &Hdr<'_>) -> io::Result<Vec<u8>> {
    let mut pax: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut header = Header::new_ustar();
    header.set_entry_type(h.kind);
    header.set_mode(h.mode & 0o7777);

    let mut num = |key: &str, value: u64, max: u64| -> u64 {
        if value <= max {
            value
        } else {
            pax.push((key.as_bytes().to_vec(), value.to_string().into_bytes()));
            0
        }
    };
    header.set_uid(num("uid", h.uid, MAX_OCTAL_8));
    header.set_gid(num("gid", h.gid, MAX_OCTAL_8));
    header.set_size(num("size", h.size, MAX_OCTAL_12));
    match u64::try_from(h.mtime) {
        Ok(t) if t <= MAX_OCTAL_12 => header.set_mtime(t),
        _ => pax.push((b"mtime".to_vec(), h.mtime.to_string().into_bytes())),
    }
    let (major, minor) = (u64::from(h.dev.0), u64::from(h.dev.1));
    if major > MAX_OCTAL_8 || minor > MAX_OCTAL_8 {
        return Err(io::Error::other(format!(
            "device number {major}:{minor} does not fit a tar header"
        )));
    }
    header.set_device_major(h.dev.0)?;
    header.set_device_minor(h.dev.1)?;

    let ustar = header
        .as_ustar_mut()
        .ok_or_else(|| io::Error::other("not a ustar header"))?;
    match split_ustar_path(h.name) {
        Some((prefix, name)) => {
            ustar.prefix[..prefix.len()].copy_from_slice(prefix);
            ustar.name[..name.len()].copy_from_slice(name);
        }
        None if h.name.len() <= ustar.name.len() => {
            ustar.name[..h.name.len()].copy_from_slice(h.name);
        }
        None => {
            let n = ustar.name.len();
            ustar.name.copy_from_slice(&h.name[..n]);
            pax.push((b"path".to_vec(), h.name.to_vec()));
        }
    }
    if h.link.len() <= ustar.linkname.len() {
        ustar.linkname[..h.link.len()].copy_from_slice(h.link);
    } else {
        let n = ustar.linkname.len();
        ustar.linkname.copy_from_slice(&h.link[..n]);
        pax.push((b"linkpath".to_vec(), h.link.to_vec()));
    }
    for (name, value) in h.xattrs {
        let mut key = b"SCHILY.xattr.".to_vec();
        key.extend_from_slice(name);
        pax.push((key, value.clone()));
    }
    pax.extend(h.extra.iter().cloned());
    header.set_cksum();

    let mut out = Vec::with_capacity(3 * BLOCK);
    if !pax.is_empty() {
        pax.sort();
        let mut data = Vec::new();
        for (key, value) in &pax {
            pax_record(&mut data, key, value);
        }
        let mut xh = Header::new_ustar();
        xh.set_entry_type(EntryType::XHeader);
        xh.set_mode(0);
        xh.set_uid(0);
        xh.set_gid(0);
        xh.set_size(data.len() as u64);
        xh.set_device_major(0)?;
        xh.set_device_minor(0)?;
        let xname = pax_header_name(h.name);
        let xu = xh
            .as_ustar_mut()
            .ok_or_else(|| io::Error::other("not a ustar header"))?;
        xu.name[..xname.len()].copy_from_slice(&xname);
        xh.set_cksum();
        out.extend_from_slice(xh.as_bytes());
        out.extend_from_slice(&data);
        out.resize(out.len() + padding(data.len() as u64), 0);
    }
    out.extend_from_slice(header.as_bytes());
    Ok(out)
}

/// Appends one PAX record, `"<len> <key>=<value>\n"`, where `<len>` counts the whole record
/// including its own digits.
pub(super) fn pax_record(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    let body = key.len() + value.len() + 3; // ' ', '=', '\n'
    let digits = |n: usize| n.to_string().len();
    let mut len = body + digits(body);
    while len != body + digits(len) {
        len = body + digits(len);
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// Splits a name longer than 100 bytes into ustar `prefix` (≤ 155) and `name` (≤ 100) at a
/// `/`, as Go's `splitUSTARPath` does; `None` if it fits `name` alone or cannot be split.
pub(super) fn split_ustar_path(name: &[u8]) -> Option<(&[u8], &[u8])> {
    const NAME: usize = 100;
    const PREFIX: usize = 155;
    let mut len = name.len();
    if len <= NAME {
        return None;
    } else if len > PREFIX + 1 {
        len = PREFIX + 1;
    } else if name[len - 1] == b'/' {
        len -= 1;
    }
    let i = name[..len].iter().rposition(|b| *b == b'/')?;
    let suffix = name.len() - i - 1;
    if i == 0 || suffix == 0 || suffix > NAME || i > PREFIX {
        return None;
    }
    Some((&name[..i], &name[i + 1..]))
}

/// The name of the extended header for `name`: `<dir>/PaxHeaders.0/<base>`, ASCII only,
/// at most 100 bytes (Go's convention; readers ignore it).
pub(super) fn pax_header_name(name: &[u8]) -> Vec<u8> {
    let trimmed = name.strip_suffix(b"/").unwrap_or(name);
    let (dir, base) = match trimmed.iter().rposition(|b| *b == b'/') {
        Some(i) => (&trimmed[..=i], &trimmed[i + 1..]),
        None => (&b""[..], trimmed),
    };
    let mut out: Vec<u8> = [dir, b"PaxHeaders.0/", base].concat();
    out.retain(|b| b.is_ascii() && *b != 0);
    out.truncate(100);
    while out.last() == Some(&b'/') {
        out.pop();
    }
    out
}
