//! Compiled-code cache: an in-process map plus an optional on-disk cache.
//!
//! On disk, one file per (engine compatibility hash, component sha256):
//! `<compat>-<sha256>.cwasm`, written atomically (temporary file + rename)
//! through the `cap_std::fs::Dir` the caller hands over. Deserializing
//! compiled code runs it unchecked, so a file is only deserialized if it
//! carries a valid HMAC-SHA256 made with the cache's key (`cache.key`, 32
//! random bytes created 0600 in the same directory on first use) over its
//! name and contents: a planted or altered file fails the check, is ignored
//! (and replaced) and the component is compiled from source instead.
//!
//! File layout: `HPXCWASM1\n` (10 bytes) | MAC (32 bytes) | serialized code.

use std::collections::HashMap;
use std::hash::Hasher;
use std::io::{self, Read, Write};
use std::sync::{Mutex, OnceLock};

use cap_std::fs::Dir;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

const MAGIC: &[u8; 10] = b"HPXCWASM1\n";
const KEY_FILE: &str = "cache.key";
/// Components kept compiled in memory (by sha256).
const MEMORY_ENTRIES: usize = 32;

type HmacSha256 = Hmac<Sha256>;

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

    fn mac(&self, name: &str, payload: &[u8]) -> HmacSha256 {
        // A 32-byte key is always a valid HMAC key.
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        mac.update(name.as_bytes());
        mac.update(&[0]);
        mac.update(payload);
        mac
    }

    /// The code cached under `name`, if present and authentic.
    fn read(&self, name: &str) -> Option<Vec<u8>> {
        let mut f = self.dir.open(name).ok()?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf).ok()?;
        if buf.len() < MAGIC.len() + 32 || &buf[..MAGIC.len()] != MAGIC {
            return None;
        }
        let tag = buf[MAGIC.len()..MAGIC.len() + 32].to_vec();
        let payload = buf.split_off(MAGIC.len() + 32);
        self.mac(name, &payload).verify_slice(&tag).ok()?;
        Some(payload)
    }

    /// Writes `payload` under `name` atomically.
    fn write(&self, name: &str, payload: &[u8]) -> io::Result<()> {
        let tag = self.mac(name, payload).finalize().into_bytes();
        let mut nonce = [0u8; 8];
        getrandom::fill(&mut nonce).map_err(|e| io::Error::other(e.to_string()))?;
        let tmp = format!(".{name}.{}.tmp", hex::encode(nonce));
        let result = (|| {
            let mut f = self.dir.create(&tmp)?;
            f.write_all(MAGIC)?;
            f.write_all(&tag)?;
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
        && let Some(code) = disk.read(&name)
    {
        // SAFETY: the bytes carry a valid MAC under a key only this host
        // holds, so they are code this host serialized with a compatible
        // engine (the compatibility hash is part of the name).
        match unsafe { Component::deserialize(engine, &code) } {
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
}
