//! Per-instance host state: the deny-by-default WASI context, the captured
//! output pipes and the memory limiter on the instance's total.

use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, Store};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::engine;

/// Bytes of stdout (and, separately, stderr) an instance may write over its
/// life. A write past it fails in the guest (a Rust guest then traps), so a
/// chatty guest costs bounded memory.
pub const OUTPUT_CAP: usize = 64 * 1024;
/// Bytes a table element is counted as against the memory limit.
const TABLE_ELEMENT_BYTES: usize = 16;

/// Limits the sum of all memories and tables of one instance.
///
/// `StoreLimits` checks each memory on its own; a component with several
/// memories (or big tables) could exceed a per-memory limit many times over.
/// This limiter keeps a running total of what it granted.
#[derive(Debug)]
pub struct TotalLimiter {
    limit: usize,
    used: usize,
    /// Set when a grow was refused, so a resulting trap is reported as a
    /// memory error rather than a generic trap.
    pub exceeded: bool,
}

impl TotalLimiter {
    pub fn new(limit_bytes: u64) -> Self {
        TotalLimiter {
            limit: usize::try_from(limit_bytes).unwrap_or(usize::MAX),
            used: 0,
            exceeded: false,
        }
    }

    fn grow(&mut self, current: usize, desired: usize) -> wasmtime::Result<bool> {
        let extra = desired.saturating_sub(current);
        let total = self.used.saturating_add(extra);
        if total > self.limit {
            self.exceeded = true;
            return Err(wasmtime::format_err!("instance memory limit exceeded"));
        }
        self.used = total;
        Ok(true)
    }
}

impl ResourceLimiter for TotalLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.grow(current, desired)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.grow(
            current.saturating_mul(TABLE_ELEMENT_BYTES),
            desired.saturating_mul(TABLE_ELEMENT_BYTES),
        )
    }

    fn instances(&self) -> usize {
        64
    }
    fn memories(&self) -> usize {
        engine::MAX_MEMORIES_PER_COMPONENT as usize
    }
    fn tables(&self) -> usize {
        engine::MAX_TABLES_PER_COMPONENT as usize
    }
}

/// Host state of one store (= one plugin instance).
pub struct StoreState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub limiter: TotalLimiter,
    stdout: MemoryOutputPipe,
    stderr: MemoryOutputPipe,
    /// Output bytes (stdout, stderr) already accounted for in logs.
    reported: (usize, usize),
}

impl WasiView for StoreState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl StoreState {
    /// A WASI context with no preopens, environment, arguments or network,
    /// empty stdin, and stdout/stderr captured into capped memory pipes.
    pub fn new(memory_limit: u64) -> Self {
        let stdout = MemoryOutputPipe::new(OUTPUT_CAP);
        let stderr = MemoryOutputPipe::new(OUTPUT_CAP);
        let wasi = WasiCtxBuilder::new()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_ip_name_lookup(false)
            .allow_tcp(false)
            .allow_udp(false)
            .build();
        StoreState {
            wasi,
            table: ResourceTable::new(),
            limiter: TotalLimiter::new(memory_limit),
            stdout,
            stderr,
            reported: (0, 0),
        }
    }

    /// Bytes the guest wrote to stdout and stderr since the last call of
    /// this method (only counts; the bytes themselves are never logged).
    pub fn take_output_counts(&mut self) -> (usize, usize) {
        let out = self.stdout.contents().len();
        let err = self.stderr.contents().len();
        let new = (
            out.saturating_sub(self.reported.0),
            err.saturating_sub(self.reported.1),
        );
        self.reported = (out, err);
        new
    }

    /// Whether the output pipes are more than half full (the instance should
    /// be retired rather than pooled).
    pub fn output_nearly_full(&self) -> bool {
        self.stdout.contents().len() > OUTPUT_CAP / 2
            || self.stderr.contents().len() > OUTPUT_CAP / 2
    }
}

/// A fresh store for one instance.
pub fn new_store(engine: &wasmtime::Engine, memory_limit: u64) -> Store<StoreState> {
    let mut store = Store::new(engine, StoreState::new(memory_limit));
    store.limiter(|s| &mut s.limiter);
    store.epoch_deadline_trap();
    store
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A core module with three memories of 480 pages (30 MiB) each, each
    /// under a per-memory limit of 64 MiB but 90 MiB together.
    fn three_memories() -> Vec<u8> {
        let mut m = b"\0asm\x01\0\0\0".to_vec();
        let mem = [0x00, 0xe0, 0x03]; // flags 0, min 480 pages (LEB128)
        let mut body = vec![3u8];
        for _ in 0..3 {
            body.extend_from_slice(&mem);
        }
        m.push(5); // memory section
        m.push(body.len() as u8);
        m.extend_from_slice(&body);
        m
    }

    #[test]
    fn limiter_counts_all_memories_of_an_instance() {
        let engine = engine::engine().unwrap();
        let module = wasmtime::Module::new(engine, three_memories()).unwrap();

        let mut store = new_store(engine, 64 << 20);
        let err = wasmtime::Instance::new(&mut store, &module, &[]);
        assert!(
            err.is_err(),
            "90 MiB over three memories must exceed 64 MiB"
        );
        assert!(store.data().limiter.exceeded);

        let mut store = new_store(engine, 128 << 20);
        wasmtime::Instance::new(&mut store, &module, &[]).unwrap();
        assert!(!store.data().limiter.exceeded);
        assert_eq!(store.data().limiter.used, 90 << 20);
    }
}
