//! Programming the kernel: subsystems describe the tables they want and
//! hand the scripts here; only this module spawns `nft`.

pub mod nft;
