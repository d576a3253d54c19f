//! Names outside the store are hostile too: a mount anywhere in strata's mount namespace
//! whose path is not UTF-8 (a container can make one: it picks its volume and directory
//! names) must not stop `create`, `get`, `put` or `ls`, which read `/proc/self/mountinfo`.
//! The mount is made in a private mount namespace (`unshare -m`), so nothing else on the
//! machine sees it, and it goes away with the namespace.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::process::Command;

use crate::common::{run_command, STRATA};
use crate::kit::Hostile;

crate::backend_tests!(a_mount_with_a_non_utf8_path_does_not_stop_the_store);

const SCRIPT: &str = r#"set -eu
mount -t tmpfs none "$BAD"
grep -q 'bad-' /proc/self/mountinfo
s() { "$STRATA" --root "$ROOT" --driver "$DRIVER" "$@"; }
s create a
s create b --parent a --rw
p=$(s get b)
echo x > "$p/f"
s put b
s ls
s changes b
"#;

fn a_mount_with_a_non_utf8_path_does_not_stop_the_store(backend: &str) {
    let Some(h) = Hostile::new(backend) else {
        return;
    };
    let bad = h
        .s()
        .scratch()
        .join(OsStr::from_bytes(b"bad-\xff\xfe-name"));
    std::fs::create_dir(&bad).unwrap();
    let mut cmd = Command::new("unshare");
    cmd.args(["-m", "--propagation", "private", "sh", "-c", SCRIPT])
        .env("BAD", &bad)
        .env("STRATA", STRATA)
        .env("ROOT", h.s().root())
        .env("DRIVER", backend);
    let out = run_command(cmd, None);
    assert!(
        out.code == Some(0),
        "a non-UTF-8 mount path broke the store: {}",
        out.describe()
    );
    assert!(
        out.stdout_str().contains("A /f"),
        "the layer's changes: {}",
        out.describe()
    );
    h.finish();
}
