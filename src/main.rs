//! The `ustack` command: serve, connect and demo on the userspace stack. All of it lives
//! in [`cli`]; this file only hands over.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
