//! `examples/plugin.rs` as a test (no libtest harness): the host and its plugin as
//! two processes, this binary being both. It exits non-zero if anything it
//! checks is not as expected.
#[path = "../examples/plugin.rs"]
mod plugin;

fn main() {
    plugin::main()
}
