//! The process-wide `wasmtime::Engine` and its epoch ticker.
//!
//! One engine serves every plugin, so compiled code, the instance pool and
//! the epoch counter are shared. Choices:
//!
//! * component model, Cranelift, no fuel: deadlines are epochs, which cost
//!   far less per call than fuel metering.
//! * epoch interruption with a ticker thread that increments the epoch every
//!   [`TICK`]; a call's deadline is its timeout in ticks (rounded up, +1).
//! * the pooling allocator, sized for [`MAX_INSTANCES`] live component
//!   instances (pooled warm instances of every plugin, in-flight calls and
//!   reload candidates), each with up to [`MAX_MEMORIES_PER_COMPONENT`]
//!   memories of up to `MAX_MEMORY_MIB` and [`MAX_TABLES_PER_COMPONENT`]
//!   tables. Memory slots keep wasmtime's default virtual reservation (no
//!   bounds checks in guest code); only touched pages cost real memory.

use std::sync::OnceLock;
use std::time::Duration;

use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::config::MAX_MEMORY_MIB;

/// Epoch tick.
pub const TICK: Duration = Duration::from_millis(5);
/// Live component instances the pool holds at most.
pub const MAX_INSTANCES: u32 = 192;
/// Memories per component instance (a Rust guest has one).
pub const MAX_MEMORIES_PER_COMPONENT: u32 = 4;
/// Tables per component instance.
pub const MAX_TABLES_PER_COMPONENT: u32 = 8;

static ENGINE: OnceLock<Result<Engine, String>> = OnceLock::new();

/// The shared engine (created, with its ticker thread, on first use).
pub fn engine() -> Result<&'static Engine, String> {
    ENGINE
        .get_or_init(|| {
            let engine = build().map_err(|e| format!("creating the wasm engine: {e}"))?;
            let ticker = engine.weak();
            std::thread::Builder::new()
                .name("happyx-epoch".into())
                .spawn(move || {
                    while let Some(engine) = ticker.upgrade() {
                        engine.increment_epoch();
                        drop(engine);
                        std::thread::sleep(TICK);
                    }
                })
                .map_err(|e| format!("starting the epoch ticker: {e}"))?;
            Ok(engine)
        })
        .as_ref()
        .map_err(Clone::clone)
}

fn build() -> wasmtime::Result<Engine> {
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(MAX_INSTANCES)
        .total_core_instances(MAX_INSTANCES * 4)
        .total_memories(MAX_INSTANCES * 2)
        .total_tables(MAX_INSTANCES * 4)
        .max_memories_per_component(MAX_MEMORIES_PER_COMPONENT)
        .max_tables_per_component(MAX_TABLES_PER_COMPONENT)
        .max_core_instances_per_component(16)
        .max_memories_per_module(MAX_MEMORIES_PER_COMPONENT)
        .max_tables_per_module(MAX_TABLES_PER_COMPONENT)
        .table_elements(100_000)
        .max_memory_size((MAX_MEMORY_MIB as usize) << 20)
        .max_component_instance_size(1 << 20)
        .max_core_instance_size(1 << 20);

    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .wasm_multi_memory(true)
        .epoch_interruption(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&config)
}

/// Epoch ticks for a deadline of `timeout_ms`.
pub fn ticks_for(timeout_ms: u64) -> u64 {
    let tick = TICK.as_millis().max(1) as u64;
    timeout_ms.div_ceil(tick) + 1
}
