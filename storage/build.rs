//! Sets `cfg(scylla_nodes)` when SCYLLA_NODES is given at build time, so the
//! tests that need a ScyllaDB/Cassandra node are reported as ignored (not as
//! passed) when there is none.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(scylla_nodes)");
    println!("cargo:rerun-if-env-changed=SCYLLA_NODES");
    if std::env::var_os("SCYLLA_NODES").is_some_and(|nodes| !nodes.is_empty()) {
        println!("cargo:rustc-cfg=scylla_nodes");
    }
}
