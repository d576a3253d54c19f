//! Compression detection and pipelined decompression.
//!
//! Layer streams arrive plain, gzip- or zstd-compressed; the format is recognised by its magic
//! bytes, never by a name or a flag. Decompression runs on its own thread and hands the apply
//! loop fixed-size chunks through a bounded pipe ([`super::pipe`]: at most
//! [`super::pipe::DEPTH`] chunks of [`super::pipe::CHUNK`] bytes in flight, buffers recycled),
//! so both cores work and memory stays bounded whatever the layer's size. Decompression happens in-process: no helper binary is ever executed.

use std::io::{self, Cursor, Read};

use super::Error;

/// A recognised stream format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// An uncompressed tar.
    None,
    /// gzip (possibly several members).
    Gzip,
    /// zstd (possibly several frames).
    Zstd,
}

/// Recognises the format from the first bytes of a stream. bzip2 and xz are recognised only
/// to be refused with a clear message.
pub fn detect(head: &[u8]) -> Result<Compression, Error> {
    let unsupported = |what: &str| Error::Stream {
        offset: 0,
        detail: format!("{what}-compressed layers are not supported (use plain tar, gzip or zstd)"),
    };
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Compression::Gzip)
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Ok(Compression::Zstd)
    } else if head.starts_with(b"BZh") {
        Err(unsupported("bzip2"))
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Err(unsupported("xz"))
    } else {
        Ok(Compression::None)
    }
}

/// Reads up to `buf.len()` bytes, stopping only at end of stream.
fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Detects the format of `input` and returns a reader of the uncompressed bytes.
pub fn decoder<'a>(
    mut input: Box<dyn Read + Send + 'a>,
) -> Result<(Compression, Box<dyn Read + Send + 'a>), Error> {
    let mut head = [0u8; 6];
    let n = read_full(&mut input, &mut head).map_err(|e| Error::io("reading the layer", e))?;
    let kind = detect(&head[..n])?;
    let whole = Cursor::new(head[..n].to_vec()).chain(input);
    let out: Box<dyn Read + Send + 'a> = match kind {
        Compression::None => Box::new(whole),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(whole)),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::new(whole)
                .map_err(|e| Error::io("starting zstd decompression", e))?,
        ),
    };
    Ok((kind, out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn roundtrip(data: &[u8], compressed: Vec<u8>, want: Compression) {
        let (kind, mut r) = decoder(Box::new(Cursor::new(compressed))).unwrap();
        assert_eq!(kind, want);
        let (w, mut pipe) = super::super::pipe::pipe();
        let out = std::thread::scope(|s| {
            s.spawn(move || w.copy_from(&mut r));
            let mut out = Vec::new();
            pipe.read_to_end(&mut out).unwrap();
            out
        });
        assert_eq!(out, data);
    }

    #[test]
    fn detects_and_decompresses() {
        let data: Vec<u8> = (0..3 * super::super::pipe::CHUNK + 17)
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        roundtrip(&data, data.clone(), Compression::None);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&data).unwrap();
        roundtrip(&data, gz.finish().unwrap(), Compression::Gzip);
        let zs = zstd::encode_all(data.as_slice(), 1).unwrap();
        roundtrip(&data, zs, Compression::Zstd);
        roundtrip(b"", Vec::new(), Compression::None);
    }

    #[test]
    fn refuses_bzip2_and_xz() {
        assert!(detect(b"BZh91AY")
            .unwrap_err()
            .to_string()
            .contains("bzip2"));
        assert!(detect(&[0xfd, b'7', b'z', b'X', b'Z', 0])
            .unwrap_err()
            .to_string()
            .contains("xz"));
    }

    #[test]
    fn corrupt_gzip_is_an_error() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&[7u8; 10000]).unwrap();
        let mut bytes = gz.finish().unwrap();
        let n = bytes.len();
        bytes[n - 6] ^= 0xff; // break the CRC
        let (_, mut r) = decoder(Box::new(Cursor::new(bytes))).unwrap();
        let mut out = Vec::new();
        assert!(r.read_to_end(&mut out).is_err());
    }
}
