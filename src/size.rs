//! Byte sizes on the command line: the drop-in's one size grammar (`4096`, `0x1000`, `64K`,
//! `2M`, `2G`, `1T`; powers of 1024), so `type1` options and `TYPE1_*` variables read alike.

pub use type1_preload_config::parse_size;
