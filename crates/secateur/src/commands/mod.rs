//! One module per subcommand; each turns parsed arguments into calls of the library crates
//! and prints the result (a readable table, or JSON with `--json`).

pub mod convert;
pub mod inspect;
