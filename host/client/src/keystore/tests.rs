//! Tests of the device directory: permissions, atomic state, the locked counter and pins.

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use super::*;

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn chmod(p: &Path, m: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(m)).unwrap();
}

#[test]
fn keygen_creates_private_dir_and_files_and_reopens() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("dev");
    let d = DeviceDir::keygen(&dir, 1).unwrap();
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join(DEVICE_FILE)), 0o600);
    let fp = d.fingerprint();
    let reopened = DeviceDir::open(&dir).unwrap();
    assert_eq!(reopened.fingerprint(), fp);
    assert_eq!(reopened.public_keys(), d.public_keys());
    assert_eq!(reopened.device_id(), None);
    // no temporary files left behind
    let names: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from(DEVICE_FILE)]);
}

#[test]
fn keygen_refuses_existing_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("dev");
    let first = DeviceDir::keygen(&dir, 1).unwrap();
    let err = DeviceDir::keygen(&dir, 1).unwrap_err();
    assert_eq!(err.code(), "keys_exist");
    assert!(err.to_string().contains("device.json"));
    assert_eq!(
        DeviceDir::open(&dir).unwrap().fingerprint(),
        first.fingerprint()
    );
}

#[test]
fn keygen_in_existing_private_dir_and_refuses_open_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("dev");
    fs::create_dir(&dir).unwrap();
    chmod(&dir, 0o755);
    let err = DeviceDir::keygen(&dir, 1).unwrap_err();
    assert_eq!(err.code(), "insecure_permissions");
    chmod(&dir, 0o700);
    DeviceDir::keygen(&dir, 1).unwrap();
}

#[test]
fn open_refuses_wide_permissions_naming_the_file_and_mode() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("dev");
    DeviceDir::keygen(&dir, 1).unwrap();
    let file = dir.join(DEVICE_FILE);
    chmod(&file, 0o644);
    let err = DeviceDir::open(&dir).unwrap_err();
    assert_eq!(err.code(), "insecure_permissions");
    let msg = err.to_string();
    assert!(
        msg.contains(&file.display().to_string()) && msg.contains("0644"),
        "{msg}"
    );
    chmod(&file, 0o600);
    chmod(&dir, 0o750);
    let msg = DeviceDir::open(&dir).unwrap_err().to_string();
    assert!(msg.contains("0750"), "{msg}");
    chmod(&dir, 0o700);
    DeviceDir::open(&dir).unwrap();
}

#[test]
fn open_refuses_missing_symlinked_or_corrupt_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("dev");
    fs::create_dir(&dir).unwrap();
    chmod(&dir, 0o700);
    assert_eq!(DeviceDir::open(&dir).unwrap_err().code(), "no_keys");
    let other = tmp.path().join("other.json");
    fs::write(&other, "{}").unwrap();
    chmod(&other, 0o600);
    std::os::unix::fs::symlink(&other, dir.join(DEVICE_FILE)).unwrap();
    assert_eq!(DeviceDir::open(&dir).unwrap_err().code(), "not_regular");
    fs::remove_file(dir.join(DEVICE_FILE)).unwrap();
    fs::write(
        dir.join(DEVICE_FILE),
        r#"{"keyVersion":1,"signingSeed":"secretstuff","hpkeSecret":"x"}"#,
    )
    .unwrap();
    chmod(&dir.join(DEVICE_FILE), 0o600);
    let err = DeviceDir::open(&dir).unwrap_err();
    assert_eq!(err.code(), "corrupt_state");
    assert!(!err.to_string().contains("secretstuff"));
    fs::write(dir.join(DEVICE_FILE), "not json secretstuff").unwrap();
    let err = DeviceDir::open(&dir).unwrap_err();
    assert_eq!(err.code(), "corrupt_state");
    assert!(!err.to_string().contains("secretstuff"));
}

#[test]
fn device_id_persists() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("dev");
    let mut d = DeviceDir::keygen(&dir, 1).unwrap();
    d.set_device_id("0190a1b2-dead-7eef-8a9b-0c1d2e3f4a5c")
        .unwrap();
    assert_eq!(mode(&dir.join(DEVICE_FILE)), 0o600);
    let r = DeviceDir::open(&dir).unwrap();
    assert_eq!(r.device_id(), Some("0190a1b2-dead-7eef-8a9b-0c1d2e3f4a5c"));
    assert_eq!(r.fingerprint(), d.fingerprint());
    assert_eq!(d.set_device_id("../x").unwrap_err().code(), "invalid_id");
}

#[test]
fn sequence_counter_persists_and_refuses_bad_session_ids() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("dev");
    let d = DeviceDir::keygen(&dir, 1).unwrap();
    assert_eq!(d.last_sequence("s1").unwrap(), 0);
    assert_eq!(d.next_sequence("s1").unwrap(), 1);
    assert_eq!(d.next_sequence("s1").unwrap(), 2);
    assert_eq!(d.next_sequence("s2").unwrap(), 1);
    let r = DeviceDir::open(&dir).unwrap();
    assert_eq!(r.last_sequence("s1").unwrap(), 2);
    assert_eq!(r.next_sequence("s1").unwrap(), 3);
    assert_eq!(mode(&dir.join("sessions/s1")), 0o700);
    assert_eq!(mode(&dir.join("sessions/s1/sequence.json")), 0o600);
    for bad in ["..", "a/b", "", "a.b"] {
        assert_eq!(d.next_sequence(bad).unwrap_err().code(), "invalid_id");
    }
    chmod(&dir.join("sessions/s1/sequence.json"), 0o640);
    assert_eq!(
        d.next_sequence("s1").unwrap_err().code(),
        "insecure_permissions"
    );
}

/// Many threads, each with its own open of the folder (its own lock file descriptor, as separate
/// processes would have), never get the same sequence.
#[test]
fn concurrent_counters_never_repeat() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("dev");
    DeviceDir::keygen(&dir, 1).unwrap();
    const THREADS: usize = 4;
    const EACH: usize = 60;
    let handles: Vec<_> = (0..THREADS)
        .map(|_| {
            let dir = dir.clone();
            std::thread::spawn(move || {
                let d = DeviceDir::open(&dir).unwrap();
                (0..EACH)
                    .map(|_| d.next_sequence("busy").unwrap())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut seen = HashSet::new();
    for h in handles {
        let got = h.join().unwrap();
        // each thread sees its own values strictly increasing
        assert!(got.windows(2).all(|w| w[0] < w[1]));
        for s in got {
            assert!(seen.insert(s), "sequence {s} handed out twice");
        }
    }
    assert_eq!(seen.len(), THREADS * EACH);
    assert_eq!(seen.iter().max().copied(), Some((THREADS * EACH) as u64));
    assert_eq!(
        DeviceDir::open(&dir)
            .unwrap()
            .last_sequence("busy")
            .unwrap(),
        (THREADS * EACH) as u64
    );
}

#[test]
fn pins_are_checked_and_immutable() {
    let tmp = tempfile::tempdir().unwrap();
    let d = DeviceDir::keygen(&tmp.path().join("dev"), 1).unwrap();
    let bob = happyx_envelope::DeviceKeys::generate(1).unwrap();
    let mallory = happyx_envelope::DeviceKeys::generate(1).unwrap();
    d.pin_peers("s", &[("bob".into(), bob.fingerprint())])
        .unwrap();
    d.pin_peers("s", &[("bob".into(), bob.fingerprint())])
        .unwrap();
    d.check_peer("s", "bob", &bob.public()).unwrap();
    let err = d.check_peer("s", "bob", &mallory.public()).unwrap_err();
    assert_eq!(err.code(), "fingerprint_mismatch");
    assert!(err.to_string().contains(&bob.fingerprint().to_string()));
    assert_eq!(
        d.check_peer("s", "carol", &bob.public())
            .unwrap_err()
            .code(),
        "peer_not_pinned"
    );
    assert_eq!(
        d.check_peer("t", "bob", &bob.public()).unwrap_err().code(),
        "peer_not_pinned"
    );
    let err = d
        .pin_peers("s", &[("bob".into(), mallory.fingerprint())])
        .unwrap_err();
    assert_eq!(err.code(), "pin_conflict");
    d.check_peer("s", "bob", &bob.public()).unwrap();
    assert_eq!(d.pinned_peers("s").unwrap().len(), 1);
}

#[test]
fn content_keys_are_stored_privately_per_epoch() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("dev");
    let d = DeviceDir::keygen(&dir, 1).unwrap();
    assert!(d.content_key("s", 1).unwrap().is_none());
    let k1 = ContentKey::generate().unwrap();
    let k2 = ContentKey::generate().unwrap();
    d.store_content_key("s", 1, &k1).unwrap();
    d.store_content_key("s", 2, &k2).unwrap();
    let r = DeviceDir::open(&dir).unwrap();
    assert_eq!(
        r.content_key("s", 1).unwrap().unwrap().as_bytes(),
        k1.as_bytes()
    );
    assert_eq!(
        r.content_key("s", 2).unwrap().unwrap().as_bytes(),
        k2.as_bytes()
    );
    assert!(r.content_key("s", 3).unwrap().is_none());
    assert_eq!(mode(&dir.join("sessions/s/keys.json")), 0o600);
    chmod(&dir.join("sessions/s/keys.json"), 0o604);
    assert_eq!(
        r.content_key("s", 1).unwrap_err().code(),
        "insecure_permissions"
    );
}
