//! A raw tar writer for hostile archives: names, link targets, sizes and type flags are
//! written verbatim (the `tar` crate refuses `..` and absolute names), with PAX and GNU
//! long-name records, and headers that can lie.

/// Regular file type flag.
pub const REG: u8 = b'0';
/// Hard link.
pub const LNK: u8 = b'1';
/// Symbolic link.
pub const SYM: u8 = b'2';
/// Character device.
pub const CHR: u8 = b'3';
/// Block device.
pub const BLK: u8 = b'4';
/// Directory.
pub const DIR: u8 = b'5';
/// Fifo.
pub const FIFO: u8 = b'6';

/// The fields of one ustar header.
#[derive(Debug, Clone)]
pub struct Hdr {
    pub name: Vec<u8>,
    pub typ: u8,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub size: u64,
    pub mtime: u64,
    pub link: Vec<u8>,
    pub major: u32,
    pub minor: u32,
}

impl Hdr {
    /// A header for `name` of type `typ`, mode 0644 (0755 for directories), root-owned.
    pub fn new(name: &[u8], typ: u8) -> Hdr {
        Hdr {
            name: name.to_vec(),
            typ,
            mode: if typ == DIR { 0o755 } else { 0o644 },
            uid: 0,
            gid: 0,
            size: 0,
            mtime: 1_600_000_000,
            link: Vec::new(),
            major: 0,
            minor: 0,
        }
    }

    /// The 512-byte block (names longer than the fields are truncated: use PAX or GNU
    /// records for them).
    pub fn block(&self) -> [u8; 512] {
        let mut b = [0u8; 512];
        let n = self.name.len().min(100);
        b[..n].copy_from_slice(&self.name[..n]);
        octal(&mut b[100..108], self.mode as u64);
        octal(&mut b[108..116], self.uid);
        octal(&mut b[116..124], self.gid);
        octal(&mut b[124..136], self.size);
        octal(&mut b[136..148], self.mtime);
        b[156] = self.typ;
        let l = self.link.len().min(100);
        b[157..157 + l].copy_from_slice(&self.link[..l]);
        b[257..263].copy_from_slice(b"ustar\0");
        b[263..265].copy_from_slice(b"00");
        octal(&mut b[329..337], self.major as u64);
        octal(&mut b[337..345], self.minor as u64);
        set_checksum(&mut b);
        b
    }
}

fn octal(field: &mut [u8], v: u64) {
    let digits = field.len() - 1;
    let s = format!("{v:0digits$o}");
    assert!(s.len() <= digits, "{v} does not fit {digits} octal digits");
    field[..digits].copy_from_slice(s.as_bytes());
    field[digits] = 0;
}

/// Recomputes a header block's checksum.
pub fn set_checksum(b: &mut [u8; 512]) {
    b[148..156].copy_from_slice(b"        ");
    let sum: u32 = b.iter().map(|x| *x as u32).sum();
    let s = format!("{sum:06o}\0 ");
    b[148..156].copy_from_slice(s.as_bytes());
}

/// PAX records `"<len> <key>=<value>\n"`.
pub fn pax_records(records: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (key, value) in records {
        let base = key.len() + value.len() + 3;
        let mut len = base + 1;
        while base + len.to_string().len() != len {
            len = base + len.to_string().len();
        }
        out.extend_from_slice(len.to_string().as_bytes());
        out.push(b' ');
        out.extend_from_slice(key.as_bytes());
        out.push(b'=');
        out.extend_from_slice(value);
        out.push(b'\n');
    }
    out
}

/// An archive being written.
#[derive(Default, Clone)]
pub struct Raw(pub Vec<u8>);

impl Raw {
    pub fn new() -> Raw {
        Raw(Vec::new())
    }

    /// Header, data, padding.
    pub fn entry(&mut self, h: &Hdr, data: &[u8]) -> &mut Self {
        self.0.extend_from_slice(&h.block());
        self.data(data)
    }

    /// Data plus padding to a block boundary.
    pub fn data(&mut self, data: &[u8]) -> &mut Self {
        self.0.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.0.extend(std::iter::repeat_n(0u8, pad));
        self
    }

    pub fn file(&mut self, name: &[u8], data: &[u8]) -> &mut Self {
        let mut h = Hdr::new(name, REG);
        h.size = data.len() as u64;
        self.entry(&h, data)
    }

    pub fn dir(&mut self, name: &[u8]) -> &mut Self {
        self.entry(&Hdr::new(name, DIR), b"")
    }

    pub fn symlink(&mut self, name: &[u8], target: &[u8]) -> &mut Self {
        let mut h = Hdr::new(name, SYM);
        h.mode = 0o777;
        h.link = target.to_vec();
        self.entry(&h, b"")
    }

    pub fn hardlink(&mut self, name: &[u8], target: &[u8]) -> &mut Self {
        let mut h = Hdr::new(name, LNK);
        h.link = target.to_vec();
        self.entry(&h, b"")
    }

    pub fn device(&mut self, name: &[u8], typ: u8, major: u32, minor: u32) -> &mut Self {
        let mut h = Hdr::new(name, typ);
        h.major = major;
        h.minor = minor;
        self.entry(&h, b"")
    }

    /// A PAX extended header for the next entry.
    pub fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
        let data = pax_records(records);
        let mut h = Hdr::new(b"PaxHeader", b'x');
        h.size = data.len() as u64;
        self.entry(&h, &data)
    }

    /// A GNU long-name (`L`) or long-link (`K`) record for the next entry.
    pub fn gnu_long(&mut self, typ: u8, value: &[u8]) -> &mut Self {
        let mut data = value.to_vec();
        data.push(0);
        let mut h = Hdr::new(b"././@LongLink", typ);
        h.size = data.len() as u64;
        self.entry(&h, &data)
    }

    /// The end-of-archive marker (two zero blocks).
    pub fn end(&mut self) -> &mut Self {
        self.0.extend(std::iter::repeat_n(0u8, 1024));
        self
    }

    /// The archive with its end-of-archive marker.
    pub fn finish(&self) -> Vec<u8> {
        let mut r = self.clone();
        r.end();
        r.0
    }
}
