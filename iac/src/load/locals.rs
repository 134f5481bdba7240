//! Local values: every `locals { ... }` block's `NAME = EXPRESSION`, evaluated in
//! dependency order, with cycles reported once.

use std::collections::HashMap;

use hcl::edit::Span;
use hcl::edit::structure::{Attribute, Block, Structure};

use crate::expr::{self, Root};

use super::schema::Schema;
use super::scope::{Loader, Scope};
use super::source::SourceFile;

const LOCALS: Schema = Schema {
    ident: "locals",
    labels: &[],
    attrs: &[],
    blocks: &[],
};

/// Collects every `locals` block's values and evaluates them in dependency order; a cycle
/// is reported once, naming its members in order.
pub(super) fn locals(loader: &mut Loader<'_>, blocks: &[(&SourceFile, &Block)]) {
    struct Local<'f> {
        src: &'f SourceFile,
        attr: &'f Attribute,
        deps: Vec<usize>,
    }
    let mut order: Vec<Local<'_>> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    for &(src, block) in blocks {
        if !loader.check_labels(src, block, &LOCALS) {
            continue;
        }
        for structure in block.body.iter() {
            match structure {
                Structure::Block(nested) => loader.push(
                    src.error(
                        nested.ident.span(),
                        format!("Unexpected block `{}` in `locals`", nested.ident.as_str()),
                    )
                    .with_detail("A `locals` block holds only `NAME = EXPRESSION` lines."),
                ),
                Structure::Attribute(attr) => {
                    let name = attr.key.as_str();
                    if let Some(&first) = index.get(name) {
                        let first: &Local<'_> = &order[first];
                        loader.push(
                            src.error(attr.key.span(), format!("Duplicate local value {name:?}"))
                                .with_detail(format!(
                                    "`local.{name}` is already defined at {}.",
                                    first.src.location(first.attr.key.span())
                                ))
                                .with_hint("rename one of them; local names must be unique across the files of the directory"),
                        );
                        continue;
                    }
                    index.insert(name, order.len());
                    order.push(Local {
                        src,
                        attr,
                        deps: Vec::new(),
                    });
                    loader.declare_local(name);
                }
            }
        }
    }
    for local in &mut order {
        let mut deps: Vec<usize> = expr::walk(&local.attr.value)
            .refs
            .iter()
            .filter(|r| r.root == Root::Local)
            .filter_map(|r| index.get(r.name.as_str()).copied())
            .collect();
        deps.sort_unstable();
        deps.dedup();
        local.deps = deps;
    }

    // Depth-first, in declaration order: post-order is an evaluation order, and a back
    // edge closes a cycle.
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    let n = order.len();
    let mut marks = vec![Mark::New; n];
    let mut in_cycle = vec![false; n];
    let mut evaluation = Vec::with_capacity(n);
    for start in 0..n {
        if marks[start] != Mark::New {
            continue;
        }
        marks[start] = Mark::Active;
        let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            let Some(&dep) = order[node].deps.get(*next) else {
                marks[node] = Mark::Done;
                evaluation.push(node);
                stack.pop();
                continue;
            };
            *next += 1;
            match marks[dep] {
                Mark::New => {
                    marks[dep] = Mark::Active;
                    stack.push((dep, 0));
                }
                Mark::Active => {
                    let from = stack.iter().position(|&(n, _)| n == dep).unwrap_or(0);
                    let cycle: Vec<usize> = stack[from..].iter().map(|&(n, _)| n).collect();
                    if cycle.iter().any(|&n| in_cycle[n]) {
                        continue;
                    }
                    for &member in &cycle {
                        in_cycle[member] = true;
                    }
                    let names: Vec<String> = cycle
                        .iter()
                        .chain(std::iter::once(&dep))
                        .map(|&n| format!("local.{}", order[n].attr.key.as_str()))
                        .collect();
                    let sites: Vec<String> = cycle
                        .iter()
                        .map(|&n| {
                            format!(
                                "  local.{} at {}",
                                order[n].attr.key.as_str(),
                                order[n].src.location(order[n].attr.key.span())
                            )
                        })
                        .collect();
                    let first = &order[dep];
                    loader.push(
                        first
                            .src
                            .error(
                                first.attr.key.span(),
                                format!("Cycle in local values: {}", names.join(" → ")),
                            )
                            .with_detail(format!(
                                "Each of these refers to the next:\n{}",
                                sites.join("\n")
                            ))
                            .with_hint("a local value cannot depend on itself, directly or through other locals"),
                    );
                }
                Mark::Done => {}
            }
        }
    }
    for node in evaluation {
        let local = &order[node];
        let name = local.attr.key.as_str();
        if in_cycle[node] {
            continue;
        }
        if let Some(value) = loader.evaluate(local.src, &local.attr.value, name, Scope::Config) {
            loader.define_local(name, value);
        }
    }
}
