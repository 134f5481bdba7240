//! `kiln-worker`: the bundled worker binary, offering the built-in model kinds.

fn main() -> anyhow::Result<()> {
    kiln_worker::cli::main(kiln_worker::model::Registry::builtin())
}
