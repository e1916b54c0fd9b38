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
//! The MAC is BLAKE3 in keyed mode, compared in constant time. It is kept in a
//! sidecar file, `<name>.mac` (`HPXMAC2\n` then the 32-byte MAC over a domain
//! string, the name and the artefact's bytes), so that the artefact itself is
//! exactly what wasmtime serialized and can be mapped into memory as it lies on
//! disk instead of being copied: a cached load of the sample redactor (2.6 MB of
//! compiled code) took 1.7 ms to copy and 0.2 ms to map.
//!
//! A load reads the artefact once through one open file, checks the MAC over
//! what it read, and then hands wasmtime that same open file (by its
//! `/proc/self/fd` path, so a file renamed over the name meanwhile is not the
//! one mapped). The bytes mapped are the bytes checked unless someone wrote into
//! that very file in between; the file is 0600 in the host's 0700 data dir, so
//! only the host's own user (or root) could, and that user can read the key
//! and make a valid MAC anyway. The MAC stops what it is there for: files
//! planted or altered by anyone else, copied from another host, or damaged.
//! Where `/proc` is not mounted the checked bytes are deserialized from memory.
//!
//! Files of the earlier formats (the code behind a `HPXCWASM1\n` or
//! `HPXCWASM2\n` header with the MAC inline) have no valid sidecar: they are
//! compiled again once and overwritten.

use std::collections::HashMap;
use std::hash::Hasher;
use std::io::{self, Read, Write};
use std::sync::{Mutex, OnceLock};

use cap_std::fs::Dir;
use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// First bytes of a sidecar MAC file.
const MAC_MAGIC: &[u8; 8] = b"HPXMAC2\n";
/// Length of a sidecar MAC file.
const MAC_FILE_LEN: usize = MAC_MAGIC.len() + blake3::OUT_LEN;
/// What the MAC covers before the name, so it cannot be taken for another format's.
const MAC_DOMAIN: &[u8] = b"happyx compiled component v2\0";
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
        mac.update(MAC_DOMAIN);
        mac.update(name.as_bytes());
        mac.update(&[0]);
        mac.update(payload);
        mac.finalize()
    }

    /// The artefact cached under `name`, if present and authentic.
    fn read(&self, name: &str) -> Option<Authentic> {
        let tag = self.read_tag(name)?;
        let mut f = self.dir.open(name).ok()?;
        // Sized once: growing the buffer while reading would copy the artefact again.
        let len = f
            .metadata()
            .ok()
            .and_then(|m| usize::try_from(m.len()).ok());
        let mut bytes = Vec::with_capacity(len.unwrap_or(0).saturating_add(1));
        f.read_to_end(&mut bytes).ok()?;
        // `blake3::Hash`'s equality is constant-time.
        (self.mac(name, &bytes) == tag).then(|| Authentic {
            file: f.into_std(),
            bytes,
        })
    }

    /// The MAC stored beside `name`, if its sidecar has the right form.
    fn read_tag(&self, name: &str) -> Option<[u8; blake3::OUT_LEN]> {
        let mut f = self.dir.open(mac_name(name)).ok()?;
        let mut buf = Vec::with_capacity(MAC_FILE_LEN + 1);
        // One byte more than a sidecar holds tells a longer file from a valid one.
        (&mut f)
            .take(MAC_FILE_LEN as u64 + 1)
            .read_to_end(&mut buf)
            .ok()?;
        if buf.len() != MAC_FILE_LEN || &buf[..MAC_MAGIC.len()] != MAC_MAGIC {
            return None;
        }
        buf[MAC_MAGIC.len()..].try_into().ok()
    }

    /// Writes `payload` under `name`, then its MAC beside it, each atomically. A reader
    /// between the two renames finds a MAC that does not match and compiles again.
    fn write(&self, name: &str, payload: &[u8]) -> io::Result<()> {
        let tag = self.mac(name, payload);
        self.write_atomically(name, &[payload])?;
        self.write_atomically(&mac_name(name), &[MAC_MAGIC, tag.as_bytes()])
    }

    /// Writes `parts` to a temporary file, syncs it and renames it to `name`.
    fn write_atomically(&self, name: &str, parts: &[&[u8]]) -> io::Result<()> {
        let mut nonce = [0u8; 8];
        getrandom::fill(&mut nonce).map_err(|e| io::Error::other(e.to_string()))?;
        let tmp = format!(".{name}.{}.tmp", hex::encode(nonce));
        let result = (|| {
            let mut f = self.dir.create(&tmp)?;
            for part in parts {
                f.write_all(part)?;
            }
            f.sync_all()?;
            self.dir.rename(&tmp, &self.dir, name)
        })();
        if result.is_err() {
            let _ = self.dir.remove_file(&tmp);
        }
        result
    }
}

fn mac_name(name: &str) -> String {
    format!("{name}.mac")
}

/// An artefact whose MAC checked out: the open file it was read from and what was read.
struct Authentic {
    file: std::fs::File,
    bytes: Vec<u8>,
}

impl Authentic {
    /// The component, mapped from the checked file where `/proc/self/fd` reaches it, else
    /// copied from the checked bytes.
    ///
    /// # Safety
    ///
    /// As [`Component::deserialize`]: the bytes must be code this host's engine serialized.
    unsafe fn deserialize(self, engine: &Engine) -> wasmtime::Result<Component> {
        use std::os::fd::AsRawFd;
        let by_fd = format!("/proc/self/fd/{}", self.file.as_raw_fd());
        // SAFETY: the caller vouches for the bytes; see the module docs for why the file
        // mapped holds the bytes checked.
        match unsafe { Component::deserialize_file(engine, &by_fd) } {
            Ok(c) => Ok(c),
            // SAFETY: as above; these are the very bytes the MAC covered.
            Err(_) => unsafe { Component::deserialize(engine, &self.bytes) },
        }
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
        match unsafe { file.deserialize(engine) } {
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

    /// Only an artefact written under this key, for this name, with its sidecar MAC in the
    /// current format, is handed out; every other variant is ignored (and the component
    /// compiled instead).
    #[test]
    fn only_authentic_files_of_the_current_format_are_read() {
        let tmp = tempfile::tempdir().expect("tmp");
        let at = |name: &str| tmp.path().join(name);
        let cache = DiskCache::open(dir(tmp.path())).expect("cache");
        let payload: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        cache.write("a.cwasm", &payload).expect("write");
        let got = cache.read("a.cwasm").expect("authentic");
        assert_eq!(got.bytes, payload);
        // The artefact is stored as it is, the MAC beside it.
        let file = std::fs::read(at("a.cwasm")).expect("file");
        assert_eq!(file, payload);
        let mac = std::fs::read(at("a.cwasm.mac")).expect("mac");
        assert_eq!(mac.len(), MAC_FILE_LEN);
        assert_eq!(&mac[..MAC_MAGIC.len()], MAC_MAGIC);

        let restore = || {
            std::fs::write(at("a.cwasm"), &file).expect("restore");
            std::fs::write(at("a.cwasm.mac"), &mac).expect("restore");
            assert!(cache.read("a.cwasm").is_some(), "restored pair refused");
        };
        let refused = |artefact: &[u8], sidecar: &[u8]| {
            std::fs::write(at("a.cwasm"), artefact).expect("plant");
            std::fs::write(at("a.cwasm.mac"), sidecar).expect("plant");
            let refused = cache.read("a.cwasm").is_none();
            restore();
            refused
        };
        // The same pair under another name: the MAC covers the name.
        std::fs::write(at("b.cwasm"), &file).expect("copy");
        std::fs::write(at("b.cwasm.mac"), &mac).expect("copy");
        assert!(cache.read("b.cwasm").is_none(), "renamed pair accepted");
        let mut flipped = mac.clone();
        flipped[MAC_MAGIC.len()] ^= 1;
        assert!(refused(&file, &flipped), "altered MAC accepted");
        let mut flipped = file.clone();
        flipped[7] ^= 0x80;
        assert!(refused(&flipped, &mac), "altered code accepted");
        assert!(
            refused(&file[..file.len() - 1], &mac),
            "truncated code accepted"
        );
        assert!(
            refused(&file, &mac[..MAC_FILE_LEN - 1]),
            "short MAC file accepted"
        );
        assert!(
            refused(&file, &[&mac[..], b"x"].concat()),
            "long MAC file accepted"
        );
        let mut magic = mac.clone();
        magic[..MAC_MAGIC.len()].copy_from_slice(b"HPXMAC1\n");
        assert!(refused(&file, &magic), "other MAC format accepted");
        // No sidecar at all: the earlier formats kept the MAC inside the artefact.
        std::fs::remove_file(at("a.cwasm.mac")).expect("rm");
        assert!(
            cache.read("a.cwasm").is_none(),
            "artefact without MAC accepted"
        );
        restore();
        // Another cache's key: its pair is not authentic here.
        let other = tempfile::tempdir().expect("tmp");
        let foreign = DiskCache::open(dir(other.path())).expect("cache");
        foreign.write("a.cwasm", &payload).expect("write");
        let foreign_mac = std::fs::read(other.path().join("a.cwasm.mac")).expect("mac");
        assert!(refused(&file, &foreign_mac), "another key's MAC accepted");
    }
}
