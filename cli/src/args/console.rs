//! `meshctl console`: the web console meshd serves (`console_listen`).

use clap::Subcommand;

use super::Output;

#[derive(Debug, Subcommand)]
pub enum ConsoleCommand {
    /// Print the token a console listener on a non-loopback address asks
    /// for (open `/login?token=TOKEN` once, or send `Authorization: Bearer
    /// TOKEN`); made on first use, kept 0600 in meshd's state directory.
    Token(Output),
}
