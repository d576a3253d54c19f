//! Devices, fifos and extended attributes (rules 7 and 8).

use std::os::unix::fs::{FileTypeExt, MetadataExt};

use super::oracle::{rule, *};
use super::raw::*;

crate::backend_tests!(
    ordinary_devices_and_fifos_are_created,
    device_numbers_beyond_the_kernel_range_are_refused,
    negative_device_numbers_are_refused,
    whiteout_device_in_a_tar_is_refused,
    user_xattrs_on_special_files_are_dropped,
    overlay_xattrs_are_refused,
    selinux_label_is_dropped_and_others_kept,
    setuid_file_keeps_mode_and_capability,
    out_of_range_owners_are_refused,
);

fn xattr_entry(r: &mut Raw, h: &Hdr, xattrs: &[(&str, &[u8])]) {
    let keys: Vec<String> = xattrs
        .iter()
        .map(|(k, _)| format!("SCHILY.xattr.{k}"))
        .collect();
    let recs: Vec<(&str, &[u8])> = keys
        .iter()
        .zip(xattrs)
        .map(|(k, (_, v))| (k.as_str(), *v))
        .collect();
    r.pax(&recs).entry(h, b"");
}

fn ordinary_devices_and_fifos_are_created(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    let tar = Raw::new()
        .device(b"dev/null", CHR, 1, 3)
        .device(b"dev/loop0", BLK, 7, 0)
        .device(b"dev/zero-block", BLK, 0, 0)
        .device(b"dev/big", CHR, 4095, (1 << 20) - 1)
        .device(b"pipe", FIFO, 0, 0)
        .finish();
    env.apply_ok(&tar, |root| {
        let md = |rel: &str| std::fs::symlink_metadata(root.join(rel)).unwrap();
        assert!(md("dev/null").file_type().is_char_device());
        assert_eq!(md("dev/null").rdev(), libc::makedev(1, 3));
        assert!(md("dev/loop0").file_type().is_block_device());
        assert_eq!(md("dev/loop0").rdev(), libc::makedev(7, 0));
        assert!(md("dev/zero-block").file_type().is_block_device());
        assert_eq!(md("dev/big").rdev(), libc::makedev(4095, (1 << 20) - 1));
        assert!(md("pipe").file_type().is_fifo());
    });
}

fn device_numbers_beyond_the_kernel_range_are_refused(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    let tar = Raw::new().device(b"bad", CHR, 4096, 0).finish();
    env.apply_err(&tar, Some("bad"), rule::DEVICE);
    let tar = Raw::new().device(b"bad", BLK, 8, 1 << 20).finish();
    env.apply_err(&tar, Some("bad"), rule::DEVICE);
}

fn negative_device_numbers_are_refused(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    // Base-256 encoding of -1 in the major field.
    let mut b = Hdr::new(b"neg", CHR).block();
    b[329..337].copy_from_slice(&[0xff; 8]);
    set_checksum(&mut b);
    let mut r = Raw::new();
    r.0.extend_from_slice(&b);
    let err = env.apply_err(&r.finish(), Some("neg"), "");
    assert!(
        err.contains(rule::DEVICE) || err.contains(rule::FORMAT),
        "a negative major must be refused as a bad device or a malformed header: {err}"
    );
}

pub(crate) fn whiteout_device_in_a_tar_is_refused(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    env.lower(Raw::new().file(b"secret", b"lower").finish());
    // A raw overlay whiteout would silently delete "secret" from the merged view.
    let tar = Raw::new().device(b"secret", CHR, 0, 0).finish();
    env.apply_err(&tar, Some("secret"), rule::DEVICE);
}

pub(crate) fn user_xattrs_on_special_files_are_dropped(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    let mut r = Raw::new();
    let x: &[(&str, &[u8])] = &[("user.tag", b"1")];
    xattr_entry(&mut r, &Hdr::new(b"fifo", FIFO), x);
    let mut c = Hdr::new(b"chr", CHR);
    c.major = 1;
    c.minor = 5;
    xattr_entry(&mut r, &c, x);
    let mut b = Hdr::new(b"blk", BLK);
    b.major = 7;
    b.minor = 1;
    xattr_entry(&mut r, &b, x);
    let mut l = Hdr::new(b"fifo-link", LNK);
    l.link = b"fifo".to_vec();
    xattr_entry(&mut r, &l, x);
    xattr_entry(
        &mut r,
        &{
            let mut f = Hdr::new(b"file", REG);
            f.size = 0;
            f
        },
        x,
    );
    env.apply_ok(&r.finish(), |root| {
        for n in ["fifo", "chr", "blk", "fifo-link"] {
            assert!(
                !crate::common::tree::xattrs(&root.join(n)).contains_key("user.tag"),
                "{n} cannot carry user xattrs"
            );
        }
        assert!(std::fs::symlink_metadata(root.join("fifo"))
            .unwrap()
            .file_type()
            .is_fifo());
        assert_eq!(
            crate::common::tree::xattrs(&root.join("file"))
                .get("user.tag")
                .map(Vec::as_slice),
            Some(&b"1"[..]),
            "a regular file keeps its user xattrs"
        );
    });
}

fn overlay_xattrs_are_refused(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    env.lower(Raw::new().file(b"d/secret", b"s").finish());
    for (name, typ, key) in [
        ("d", DIR, "trusted.overlay.opaque"),
        ("d", DIR, "trusted.overlay.redirect"),
        ("f", REG, "trusted.overlay.metacopy"),
        ("f", REG, "user.overlay.origin"),
        ("d", DIR, "user.overlay.opaque"),
    ] {
        let mut r = Raw::new();
        xattr_entry(&mut r, &Hdr::new(name.as_bytes(), typ), &[(key, b"y")]);
        let err = env.apply_err(&r.finish(), Some(name), rule::XATTR);
        crate::common::assert_mentions(&err, key, "the forbidden xattr");
    }
    let mut r = Raw::new();
    xattr_entry(&mut r, &Hdr::new(b"f", REG), &[("", b"y")]);
    env.apply_err(&r.finish(), Some("f"), rule::XATTR);
}

fn selinux_label_is_dropped_and_others_kept(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    let mut r = Raw::new();
    xattr_entry(
        &mut r,
        &Hdr::new(b"f", REG),
        &[
            ("security.selinux", b"system_u:object_r:shadow_t:s0"),
            ("user.keep", b"k"),
        ],
    );
    env.apply_ok(&r.finish(), |root| {
        let x = crate::common::tree::xattrs(&root.join("f"));
        assert!(
            !x.contains_key("security.selinux"),
            "security.selinux must be dropped: {x:?}"
        );
        assert_eq!(x.get("user.keep").map(Vec::as_slice), Some(&b"k"[..]));
    });
}

fn setuid_file_keeps_mode_and_capability(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    // VFS_CAP_REVISION_2 with the effective bit, CAP_NET_BIND_SERVICE permitted.
    let cap: &[u8] = &[1, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    let mut h = Hdr::new(b"bin/ping", REG);
    h.mode = 0o4755;
    h.uid = 0;
    h.gid = 0;
    let mut r = Raw::new();
    xattr_entry(&mut r, &h, &[("security.capability", cap)]);
    env.apply_ok(&r.finish(), |root| {
        let md = std::fs::symlink_metadata(root.join("bin/ping")).unwrap();
        assert_eq!(
            md.mode() & 0o7777,
            0o4755,
            "chown before chmod keeps setuid"
        );
        assert_eq!(
            crate::common::tree::xattrs(&root.join("bin/ping"))
                .get("security.capability")
                .map(Vec::as_slice),
            Some(cap),
            "xattrs after chown keep the capability"
        );
    });
}

fn out_of_range_owners_are_refused(backend: &str) {
    let Some(env) = Env::new(backend) else { return };
    // (uid_t)-1 would mean "leave the owner alone" to chown: the file would stay root's.
    for (key, value) in [
        ("uid", "4294967295"),
        ("gid", "4294967295"),
        ("uid", "8589934592"),
    ] {
        let tar = Raw::new()
            .pax(&[(key, value.as_bytes())])
            .file(b"owned", b"o")
            .finish();
        let err = env.apply_err(&tar, Some("owned"), rule::LIMIT);
        crate::common::assert_mentions(&err, key, "the out-of-range owner");
    }
    let tar = Raw::new()
        .pax(&[("uid", b"4294967294"), ("gid", b"70000")])
        .file(b"owned", b"o")
        .finish();
    env.apply_ok(&tar, |root| {
        let md = std::fs::symlink_metadata(root.join("owned")).unwrap();
        assert_eq!((md.uid(), md.gid()), (4294967294, 70000));
    });
}
