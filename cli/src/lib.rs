//! meshctl's command line as a library, so the packaging step renders man
//! pages and shell completions from the one definition the binary parses.

pub mod args;
