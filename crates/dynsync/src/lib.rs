//! dynsync: connects customer data to Microsoft Dynamics 365.

/// mimalloc for every program built on dynsync (the service, its tests and benchmarks, the emulator they start):
/// reading and writing pages makes many small allocations freed together, where glibc's allocator spends a
/// third of the time.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc commits each arena it reserves whole, at once, by default on Linux, and a process then holds more
/// resident memory than it uses. Every program built on dynsync has mimalloc commit arena memory as it is used
/// instead, set before `main` so that it holds for every arena: the activation benchmark of 1,000,000 profiles
/// peaks at about 108 MB instead of 141 MB, at the same speed (BENCHMARKS.md).
#[cfg(target_os = "linux")]
mod allocator_options {
    use std::ffi::{c_int, c_long};

    unsafe extern "C" {
        /// Part of mimalloc's C API (`mimalloc.h`), linked with the allocator above.
        fn mi_option_set(option: c_int, value: c_long);
    }

    /// `mi_option_arena_eager_commit` in the `mi_option_e` of the mimalloc that `libmimalloc-sys` 0.1.49 builds.
    const ARENA_EAGER_COMMIT: c_int = 4;

    extern "C" fn commit_arenas_on_use() {
        // SAFETY: setting an option is allowed at any time, before or after mimalloc's own initialisation.
        unsafe { mi_option_set(ARENA_EAGER_COMMIT, 0) }
    }

    #[used]
    #[unsafe(link_section = ".init_array")]
    static COMMIT_ARENAS_ON_USE: extern "C" fn() = commit_arenas_on_use;

    #[cfg(test)]
    mod tests {
        use super::*;

        unsafe extern "C" {
            fn mi_option_get(option: c_int) -> c_long;
        }

        #[test]
        fn arenas_are_committed_as_they_are_used_from_the_start() {
            // SAFETY: reading an option is allowed at any time.
            assert_eq!(unsafe { mi_option_get(ARENA_EAGER_COMMIT) }, 0);
        }
    }
}

pub mod access;
pub mod activation;
pub mod alerts;
pub mod api;
pub mod checks;
pub mod config;
pub mod connection;
pub mod dataset;
pub mod declarative;
pub mod demo;
pub mod email;
pub mod engagement;
pub mod governance;
pub mod health;
pub mod hosts;
pub mod ids;
pub mod ingestion;
pub mod leads;
pub mod mailbox;
pub mod pipeline;
pub mod remote;
pub mod secrets;
pub mod service;
pub mod source;
pub mod specs;
pub mod store;
pub mod target;
pub mod text;

pub use activation::{
    ActivationFlow, AttributeMapping, AudienceMapping, EmptyValues, FlowDefinition, FlowState, StatusValues,
};
pub use connection::{Connection, ConnectionAuth, DestinationAuth, DestinationConnection};
pub use ids::{ConnectionId, FlowId, Sandbox, TargetConnectionId};
pub use service::{RunningService, Service, ServiceConfig};
pub use store::Store;
pub use target::{CustomizationPrefix, TargetConnection};
