//! The CNI plugin's parsers: the network configuration on stdin and the
//! `CNI_ARGS` environment string.

/// Runs one input.
pub fn run(data: &[u8]) {
    let _ = mesh_cni::config::NetConf::parse(data);
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = mesh_cni::config::parse_cni_args(s);
        let _ = mesh_cni::config::parse_version(s);
        let _ = mesh_cni::config::Command::parse(s);
    }
}
