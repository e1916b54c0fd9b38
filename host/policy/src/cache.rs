//! Compiled-code cache: an in-process map plus an optional on-disk cache.
//!
//! On disk, one file per (engine compatibility hash, component sha256):
//! `<compat>-<sha256>.cwasm`, written atomically (temporary file + rename)
//! through the `cap_std::fs::Dir` the caller hands over. Deserializing
//! compiled code runs it unchecked, so a file is only deserialized if it
//! carries a valid MAC made with the cache's key (`cache.key`, 32 random bytes
//! created 0600 in the same directory on first use) over its name and
//! contents: a planted or altered file fails the check, is ignored (and
//! replaced) and the component is compiled from source instead.
//!
//! The MAC is BLAKE3 in keyed mode, compared in constant time. A load hashes the
//! whole artefact (the sample redactor's is 2.6 MB), so the hash is on the
//! path of every cached load: BLAKE3 runs several times faster than the
//! HMAC-SHA256 of format 1 on the same bytes. The payload is verified and
//! deserialized where it was read, without a second copy.
//!
//! File layout: `HPXCWASM2\n` (10 bytes) | MAC (32 bytes) | serialized code.
//! Files of format 1 (`HPXCWASM1\n`, HMAC-SHA256) are not recognised: they are
//! compiled again once and overwritten.

use std::collections::HashMap;
use std::hash::Hasher;
use std::io::{self, Read, Write};
use std::sync::{Mutex, OnceLock};

use cap_std::fs::Dir;
use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

const MAGIC: &[u8; 10] = b"HPXCWASM2\n";
/// Bytes before the serialized code: the magic and the MAC.
const HEADER: usize = MAGIC.len() + blake3::OUT_LEN;
const KEY_FILE: &str = "cache.key";
/// Components kept compiled in memory (by sha256).
const MEMORY_ENTRIES: usize = 32;

/// Hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Feeds `Hash` output into sha256, so the engine's compatibility hash gives
/// the same file name in every process.
struct ShaHasher(Sha256);

impl Hasher for ShaHasher {
    fn finish(&self) -> u64 {
        0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

/// Hex digest identifying the engine's compiled-code format and settings.
pub fn engine_compat(engine: &Engine) -> String {
    let mut h = ShaHasher(Sha256::new());
    std::hash::Hash::hash(&engine.precompile_compatibility_hash(), &mut h);
    hex::encode(&h.0.finalize()[..12])
}

fn memory() -> &'static Mutex<HashMap<String, Component>> {
    static MEM: OnceLock<Mutex<HashMap<String, Component>>> = OnceLock::new();
    MEM.get_or_init(|| Mutex::new(HashMap::new()))
}

/// An on-disk cache directory with its MAC key.
pub struct DiskCache {
    dir: Dir,
    key: [u8; 32],
}

impl DiskCache {
    /// Opens the cache in `dir`, creating its key on first use (see
    /// [`happyx_core::keyfile`]: a damaged key file is refused, not replaced).
    pub fn open(dir: Dir) -> io::Result<DiskCache> {
        let key =
            happyx_core::keyfile::load_or_create_at(&dir, std::path::Path::new(KEY_FILE), KEY_FILE)
                .map_err(|e| io::Error::other(e.to_string()))?;
        Ok(DiskCache { dir, key: *key })
    }

    fn mac(&self, name: &str, payload: &[u8]) -> blake3::Hash {
        let mut mac = blake3::Hasher::new_keyed(&self.key);
        mac.update(name.as_bytes());
        mac.update(&[0]);
        mac.update(payload);
        mac.finalize()
    }

    /// The file cached under `name`, if present and authentic: its bytes, of which the
    /// serialized code is `[HEADER..]` (see [`Authentic::code`]).
    fn read(&self, name: &str) -> Option<Authentic> {
        let mut f = self.dir.open(name).ok()?;
        // Sized once: growing the buffer while reading would copy the artefact again.
        let len = f
            .metadata()
            .ok()
            .and_then(|m| usize::try_from(m.len()).ok());
        let mut buf = Vec::with_capacity(len.unwrap_or(0).saturating_add(1));
        f.read_to_end(&mut buf).ok()?;
        if buf.len() < HEADER || &buf[..MAGIC.len()] != MAGIC {
            return None;
        }
        let tag: [u8; blake3::OUT_LEN] = buf[MAGIC.len()..HEADER].try_into().ok()?;
        // `blake3::Hash`'s equality is constant-time.
        (self.mac(name, &buf[HEADER..]) == tag).then_some(Authentic(buf))
    }

    /// Writes `payload` under `name` atomically.
    fn write(&self, name: &str, payload: &[u8]) -> io::Result<()> {
        let tag = self.mac(name, payload);
        let mut nonce = [0u8; 8];
        getrandom::fill(&mut nonce).map_err(|e| io::Error::other(e.to_string()))?;
        let tmp = format!(".{name}.{}.tmp", hex::encode(nonce));
        let result = (|| {
            let mut f = self.dir.create(&tmp)?;
            f.write_all(MAGIC)?;
            f.write_all(tag.as_bytes())?;
            f.write_all(payload)?;
            f.sync_all()?;
            self.dir.rename(&tmp, &self.dir, name)
        })();
        if result.is_err() {
            let _ = self.dir.remove_file(&tmp);
        }
        result
    }
}

/// A cache file whose MAC checked out.
struct Authentic(Vec<u8>);

impl Authentic {
    /// The serialized code.
    fn code(&self) -> &[u8] {
        self.0.get(HEADER..).unwrap_or_default()
    }
}

/// Where a compiled component came from (for logs and benches).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Memory,
    Disk,
    Compiled,
}

/// The compiled component for `bytes` (sha256 `sha`): from memory, from an
/// authentic disk entry, or compiled now (and then stored in both).
pub fn compile(
    engine: &Engine,
    bytes: &[u8],
    sha: &str,
    disk: Option<&DiskCache>,
) -> Result<(Component, Origin), wasmtime::Error> {
    if let Some(c) = memory().lock().ok().and_then(|m| m.get(sha).cloned()) {
        return Ok((c, Origin::Memory));
    }
    let (component, origin) = compile_uncached(engine, bytes, sha, disk)?;
    if let Ok(mut m) = memory().lock() {
        if m.len() >= MEMORY_ENTRIES {
            m.clear();
        }
        m.insert(sha.to_string(), component.clone());
    }
    Ok((component, origin))
}

/// Like [`compile`] but skipping the in-memory map (disk, then compile).
pub fn compile_uncached(
    engine: &Engine,
    bytes: &[u8],
    sha: &str,
    disk: Option<&DiskCache>,
) -> Result<(Component, Origin), wasmtime::Error> {
    let name = format!("{}-{sha}.cwasm", engine_compat(engine));
    if let Some(disk) = disk
        && let Some(file) = disk.read(&name)
    {
        // SAFETY: the bytes carry a valid MAC under a key only this host
        // holds, so they are code this host serialized with a compatible
        // engine (the compatibility hash is part of the name).
        match unsafe { Component::deserialize(engine, file.code()) } {
            Ok(c) => return Ok((c, Origin::Disk)),
            Err(e) => tracing::warn!(error = %e, "discarding unusable compile cache entry"),
        }
    }
    let component = Component::new(engine, bytes)?;
    if let Some(disk) = disk {
        match component.serialize() {
            Ok(code) => {
                if let Err(e) = disk.write(&name, &code) {
                    tracing::warn!(error = %e, "could not write the plugin compile cache");
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not serialize a compiled plugin"),
        }
    }
    release_compiler_memory();
    Ok((component, Origin::Compiled))
}

/// Hands the compiler's freed scratch memory back to the OS. Cranelift allocates tens of MiB
/// while it compiles a component and frees them when done, but glibc keeps freed memory in its
/// arenas, where it would stay resident for the host's lifetime (measured: ~50 MiB after the
/// three sample plugins compile).
fn release_compiler_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks and trims glibc's own arenas; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod key_tests {
    use super::*;

    fn dir(p: &std::path::Path) -> Dir {
        Dir::open_ambient_dir(p, cap_std::ambient_authority()).expect("dir")
    }

    #[test]
    fn a_short_cache_key_is_refused_not_replaced() {
        let tmp = tempfile::tempdir().expect("tmp");
        let a = DiskCache::open(dir(tmp.path())).expect("created").key;
        assert_eq!(DiskCache::open(dir(tmp.path())).expect("loaded").key, a);
        let path = tmp.path().join(KEY_FILE);
        std::fs::write(&path, [4u8; 40]).expect("write");
        assert!(
            DiskCache::open(dir(tmp.path())).is_err(),
            "long key refused"
        );
        assert_eq!(std::fs::read(&path).expect("read"), [4u8; 40], "kept");
    }

    /// Only a file written under this key, for this name, in the current format, is
    /// handed out; every other variant is ignored (and the component compiled instead).
    #[test]
    fn only_authentic_files_of_the_current_format_are_read() {
        let tmp = tempfile::tempdir().expect("tmp");
        let cache = DiskCache::open(dir(tmp.path())).expect("cache");
        let payload: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        cache.write("a.cwasm", &payload).expect("write");
        let got = cache.read("a.cwasm").expect("authentic");
        assert_eq!(got.code(), &payload[..]);
        let file = std::fs::read(tmp.path().join("a.cwasm")).expect("file");
        assert_eq!(&file[..MAGIC.len()], MAGIC);
        assert_eq!(file.len(), HEADER + payload.len());

        let variant = |name: &str, bytes: &[u8]| {
            std::fs::write(tmp.path().join(name), bytes).expect("plant");
            cache.read(name).is_none()
        };
        // The same file under another name: the MAC covers the name.
        assert!(variant("b.cwasm", &file), "renamed file accepted");
        let mut flipped = file.clone();
        flipped[MAGIC.len()] ^= 1;
        assert!(variant("a.cwasm", &flipped), "altered MAC accepted");
        let mut flipped = file.clone();
        flipped[HEADER + 7] ^= 0x80;
        assert!(variant("a.cwasm", &flipped), "altered code accepted");
        assert!(
            variant("a.cwasm", &file[..HEADER - 1]),
            "short file accepted"
        );
        assert!(
            variant("a.cwasm", &file[..file.len() - 1]),
            "truncated file accepted"
        );
        // Format 1 (HMAC-SHA256) files are not read as format 2.
        let mut old = file.clone();
        old[..MAGIC.len()].copy_from_slice(b"HPXCWASM1\n");
        assert!(variant("a.cwasm", &old), "format 1 accepted");
        // A key of its own: another cache's file is not authentic here.
        let other = tempfile::tempdir().expect("tmp");
        let foreign = DiskCache::open(dir(other.path())).expect("cache");
        foreign.write("a.cwasm", &payload).expect("write");
        let foreign_file = std::fs::read(other.path().join("a.cwasm")).expect("file");
        assert!(
            variant("a.cwasm", &foreign_file),
            "another key's file accepted"
        );
        // And the authentic file is read again once restored.
        std::fs::write(tmp.path().join("a.cwasm"), &file).expect("restore");
        assert!(cache.read("a.cwasm").is_some());
    }
}
