//! `resmlp-worker`: kiln's worker with one more model kind. The agent, the collective,
//! checkpoints, resume and preemption all come from `kiln-worker`.

use kiln_example_custom_model::ResMlpKind;
use kiln_worker::model::Registry;

fn main() -> anyhow::Result<()> {
    kiln_worker::cli::main(Registry::builtin().with::<ResMlpKind>())
}
