//! The stream itself: PAX/ustar size disagreements, smuggled headers, truncation,
//! corruption, and resource limits.

use super::oracle::{rule, *};
use super::raw::*;

crate::backend_tests!(
    pax_size_wins_when_ustar_says_zero,
    pax_size_wins_when_ustar_says_more,
    headers_after_the_end_marker_are_not_applied,
    truncated_mid_header_is_refused,
    truncated_mid_data_is_refused,
    bad_header_checksum_is_refused,
    garbage_and_corrupt_compression_are_refused,
    byte_and_entry_limits_are_enforced,
    decompression_bomb_stops_at_the_byte_limit,
    oversized_pax_record_and_long_name_are_refused,
    huge_sparse_declared_size_is_refused,
    digest_mismatch_is_refused,
    missing_end_marker_is_refused,
    malformed_pax_records_are_refused,
);

/// A header block plus payload for a smuggled entry.
fn smuggled(env: &Env) -> Vec<u8> {
    let mut r = Raw::new();
    r.symlink(b"smuggled", env.v().as_bytes());
    r.file(format!("../{}", env.unique).as_bytes(), b"escaped");
    r.0
}

pub(crate) fn pax_size_wins_when_ustar_says_zero(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    // TARmageddon: the payload is a whole archive; a reader advancing by the ustar size
    // would apply it.
    let inner = smuggled(&env);
    let mut r = Raw::new();
    r.pax(&[("size", inner.len().to_string().as_bytes())]);
    let mut h = Hdr::new(b"carrier", REG);
    h.size = 0;
    r.0.extend_from_slice(&h.block());
    r.data(&inner);
    r.file(b"after", b"after");
    env.apply_ok(&r.finish(), |root| {
        file(root, "carrier", &inner);
        file(root, "after", b"after");
        absent(root, "smuggled");
    });
}

fn pax_size_wins_when_ustar_says_more(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    // The mirror image (tar-rs RUSTSEC-2026-0068): the ustar size claims the next blocks as
    // data, PAX says 0. PAX wins, so what follows is read as headers — as Go and tar-rs do.
    let mut r = Raw::new();
    r.pax(&[("size", b"0")]);
    let mut h = Hdr::new(b"carrier", REG);
    h.size = 1024;
    r.0.extend_from_slice(&h.block());
    r.file(b"next", b"seen as an entry");
    env.apply_ok(&r.finish(), |root| {
        file(root, "carrier", b"");
        file(root, "next", b"seen as an entry");
    });
}

fn headers_after_the_end_marker_are_not_applied(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    let mut r = Raw::new();
    r.file(b"real", b"r").end();
    r.0.extend_from_slice(&smuggled(&env));
    r.end();
    env.apply_ok(&r.0, |root| {
        file(root, "real", b"r");
        absent(root, "smuggled");
    });
}

fn truncated_mid_header_is_refused(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    let mut r = Raw::new();
    r.file(b"first", b"1");
    let cut = r.0.len() + 300;
    r.file(b"second", b"2");
    env.apply_err(&r.0[..cut], None, rule::FORMAT);
}

pub(crate) fn truncated_mid_data_is_refused(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    let mut r = Raw::new();
    r.file(b"first", b"1");
    r.file(b"big", &vec![7u8; 100_000]);
    let full = r.finish();
    let err = env.apply_err(&full[..512 * 3 + 40_000], Some("big"), "");
    crate::common::assert_mentions(&err, "big", "truncated payload");
}

fn bad_header_checksum_is_refused(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    let mut r = Raw::new();
    r.file(b"first", b"1");
    let at = r.0.len();
    r.file(b"second", b"2");
    r.0[at + 148] ^= 0x01; // one checksum digit off
    let mut tar = r.finish();
    env.apply_err(&tar, None, rule::FORMAT);
    tar[at + 148] ^= 0x01;
    tar[at] = b'X'; // name changed, checksum not updated
    env.apply_err(&tar, None, rule::FORMAT);
}

fn garbage_and_corrupt_compression_are_refused(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    let tar = Raw::new().file(b"a", &vec![1u8; 10_000]).finish();
    let mut gz = crate::common::tars::gzip(&tar);
    let mid = gz.len() / 2;
    for b in &mut gz[mid..mid + 16] {
        *b ^= 0x5a;
    }
    env.apply_err(&gz, None, "");
    let mut bad = vec![0x1f, 0x8b, 8, 0];
    bad.extend(crate::common::graph::random_content(4096, 3));
    env.apply_err(&bad, None, "");
    let zs = crate::common::tars::zstd(&tar);
    env.apply_err(&zs[..zs.len() - 7], None, "");
    env.apply_err(&crate::common::graph::random_content(8192, 4), None, "");
}

fn byte_and_entry_limits_are_enforced(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    let tar = Raw::new().file(b"big", &vec![1u8; 200_000]).finish();
    env.apply_err_args(&["--max-bytes", "64KiB"], &tar, None, rule::LIMIT);
    let mut r = Raw::new();
    for i in 0..6 {
        r.file(format!("f{i}").as_bytes(), b"x");
    }
    let tar = r.finish();
    env.apply_err_args(&["--max-entries", "5"], &tar, None, rule::LIMIT);
    env.apply_ok_args(&["--max-entries", "6"], &tar, |root| file(root, "f5", b"x"));
}

fn decompression_bomb_stops_at_the_byte_limit(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    let tar = Raw::new().file(b"zeros", &vec![0u8; 64 << 20]).finish();
    let gz = crate::common::tars::gzip(&tar);
    assert!(gz.len() < 1 << 20, "the bomb is small compressed");
    env.apply_err_args(&["--max-bytes", "1MiB"], &gz, None, rule::LIMIT);
}

fn oversized_pax_record_and_long_name_are_refused(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    let big = vec![b'a'; (1 << 20) + 1];
    let tar = Raw::new()
        .pax(&[("comment", &big)])
        .file(b"f", b"f")
        .finish();
    env.apply_err(&tar, None, rule::LIMIT);
    let tar = Raw::new().gnu_long(b'L', &big).file(b"f", b"f").finish();
    env.apply_err(&tar, None, rule::LIMIT);
    let tar = Raw::new().gnu_long(b'K', &big).symlink(b"l", b"x").finish();
    env.apply_err(&tar, None, rule::LIMIT);
}

fn huge_sparse_declared_size_is_refused(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    // PAX sparse 1.0: the map sits at the start of the data; 4 data bytes at the very end
    // of a file declared 2^60 bytes long.
    let real: u64 = 1 << 60;
    let map = format!("1\n{}\n4\n", real - 4);
    let mut data = map.into_bytes();
    data.resize(512, 0);
    data.extend_from_slice(b"tail");
    let mut r = Raw::new();
    r.pax(&[
        ("GNU.sparse.major", b"1"),
        ("GNU.sparse.minor", b"0"),
        ("GNU.sparse.name", b"huge"),
        ("GNU.sparse.realsize", real.to_string().as_bytes()),
    ]);
    let mut h = Hdr::new(b"GNUSparseFile.0/huge", REG);
    h.size = data.len() as u64;
    r.entry(&h, &data);
    env.apply_err(&r.finish(), Some("huge"), rule::LIMIT);
}

fn digest_mismatch_is_refused(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    let tar = Raw::new().file(b"f", b"f").finish();
    let wrong = format!("sha256:{}", "0".repeat(64));
    let err = env.apply_err_args(&["--digest", &wrong], &tar, None, "");
    crate::common::assert_mentions(&err, "digest", "digest mismatch");
}

fn missing_end_marker_is_refused(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    // Stricter than Go's archive/tar, which accepts a stream ending after an entry: a
    // stream cut at an entry boundary cannot be told from a complete one otherwise.
    let mut r = Raw::new();
    r.file(b"a", b"a").file(b"b", &[2u8; 600]);
    let err = env.apply_err(&r.0, None, rule::FORMAT);
    crate::common::assert_mentions(&err, "end-of-archive", "missing end marker");
    // One zero block then the end of the stream is accepted as the marker (as Go does).
    r.0.extend_from_slice(&[0u8; 512]);
    env.apply_ok(&r.0, |root| file(root, "b", &[2u8; 600]));
}

fn malformed_pax_records_are_refused(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    for records in [
        b"12 size=-10\n".to_vec(),   // negative size
        b"13 size=1e30\n".to_vec(),  // size not a number
        b"99 path=x\n".to_vec(),     // length beyond the record
        b"5 path=abcdef\n".to_vec(), // length too short
        b"11 pathxyz\n".to_vec(),    // no equals sign
    ] {
        let mut r = Raw::new();
        let mut h = Hdr::new(b"PaxHeader", b'x');
        h.size = records.len() as u64;
        r.entry(&h, &records);
        r.file(b"victim-of-pax", b"x");
        env.apply_err(&r.finish(), None, rule::FORMAT);
    }
}
