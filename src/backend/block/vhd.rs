//! The fixed-VHD footer: 512 big-endian bytes appended to a raw disk image, which makes the
//! file a "fixed" VHD that Hyper-V (and `qemu-img -f vpc`) accept, while the data before it
//! stays a plain ext4 image that loop-mounts as is (with a size limit that leaves the footer
//! out). Layout per Microsoft's Virtual Hard Disk Image Format Specification (hard disk
//! footer format, CHS calculation).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// Length of the footer.
pub const FOOTER_LEN: u64 = 512;

const COOKIE: &[u8; 8] = b"conectix";
/// Seconds from the Unix epoch to the VHD epoch (2000-01-01 00:00 UTC).
const VHD_EPOCH: u64 = 946_684_800;

/// CHS geometry for a disk of `size` bytes, by the specification's algorithm (capped at
/// 65535 cylinders, 16 heads, 255 sectors per track).
pub fn geometry(size: u64) -> (u16, u8, u8) {
    let mut total = size / 512;
    if total > 65535 * 16 * 255 {
        total = 65535 * 16 * 255;
    }
    let (spt, heads, cth);
    if total >= 65535 * 16 * 63 {
        spt = 255;
        heads = 16;
        cth = total / spt;
    } else {
        let mut s = 17;
        let mut c = total / s;
        let mut h = c.div_ceil(1024);
        if h < 4 {
            h = 4;
        }
        if c >= h * 1024 || h > 16 {
            s = 31;
            h = 16;
            c = total / s;
        }
        if c >= h * 1024 {
            s = 63;
            h = 16;
            c = total / s;
        }
        spt = s;
        heads = h;
        cth = c;
    }
    ((cth / heads) as u16, heads as u8, spt as u8)
}

/// The footer of a fixed disk of `size` bytes, created at `unix_time`, with `unique_id`.
/// Creator `win ` (so readers take the size from the footer, not the geometry).
pub fn footer(size: u64, unique_id: [u8; 16], unix_time: u64) -> [u8; 512] {
    let mut f = [0u8; 512];
    f[0..8].copy_from_slice(COOKIE);
    f[8..12].copy_from_slice(&2u32.to_be_bytes()); // features: reserved bit
    f[12..16].copy_from_slice(&0x0001_0000u32.to_be_bytes()); // format version 1.0
    f[16..24].copy_from_slice(&u64::MAX.to_be_bytes()); // data offset: none (fixed disk)
    let ts = unix_time.saturating_sub(VHD_EPOCH).min(u32::MAX as u64) as u32;
    f[24..28].copy_from_slice(&ts.to_be_bytes());
    f[28..32].copy_from_slice(b"win ");
    f[32..36].copy_from_slice(&0x000a_0000u32.to_be_bytes()); // creator version 10.0
    f[36..40].copy_from_slice(b"Wi2k");
    f[40..48].copy_from_slice(&size.to_be_bytes()); // original size
    f[48..56].copy_from_slice(&size.to_be_bytes()); // current size
    let (c, h, s) = geometry(size);
    f[56..58].copy_from_slice(&c.to_be_bytes());
    f[58] = h;
    f[59] = s;
    f[60..64].copy_from_slice(&2u32.to_be_bytes()); // disk type: fixed
    f[68..84].copy_from_slice(&unique_id);
    let sum = checksum(&f);
    f[64..68].copy_from_slice(&sum.to_be_bytes());
    f
}

/// One's complement of the byte sum of the footer, its checksum field counted as zero.
pub fn checksum(f: &[u8; 512]) -> u32 {
    let sum = f
        .iter()
        .enumerate()
        .filter(|(i, _)| !(64..68).contains(i))
        .fold(0u32, |acc, (_, b)| acc.wrapping_add(*b as u32));
    !sum
}

/// Appends a footer to `file`, whose current length is the disk size (a multiple of 512).
pub fn append(file: &File, unique_id: [u8; 16], unix_time: u64) -> io::Result<()> {
    let size = file.metadata()?.len();
    if size % 512 != 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("a VHD disk size must be a multiple of 512 bytes, not {size}"),
        ));
    }
    file.write_all_at(&footer(size, unique_id, unix_time), size)
}

/// The disk size of `file` if it ends with a valid fixed-VHD footer (cookie and checksum).
pub fn disk_size(file: &File) -> io::Result<Option<u64>> {
    let len = file.metadata()?.len();
    if len < FOOTER_LEN {
        return Ok(None);
    }
    let mut f = [0u8; 512];
    file.read_exact_at(&mut f, len - FOOTER_LEN)?;
    if &f[0..8] != COOKIE {
        return Ok(None);
    }
    let stored = u32::from_be_bytes([f[64], f[65], f[66], f[67]]);
    if stored != checksum(&f) {
        return Ok(None);
    }
    Ok(Some(len - FOOTER_LEN))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_examples() {
        // 127 GiB and more: the maximum geometry.
        assert_eq!(geometry(200 << 30), (65535, 16, 255));
        // Small disks use 17 sectors per track and at least 4 heads.
        let (c, h, s) = geometry(16 << 20);
        assert_eq!((h, s), (4, 17));
        assert!((c as u64) * h as u64 * s as u64 <= (16 << 20) / 512);
        // 1 GiB: 63 sectors, 16 heads (well-known: 2080 cylinders).
        assert_eq!(geometry(1 << 30), (2080, 16, 63));
    }

    #[test]
    fn footer_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d");
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&p)
            .unwrap();
        f.set_len(4 << 20).unwrap();
        assert_eq!(disk_size(&f).unwrap(), None);
        append(&f, [7; 16], VHD_EPOCH + 5).unwrap();
        assert_eq!(f.metadata().unwrap().len(), (4 << 20) + 512);
        assert_eq!(disk_size(&f).unwrap(), Some(4 << 20));
        // A flipped byte breaks the checksum.
        f.write_all_at(&[0xff], (4 << 20) + 100).unwrap();
        assert_eq!(disk_size(&f).unwrap(), None);
    }
}
